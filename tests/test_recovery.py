"""Recovery of answers whose replica died before their placeholder was recorded, and the usage
a recovered answer's record carries.

An answer is registered before its placeholder is posted, and the placeholder's ts is recorded
just after. A replica that dies in between leaves a record without a message; these tests set
up exactly that state (the store record, and what Slack holds) and start a bot with the dead
replica's id, whose janitor recovers its own orphans at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from bot.budgets import Calendar, usage_entry
from bot.lifecycle import RECOVERY_REASON, Phase
from bot.sim.slack import LOST_RESPONSE, SimMessage, SlackSim
from bot.store import AnswerRecord, MemoryStore, Spend, Thresholds
from bot.usage import Usage
from tests.harness import ALICE, CHANNEL, TEAM, running_bot, simulators

REPLICA = "test-replica"  # the harness's replica id: the bot recovers this replica's orphans


def orphan(asked: SimMessage) -> AnswerRecord:
    return AnswerRecord(
        answer_id=f"{TEAM}-{CHANNEL}-{asked.ts}",
        team_id=TEAM,
        channel=CHANNEL,
        thread_ts=asked.ts,
        question_ts=asked.ts,
        message_ts="",  # the owner died before recording its placeholder
        asker=ALICE,
        owner=REPLICA,
        incarnation="an-earlier-process",
        token="its-lease",
        origin="its-lease",
    )


async def register(store: MemoryStore, record: AnswerRecord) -> None:
    registration = await store.register(record, lease_seconds=15, dedupe_ttl_seconds=60)
    assert registration.registered


async def post_placeholder(slack: SlackSim, thread_ts: str, answer_id: str) -> str:
    """What the dead replica managed to do: its placeholder, with this answer's Stop button."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    payload = render.placeholder_payload("Thinking…", answer_id=answer_id)
    posted = await client.chat_postMessage(
        channel=CHANNEL, thread_ts=thread_ts, **payload.as_kwargs()
    )
    return str(posted["ts"])


async def test_a_placeholder_that_was_never_recorded_is_found_and_finished() -> None:
    store = MemoryStore()
    async with simulators() as (slack, claude):
        asked = slack.post_user_message(CHANNEL, "<@UBOT> hello?", user=ALICE)
        record = orphan(asked)
        # Another answer's message in the same thread is left alone.
        other = await post_placeholder(slack, asked.ts, "another-answer")
        placeholder = await post_placeholder(slack, asked.ts, record.answer_id)
        await register(store, record)
        async with running_bot(slack, claude, store=store) as h:
            await h.bot.janitor.settle()  # the start-up sweep's recoveries
            replies = {r.ts: r for r in h.replies(asked)}
            assert (await store.get(record.answer_id) or record).phase is Phase.FINISHED
    finished = replies[placeholder]
    assert finished.visible_text().strip().splitlines()[-1] == f"[interrupted: {RECOVERY_REASON}]"
    assert not finished.has_button("stop_answer")
    assert replies[other].has_button("stop_answer")
    assert len(replies) == 2  # nothing posted twice


@dataclass(frozen=True)
class Recovery:
    """What a lone replica's start-up janitor made of an orphan that has no message yet."""

    reply: SimMessage  # the one message of the answer
    record: AnswerRecord | None  # the store's record afterwards
    spend: Spend  # the asker's usage today, as the budgets read it
    claude_requests: int


