"""Recovery of answers whose replica died before their placeholder was recorded.

An answer is registered before its placeholder is posted, and the placeholder's ts is recorded
just after. A replica that dies in between leaves a record without a message; these tests set
up exactly that state (the store record, and what Slack holds) and start a bot with the dead
replica's id, whose janitor recovers its own orphans at start-up.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from bot.lifecycle import RECOVERY_REASON, Phase
from bot.sim.slack import LOST_RESPONSE, SimMessage, SlackSim
from bot.store import AnswerRecord, MemoryStore
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


async def test_a_question_whose_placeholder_never_reached_slack_gets_the_interruption() -> None:
    store = MemoryStore()
    async with simulators() as (slack, claude):
        asked = slack.post_user_message(CHANNEL, "<@UBOT> hello?", user=ALICE)
        record = orphan(asked)
        await register(store, record)
        async with running_bot(slack, claude, store=store) as h:
            await h.bot.janitor.settle()  # the start-up sweep's recoveries
            replies = h.replies(asked)
            assert (await store.get(record.answer_id) or record).phase is Phase.FINISHED
    [reply] = replies
    assert reply.visible_text().strip().splitlines()[-1] == f"[interrupted: {RECOVERY_REASON}]"
    assert not reply.has_button("stop_answer")
    assert claude.requests == []  # the question was not answered behind anyone's back


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
