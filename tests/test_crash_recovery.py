"""A replica SIGKILLed at a chosen moment of an answer, and what the other replica's janitor
makes of it: the message keeps at least every character readers saw, then `[interrupted]`;
every part of a long answer ends finished; a finished message is never written again; the
answer's usage is counted once for its asker, by whichever replica gets there first; and a
restarting replica never takes an answer its own live process holds.

The kill is timed from Slack's side: the simulated Slack runs in this process, and its change
callback SIGKILLs the replica the moment a given edit or post has been stored, so the dead
replica never hears Slack's answer."""

from __future__ import annotations

import asyncio
import json
import math
import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from bot.app import SlackStream
from bot.budgets import Calendar
from bot.lifecycle import RECOVERY_REASON, Phase
from bot.serving import start_http
from bot.sim.claude import Script
from bot.sim.claude_scripts import Lookup, Say
from bot.sim.redis import RedisServer
from bot.sim.replica import Replica
from bot.sim.slack import SimMessage, SlackSim
from bot.store import AnswerRecord, MemoryStore, RedisStore, SpendView
from bot.usage import CHARS_PER_TOKEN, Usage, estimate_cost
from tests.harness import ALICE, CHANNEL, TEAM, settings_for, simulators
from tests.test_replicas import ask, replicas
from tests.test_usage import usage

LEASE = 2.0  # the replicas' STREAM_LEASE_SECONDS (bot/sim/replica.py)
PROSE = "Plain words stream into the message one small piece at a time, and readers watch. "
SLOWISH = Script(text=PROSE * 40, chunk_chars=8, chunk_delay=0.03)
# Three messages' worth of paragraphs, streamed fast: the answer moves on twice.
LONG = Script(text=(PROSE * 6 + "\n\n") * 60, chunk_chars=60, chunk_delay=0.004)
# An edit every tenth of a second or so, the workspace's budget never in the way.
FAST_EDITS = {"edit_interval_seconds": 0.05, "workspace_edits_per_minute": 600,
              "workspace_edit_burst": 50}  # fmt: skip


def answer_messages(slack: SlackSim, asked: SimMessage) -> list[SimMessage]:
    return slack.bot_replies(CHANNEL, asked.ts)


def finished(slack: SlackSim, asked: SimMessage) -> bool:
    messages = answer_messages(slack, asked)
    return (
        bool(messages)
        and not any(m.has_button("stop_answer") for m in messages)
        and "[interrupted" in messages[-1].visible_text()
    )


def kill_when(
    slack: SlackSim, replica: Replica, happened: Callable[[str, SimMessage], bool]
) -> asyncio.Event:
    """SIGKILL `replica` from inside Slack the moment `happened(kind, message)` holds."""
    killed = asyncio.Event()

    def watch(kind: str, message: SimMessage) -> None:
        if not killed.is_set() and message.user == "UBOT" and happened(kind, message):
            replica.signal(signal.SIGKILL)
            killed.set()

    slack.on_change.append(watch)
    return killed


def noting(
    seen: list[str], happened: Callable[[str, SimMessage], bool]
) -> Callable[[str, SimMessage], bool]:
    """`happened`, appending to `seen` what the message showed readers when it holds."""

    def at(kind: str, message: SimMessage) -> bool:
        if happened(kind, message):
            seen.append(message.visible_text())
            return True
        return False

    return at


def kill_at_edit(slack: SlackSim, replica: Replica, edits: int) -> tuple[asyncio.Event, list[str]]:
    """SIGKILL `replica` once its message shows its `edits`-th edit (0: the placeholder);
    the list gets what the message showed then."""
    seen: list[str] = []

    def at_edit(kind: str, message: SimMessage) -> bool:
        return len(message.history) - 1 == edits  # version 0 is the placeholder

    return kill_when(slack, replica, noting(seen, at_edit)), seen


async def usage_by_user(redis_url: str) -> list[dict[str, Any]]:
    """`slackstream usage --by user --format json`: what an operator reads."""
    code, out, err = await usage(redis_url, "--by", "user", "--format", "json")
    assert code == 0, err
    return list(json.loads(out))


async def spend_of(redis_url: str, asked: SimMessage, user: str = ALICE) -> SpendView:
    """What the budgets read for `user` on the day `asked` was asked."""
    period = Calendar().period_at(float(asked.ts))
    store = RedisStore.from_url(redis_url)
    try:
        return await store.usage_spend(TEAM, user, day=period.day, month=period.month)
    finally:
        await store.close()


