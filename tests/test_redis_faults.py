"""Redis misbehaving under two real `serve` replicas: restarted empty while answers stream
(then Slack retries the events, to the same and the other replica), and frozen with SIGSTOP
(data kept) while answers end and new questions arrive. Every question must be answered exactly
once, every message finished, and no answer cut short, since no replica died."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from bot.sim.claude import Script
from bot.sim.events import mention_envelope
from bot.sim.redis import RedisServer
from bot.sim.replica import Replica
from bot.sim.rig import BOT_USER
from bot.sim.slack import SimMessage, SlackSim
from bot.store import RedisStore
from tests.harness import ALICE, BOB, CHANNEL, TEAM, running_bot, simulators
from tests.test_replicas import ask, final, replicas

STEADY = Script(text="a steady answer that takes a while. " * 40, chunk_chars=12, chunk_delay=0.05)
QUICK = Script(text="a short answer.", chunk_chars=5, chunk_delay=0.05)
# Still streaming when Redis freezes, done about two seconds into the freeze.
SPANNING = Script(text="an answer that spans the start of the stall. " * 2, chunk_chars=6,
                  chunk_delay=0.12)  # fmt: skip


def answered_once(slack: SlackSim, asked: SimMessage) -> SimMessage:
    """The one finished bot message of a question (Slack's view: deleted duplicates are gone);
    it ends with its footer, never with [interrupted]."""
    replies = slack.bot_replies(CHANNEL, asked.ts)
    assert len(replies) == 1, (asked.text, [r.visible_text()[:60] for r in replies])
    message = final(slack, asked)
    assert message is not None, (asked.text, replies[0].visible_text())
    text = message.visible_text()
    assert "Tokens:" in text and "[interrupted" not in text, text
    shown = [str(version.get("text")) for version in message.history]
    assert not any("[interrupted" in v for v in shown), shown  # never cut, even for a moment
    return message


def metric(metrics: str, name: str) -> float:
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", metrics, re.MULTILINE)
    return sum(float(v) for v in values)


def requires_managed(server: RedisServer) -> None:
    if not server.managed:
        pytest.skip("needs a redis-server this test may restart and freeze")


async def test_redis_restarted_empty_then_slack_retries_to_both_replicas(
    redis_server: RedisServer, redis_url: str
) -> None:
    requires_managed(redis_server)
    async with simulators(claude_default=STEADY) as (slack, claude):
        env: dict[str, Any] = {"max_answers_per_user": 10}
        async with replicas(slack, claude, redis_url, **env) as (a, b):
            asked: list[tuple[SimMessage, dict[str, Any], Replica]] = []
            for i, (home, user) in enumerate(((a, ALICE), (a, BOB), (b, ALICE), (b, BOB))):
                question, envelope = await ask(home, slack, f"question {i}", user=user)
                asked.append((question, envelope, home))
            await slack.wait_for(
                lambda: all("steady" in _text(slack, q) for q, _, _ in asked), timeout=10
            )
            redis_server.restart()  # every record, claim and cached thread is gone

            # Slack retries each event: at once (racing the re-registration) to the other
            # replica and to the same one, and again a little later.
            async def retry(envelope: dict[str, Any], home: Replica, i: int) -> None:
                other = b if home is a else a
                if i % 2:
                    await asyncio.sleep(1.0)  # after the owner has registered it again
                for n, replica in enumerate((other, home, other), start=1):
                    status, _ = await replica.poster.post_event(envelope, retry_num=n)
                    assert status == 200

            await asyncio.gather(*(retry(env, home, i) for i, (_, env, home) in enumerate(asked)))
            for question, _, _ in asked:
                await slack.wait_for(lambda q=question: final(slack, q) is not None, timeout=30)
            await asyncio.sleep(1.0)  # any late duplicate would show by now
            _, metrics_a = await a.get("/metrics")
            _, metrics_b = await b.get("/metrics")
            logs = a.logs(tail=None) + b.logs(tail=None)
    for question, _, _ in asked:
        answered_once(slack, question)
    reregistered = metric(metrics_a, "slackstream_records_reregistered_total") + metric(
        metrics_b, "slackstream_records_reregistered_total"
    )
    assert reregistered >= 1, logs
    assert "Traceback" not in logs


async def test_redis_frozen_ten_seconds_drops_no_question_and_cuts_no_answer(
    redis_server: RedisServer, redis_url: str
) -> None:
    requires_managed(redis_server)
    async with simulators() as (slack, claude):
        async with replicas(slack, claude, redis_url, max_answers_per_user=10) as (a, b):
            claude.enqueue(SPANNING, SPANNING)
            ending_a, _ = await ask(a, slack, "ends during the stall", user=ALICE)
            ending_b, _ = await ask(b, slack, "this one too", user=BOB)
            await slack.wait_for(
                lambda: "spans" in _text(slack, ending_a) and "spans" in _text(slack, ending_b)
            )
            redis_server.freeze()
            try:
                claude.enqueue(QUICK, QUICK)
                new_a, _ = await ask(a, slack, "asked during the stall", user=ALICE)
                new_b, _ = await ask(b, slack, "asked during the stall too", user=BOB)
                for question in (ending_a, ending_b, new_a, new_b):
                    await slack.wait_for(lambda q=question: final(slack, q) is not None, 20)
                ended_during_stall = True
                await asyncio.sleep(max(0.0, 10.0 - 4.0))  # the freeze lasts about ten seconds
            finally:
                redis_server.thaw()
            after, _ = await ask(a, slack, "asked after the stall", user=ALICE)
            await slack.wait_for(lambda: final(slack, after) is not None, timeout=15)
            await asyncio.sleep(2 * 2.0 + 1.0)  # two leases: a janitor would have struck by now
            logs = a.logs(tail=None) + b.logs(tail=None)
    assert ended_during_stall
    for question in (ending_a, ending_b, new_a, new_b, after):
        answered_once(slack, question)
    assert "duplicate event dropped" not in logs
    assert "Traceback" not in logs


async def test_only_questions_older_than_the_stores_data_are_looked_for_in_their_thread(
    redis_url: str,
) -> None:
    """A question asked before Redis's data began may have been claimed, and answered, in data
    Redis has since lost: its thread is read back first. A question asked since was claimed in
    the data Redis holds, so it costs no extra Slack call."""
    shift = [-120.0]  # the store's clock, injected: its data began two minutes ago
    store = RedisStore.from_url(redis_url, clock=lambda: time.time() + shift[0])
    await store.claim_event("event:Ev0", 60, "t0")
    shift[0] = 0.0
    async with simulators(claude_default=QUICK) as (slack, claude):
        async with running_bot(slack, claude, store=store) as h:
            new = await h.mention("asked after the data began")
            await h.finished(new)
            old = slack.store(
                SimMessage(
                    channel=CHANNEL,
                    ts=f"{time.time() - 300:.6f}",  # asked before Redis came back empty
                    user=ALICE,
                    bot_id=None,
                    text=f"<@{BOT_USER}> asked before the data began",
                )
            )
            envelope = mention_envelope(
                team_id=TEAM, channel=CHANNEL, user=ALICE, text=old.text, ts=old.ts,
                bot_user_id=BOT_USER,
            )  # fmt: skip
            assert (await h.poster.post_event(envelope))[0] == 200
            await h.finished(old)
    read_back = [
        c.params.get("ts")
        for c in slack.calls_to("conversations.replies")
        if c.params.get("include_all_metadata") in (True, "true", "1")
    ]
    assert read_back == [old.ts]
    for asked in (new, old):
        answered_once(slack, asked)


def _text(slack: SlackSim, asked: SimMessage) -> str:
    replies = slack.bot_replies(CHANNEL, asked.ts)
    return replies[0].visible_text() if replies else ""