async def recover_at_start_up(
    orphan_of: Callable[[SimMessage], AnswerRecord], *, owner_counted: Usage | None = None
) -> Recovery:
    """Register the orphan (with `owner_counted`: and its usage, counted as its owner counts
    it, record marked) and start a bot whose janitor recovers it."""
    store = MemoryStore()
    async with simulators() as (slack, claude):
        asked = slack.post_user_message(CHANNEL, "<@UBOT> hello?", user=ALICE)
        record = orphan_of(asked)
        await register(store, record)
        period = Calendar().period_at(float(asked.ts))  # the day the janitor counts it in
        if owner_counted is not None:
            entry = usage_entry(
                owner_counted,
                model=record.model,
                team_id=TEAM,
                user=ALICE,
                channel=CHANNEL,
                period=period,
                answer_id=record.answer_id,
            )
            counted = await store.record_usage(entry, thresholds=Thresholds(), keep=period.keep())
            assert counted.counted
        async with running_bot(slack, claude, store=store) as h:
            await h.bot.janitor.settle()  # the start-up sweep's recoveries
            [reply] = h.replies(asked)
            view = await store.usage_spend(TEAM, ALICE, day=period.day, month=period.month)
            assert view.user_day == view.workspace_month
            after = await store.get(record.answer_id)
    return Recovery(reply, after, view.user_day, len(claude.requests))


async def test_a_question_whose_placeholder_never_reached_slack_gets_the_interruption() -> None:
    recovery = await recover_at_start_up(orphan)
    assert recovery.record is not None and recovery.record.phase is Phase.FINISHED
    text = recovery.reply.visible_text()
    assert text.strip().splitlines()[-1] == f"[interrupted: {RECOVERY_REASON}]"
    assert not recovery.reply.has_button("stop_answer")
    assert recovery.claude_requests == 0  # the question was not answered behind anyone's back
    assert recovery.spend == Spend()  # Claude was not asked: nothing was billed or counted


# Claude had read the question (1,000 tokens) and written 403 characters when the replica died.
STREAMED = Usage(input_tokens=1_000, output_tokens=1)
WRITTEN = "Part of an answer. " * 21 + "Cut."  # 101 tokens, at 4 characters a token


def streaming_orphan(asked: SimMessage) -> AnswerRecord:
    return replace(orphan(asked), phase=Phase.STREAMING, text=WRITTEN, usage=STREAMED)


async def test_a_lone_replica_counts_the_usage_of_an_answer_it_recovers() -> None:
    """The memory store too: the record's usage is counted for its asker, output estimated
    from the text written (the stream had not said)."""
    recovery = await recover_at_start_up(streaming_orphan)
    assert recovery.reply.visible_text().strip().endswith(f"[interrupted: {RECOVERY_REASON}]")
    assert (recovery.spend.answers, recovery.spend.tokens) == (1, 1_000 + 101)
    assert recovery.record is not None and recovery.record.usage_counted


async def test_a_recovered_answer_its_owner_counted_is_not_counted_again() -> None:
    """The owner counted the answer's usage (marking its record), then died before its
    tombstone: the janitor finishes the message and adds nothing."""
    recovery = await recover_at_start_up(
        streaming_orphan, owner_counted=Usage(input_tokens=1_000, output_tokens=250)
    )
    assert recovery.reply.visible_text().strip().endswith(f"[interrupted: {RECOVERY_REASON}]")
    assert (recovery.spend.answers, recovery.spend.tokens) == (1, 1_000 + 250)


async def test_a_rate_limited_placeholder_is_retried_not_lost() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            # Slack allows about one message a second per channel; a busy channel gets 429s.
            slack.fail_next["chat.postMessage"] = ["ratelimited", "http_500"]
            asked = await h.mention("are you there?")
            [reply] = await h.finished(asked)
    assert "Tokens:" in reply.visible_text()
    posts = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == asked.ts]
    assert [c.status for c in posts] == [429, 500, 200]
    assert posts[1].at - posts[0].at >= 1.0  # Retry-After was honoured


async def test_a_placeholder_whose_answer_was_lost_is_not_posted_twice() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            # Slack posts the placeholder, but its response never reaches the bot.
            slack.fail_next["chat.postMessage"] = [LOST_RESPONSE]
            asked = await h.mention("are you there?")
            [reply] = await h.finished(asked)
    assert "Tokens:" in reply.visible_text()
    posts = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == asked.ts]
    assert [c.status for c in posts] == [500]  # found in the thread, not posted again