def body(text: str) -> str:
    """A finished message without its closing note and the "continued" hint."""
    lines = text.rstrip().splitlines()
    if lines and lines[-1].startswith("[interrupted"):
        lines = lines[:-1]
    return "\n".join(line for line in lines if "continued below" not in line).strip()


@pytest.mark.parametrize("edits", [0, 1, 3, 7], ids=lambda n: f"after-{n}-edits")
async def test_recovery_keeps_every_character_readers_saw(redis_url: str, edits: int) -> None:
    async with simulators(claude_default=SLOWISH) as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, _b):
            killed, seen = kill_at_edit(slack, a, edits)
            asked, _ = await ask(a, slack, "explain slowly")
            await asyncio.wait_for(killed.wait(), 15)
            await slack.wait_for(lambda: finished(slack, asked), timeout=LEASE * 5)
    [message] = answer_messages(slack, asked)
    last = message.visible_text().strip().splitlines()[-1]
    assert last == f"[interrupted: {RECOVERY_REASON}]"
    if edits:
        shown = seen[0].strip()
        assert shown and shown != "Thinking…"
        assert body(message.visible_text()).startswith(shown), (shown, message.visible_text())


# Three results of a first search, then a fourth of a second one. The answer numbers the pages in
# the order it first cites them: ¹ and ² from the first search, then ³ (the second search's page)
# and ⁴ (the first search's last) at once.
PAGES = [
    ("https://docs.example.org/rate-limits", "Rate limits | Example Docs"),
    ("https://wiki.example.net/chat-update", "chat.update | Example Wiki"),
    ("https://blog.example.com/pacing", "Pacing edits | Example Blog"),
    ("https://forum.example.io/bursts", "Bursts | Example Forum"),
]
NUMBERED = [PAGES[0], PAGES[1], PAGES[3], PAGES[2]]  # source n of the Sources list is [n - 1]
CITED = Script(
    steps=[
        Say("Let me look. "),
        Lookup("web_search", {"query": "edit rate"}, results=PAGES[:3]),
        Say("Edits are paced per message", cites=[0]),
        Say(". " + PROSE * 4),
        Say("The workspace shares one budget", cites=[1, 0]),
        Say(". " + PROSE * 6),
        Lookup("web_search", {"query": "edit bursts"}, results=PAGES[3:]),
        Say("Short bursts are allowed", cites=[3, 2]),
        Say(". " + PROSE * 40),
    ],
    chunk_chars=8,
    chunk_delay=0.03,
)
# When the replica dies: the `nth` edit whose message shows what `shows` looks for.
CITED_MOMENTS: dict[str, tuple[int, Callable[[str], bool]]] = {
    "first-citation": (1, lambda text: "¹" in text),
    "third-edit-citing-one-source": (3, lambda text: "¹" in text),
    "second-citation": (1, lambda text: "²" in text),
    "citations-after-a-second-search": (1, lambda text: "⁴" in text),
    "a-sentence-past-every-citation": (1, lambda text: "watch." in text.partition("⁴")[2]),
}


def nth_edit(nth: int, shows: Callable[[str], bool]) -> Callable[[str, SimMessage], bool]:
    """Holds at the `nth` edit after which the message shows what `shows` looks for."""
    count = 0

    def at(kind: str, message: SimMessage) -> bool:
        nonlocal count
        if kind == "updated" and shows(message.visible_text()):
            count += 1
        return count == nth

    return at


def markers(text: str) -> set[int]:
    """The source numbers of the superscripts in `text`."""
    return {"¹²³⁴".index(c) + 1 for c in text if c in "¹²³⁴"}


def source_lines(text: str) -> dict[int, str]:
    """The numbered lines of a finished message's Sources list, by number."""
    listed = text.partition("Sources")[2].splitlines()[1:]
    numbered = (line.partition(". ") for line in listed)
    return {int(n): rest for n, _, rest in numbered if n.isdigit()}


@pytest.mark.parametrize("moment", list(CITED_MOMENTS), ids=str)
async def test_recovery_keeps_the_sources_list_of_the_cited_text_readers_saw(
    redis_url: str, moment: str
) -> None:
    """Readers saw superscripts; the janitor's finished message lists every page they number."""
    async with simulators(claude_default=CITED) as (slack, claude):
        async with replicas(slack, claude, redis_url, **FAST_EDITS) as (a, _b):
            seen: list[str] = []
            killed = kill_when(slack, a, noting(seen, nth_edit(*CITED_MOMENTS[moment])))
            asked, _ = await ask(a, slack, "how often may a bot edit?")
            await asyncio.wait_for(killed.wait(), 15)
            await slack.wait_for(lambda: finished(slack, asked), timeout=LEASE * 5)
    messages = answer_messages(slack, asked)
    assert len(messages) == 1, [m.visible_text() for m in messages]
    text = messages[0].visible_text()
    assert text.rstrip().endswith(f"[interrupted: {RECOVERY_REASON}]"), text
    assert body(text).startswith(seen[0].strip()), (seen[0], text)
    shown = markers(seen[0])
    assert shown, seen[0]
    listed = source_lines(text)
    for n in shown:  # the page each superscript readers saw stands for, under its number
        url, title = NUMBERED[n - 1]
        label = " ".join(title.replace("|", " ").split())
        assert label in listed.get(n, "") and url in listed[n], (n, text)
    assert set(listed) == markers(body(text)), text  # and no number without its superscript


@pytest.mark.parametrize("moment", ["part-0-finished", "part-1-posted", "part-1-edited"], ids=str)
async def test_a_crash_while_a_long_answer_moves_on_leaves_every_part_finished(
    redis_url: str, moment: str
) -> None:
    async with simulators(claude_default=LONG) as (slack, claude):
        async with replicas(slack, claude, redis_url, **FAST_EDITS) as (a, _b):
            shown: list[str] = []

            def at_moment(kind: str, message: SimMessage) -> bool:
                parts = [m for m in slack.bot_replies(CHANNEL, message.thread_ts or "")]
                if moment == "part-0-finished":
                    hit = kind == "updated" and "continued below" in message.visible_text()
                elif moment == "part-1-posted":
                    hit = kind == "posted" and len(parts) == 2
                else:
                    hit = kind == "updated" and len(parts) == 2 and message is parts[1]
                    hit = hit and len(message.history) >= 2
                if hit:
                    shown.extend(p.visible_text() for p in parts)
                return hit

            killed = kill_when(slack, a, at_moment)
            asked, _ = await ask(a, slack, "write at length")
            await asyncio.wait_for(killed.wait(), 20)
            try:
                await slack.wait_for(lambda: finished(slack, asked), timeout=LEASE * 6)
            except TimeoutError:
                pytest.fail(
                    f"never finished; the survivor's log ends:\n{_b.logs(tail=None)[-5000:]}"
                )
    messages = answer_messages(slack, asked)
    assert not any(m.has_button("stop_answer") for m in messages)
    assert len(messages) <= 3  # no part posted twice
    assert messages[-1].visible_text().strip().endswith(f"[interrupted: {RECOVERY_REASON}]")
    recovered = "\n\n".join(body(m.visible_text()) for m in messages)
    for part in shown:  # every part as readers saw it is still there
        seen = body(part)
        if seen and seen != "…":  # a new part shows "…" until its first words
            assert seen in recovered, seen[:80]


async def test_a_finished_answer_is_never_written_again_after_its_owner_dies(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The final edit lands, then Redis stalls before the owner can record it, and the owner
    dies: the record lapses with the answer looking unfinished. The janitor that takes it
    reads the message back, finds it final, and leaves it as it is."""
    if not redis_server.managed:
        pytest.skip("needs a redis-server this test may freeze")
    script = Script(text=PROSE * 3, chunk_chars=10, chunk_delay=0.02)
    async with simulators(claude_default=script) as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, b):
            versions_at_kill: list[int] = []

            def at_final(kind: str, message: SimMessage) -> bool:
                if "Tokens:" in message.visible_text() and not message.has_button("stop_answer"):
                    redis_server.freeze()
                    versions_at_kill.append(len(message.history))
                    return True
                return False

            killed = kill_when(slack, a, at_final)
            asked, _ = await ask(a, slack, "a short one")
            await asyncio.wait_for(killed.wait(), 15)
            await asyncio.sleep(0.5)
            redis_server.thaw()
            await b.logged("already finished; recording that", timeout=LEASE * 6)
            logs = b.logs(tail=None)
    [message] = answer_messages(slack, asked)
    assert len(message.history) == versions_at_kill[0]  # not one edit after the final
    assert "Tokens:" in message.visible_text() and "[interrupted" not in message.visible_text()
    assert "recovering an orphaned answer" not in logs


# Claude bills the question (input) at once and the answer (output) as it streams; the stream
# reports output only at its end, so a janitor estimates it (`usage.cut_short`).
METERED = Script(
    text=PROSE * 40, chunk_chars=8, chunk_delay=0.03, input_tokens=1_234, output_tokens=321
)


async def test_an_answer_a_janitor_finished_is_counted_once_for_its_asker(
    redis_url: str,
) -> None:
    """The replica dies mid-answer, before its usage is counted (that happens at the end): the
    janitor counts it, from what the edits checkpointed, in the report and the budgets."""
    async with simulators(claude_default=METERED) as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, b):
            killed, seen = kill_at_edit(slack, a, 3)
            asked, _ = await ask(a, slack, "explain slowly")
            await asyncio.wait_for(killed.wait(), 15)
            await slack.wait_for(lambda: finished(slack, asked), timeout=LEASE * 5)
            await b.logged("janitor: usage counted", timeout=LEASE * 5)
            report = await usage_by_user(redis_url)
            spend = await spend_of(redis_url, asked)
    [row] = report
    assert (row["user"], row["answers"], row["input_tokens"]) == (ALICE, 1, 1_234)
    # Output: one token per 4 characters written (the stream never said); at least what
    # readers saw at the crash, at most the whole answer.
    shown = len(body(seen[0]))
    assert shown // CHARS_PER_TOKEN <= row["output_tokens"] < 321
    assert row["output_tokens"] <= math.ceil(len(METERED.text) / CHARS_PER_TOKEN)
    billed = Usage(input_tokens=1_234, output_tokens=row["output_tokens"])
    assert abs(row["cost_usd"] - (estimate_cost(billed, "claude-sonnet-5-5") or 0)) < 1e-6
    assert spend.user_day.answers == spend.workspace_month.answers == 1
    assert spend.user_day.tokens == 1_234 + row["output_tokens"]


async def test_an_answer_its_owner_counted_before_dying_is_not_counted_again(
    redis_url: str,
) -> None:
    """The owner counts the usage, then its final edit lands and it dies before recording the
    tombstone: the janitor that takes the record finds the message final and the usage
    counted, and adds nothing."""
    short = replace(METERED, text=PROSE * 3, chunk_chars=10, chunk_delay=0.02)
    async with simulators(claude_default=short) as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, b):

            def at_final(kind: str, message: SimMessage) -> bool:
                text = message.visible_text()
                return "Tokens:" in text and not message.has_button("stop_answer")

            killed = kill_when(slack, a, at_final)
            asked, _ = await ask(a, slack, "a short one")
            await asyncio.wait_for(killed.wait(), 15)
            await b.logged("janitor: usage already counted", timeout=LEASE * 5)
            report = await usage_by_user(redis_url)
            spend = await spend_of(redis_url, asked)
            logs = b.logs(tail=None)
    assert "already finished; recording that" in logs
    [row] = report
    assert (row["user"], row["answers"]) == (ALICE, 1)
    assert (row["input_tokens"], row["output_tokens"]) == (1_234, 321)  # the owner's, exact
    assert spend.user_day == spend.workspace_month
    assert (spend.user_day.answers, spend.user_day.tokens) == (1, 1_234 + 321)


async def test_start_up_recovery_never_takes_an_answer_of_this_process() -> None:
    """Start-up recovery takes back what this replica's earlier process left (same
    REPLICA_ID, another incarnation), at once; an answer this very process holds, registered
    before the sweep ran, is left alone whatever its lease."""
    store = MemoryStore()
    async with simulators() as (slack, claude):
        earlier = slack.post_user_message(CHANNEL, "<@UBOT> before the restart", user=ALICE)
        current = slack.post_user_message(CHANNEL, "<@UBOT> just now", user=ALICE)
        bot_settings = settings_for(slack, claude, stream_lease_seconds=30)

        def record(asked: SimMessage, incarnation: str) -> AnswerRecord:
            return AnswerRecord(
                answer_id=f"{TEAM}-{CHANNEL}-{asked.ts}",
                team_id=TEAM,
                channel=CHANNEL,
                thread_ts=asked.ts,
                question_ts=asked.ts,
                asker=ALICE,
                owner=bot_settings.replica_id,
                incarnation=incarnation,
                token=f"{incarnation}-lease",
                origin=f"{incarnation}-lease",
            )

        bot = SlackStream(bot_settings, store=store)
        live = record(current, bot.replier.incarnation)
        for rec in (record(earlier, "an-earlier-process"), live):
            assert (await store.register(rec, lease_seconds=30, dedupe_ttl_seconds=60)).registered
        runner, _ = await start_http(bot)
        try:
            await bot.start()
            await bot.janitor.settle()
            kept = await store.get(live.answer_id)
        finally:
            await bot.shutdown()
            await runner.cleanup()
    recovered = slack.bot_replies(CHANNEL, earlier.ts)
    assert len(recovered) == 1 and "[interrupted" in recovered[0].visible_text()
    assert slack.bot_replies(CHANNEL, current.ts) == []  # the live answer was not touched
    assert kept is not None and kept.phase is not Phase.FINISHED and kept.token == live.token
