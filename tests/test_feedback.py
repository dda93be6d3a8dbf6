"""Feedback: every finished answer carries Slack's feedback buttons below its footer, never
with the Stop button and never in what Claude reads back; a click is acknowledged at once,
recorded once per person and answer (a new mind replaces the vote), counted in metrics and in
the usage counters per channel and model."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bot.lifecycle import Phase
from bot.render import FEEDBACK_ACTION_ID, STOP_ACTION_ID
from bot.sim.claude import Script
from bot.sim.slack import SimMessage
from bot.sim.slack_views import feedback_element
from bot.store import AnswerRecord, MemoryStore
from tests.harness import ADMIN, ALICE, BOB, CHANNEL, TEAM, Harness, running_bot, simulators


def blocks_of(version: dict[str, Any]) -> list[str]:
    return [str(block.get("type")) for block in version["blocks"]]


def has_stop(version: dict[str, Any]) -> bool:
    return any(
        element.get("action_id") == STOP_ACTION_ID
        for block in version["blocks"]
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    )


async def click(h: Harness, user: str, message: SimMessage, vote: str) -> tuple[int, float]:
    """Click a feedback button; the HTTP status and how long the bot took to answer it."""
    payload = h.slack.views.click_feedback(user, message, vote)
    started = time.monotonic()
    status, _ = await h.poster.post_action(payload)
    return status, time.monotonic() - started


async def votes_settled(h: Harness) -> None:
    """Wait for the votes being recorded in the background (the click was acked already)."""
    pending = set(h.bot._ui)
    if pending:
        await asyncio.wait(pending)


async def cell(h: Harness) -> dict[str, int]:
    day = h.bot.calendar.period().day
    [only] = await h.bot.store.usage_cells(since=day, until=day)
    return dict(only.counts)


async def test_a_finished_answer_ends_with_the_feedback_buttons_never_with_stop() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="word " * 200, chunk_chars=10, chunk_delay=0.005))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("tell me")
            [final] = await h.finished(asked)
    assert blocks_of(final.history[-1]) == ["markdown", "context", "context_actions"]
    element = feedback_element(final)
    assert element is not None and element["action_id"] == FEEDBACK_ACTION_ID
    values = [json.loads(element[side]["value"]) for side in ("positive_button", "negative_button")]
    assert [v["v"] for v in values] == ["positive", "negative"]
    assert {v["a"] for v in values} == {f"T0001-C0GENERAL-{asked.ts}"}
    assert len(final.history) > 2  # it streamed through edits first
    for version in final.history:
        assert not (has_stop(version) and "context_actions" in blocks_of(version))
    assert all(has_stop(v) for v in final.history[:-1])


async def test_only_the_last_message_of_a_long_answer_has_the_buttons() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            asked = await h.mention("a long one [sim:long 30000] [sim:fast]")
            parts = await h.finished(asked, timeout=60)
    assert len(parts) >= 3
    assert [feedback_element(p) is not None for p in parts] == [False] * (len(parts) - 1) + [True]


async def test_an_answer_that_failed_before_any_text_has_no_buttons() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            asked = await h.mention("hello [sim:overloaded]")
            [reply] = await h.finished(asked, timeout=30)
    assert ":warning:" in reply.visible_text() and feedback_element(reply) is None


async def test_votes_count_once_per_person_and_a_new_mind_replaces_the_vote() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            asked = await h.mention("rate me")
            [final] = await h.finished(asked)
            statuses = [await click(h, BOB, final, "positive")]
            statuses.append(await click(h, BOB, final, "positive"))  # the same click again
            await votes_settled(h)
            once = await cell(h)
            statuses.append(await click(h, BOB, final, "negative"))  # Bob changes his mind
            statuses.append(await click(h, ADMIN, final, "positive"))
            statuses.append(await click(h, ALICE, final, "positive"))
            await votes_settled(h)
            after = await cell(h)
            metrics = h.bot.metrics.render().decode()
    assert [status for status, _ in statuses] == [200] * 5
    assert max(took for _, took in statuses) < 1.0  # acknowledged at once
    assert (once.get("feedback_positive"), once.get("feedback_negative", 0)) == (1, 0)
    assert (after["feedback_positive"], after["feedback_negative"]) == (2, 1)
    assert after["answers"] == 1
    assert 'slackstream_feedback_total{value="positive"} 3.0' in metrics
    assert 'slackstream_feedback_total{value="negative"} 1.0' in metrics


async def test_the_buttons_never_reach_claude_in_the_thread_history() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="The first answer."), Script(text="The second answer."))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("first")
            [final] = await h.finished(asked)
            assert feedback_element(final) is not None
            follow_up = await h.mention("and then?", thread_ts=asked.ts)
            await h.finished(follow_up)
    history = json.dumps(claude.requests[-1]["messages"], ensure_ascii=False)
    assert "The first answer." in history
    for leaked in ("👍", "👎", "feedback", "positive", "Tokens:"):
        assert leaked not in history


async def test_a_click_the_bot_cannot_read_is_acknowledged_and_ignored() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            asked = await h.mention("rate me")
            [final] = await h.finished(asked)
            payload = h.slack.views.click_feedback(BOB, final, "positive")
            payload["actions"][0]["value"] = '{"v": "great", "a": "x"}'
            status, _ = await h.poster.post_action(payload)
            await votes_settled(h)
            counts = await cell(h)
    assert status == 200
    assert "feedback_positive" not in counts


async def test_an_answer_a_janitor_finishes_with_its_owners_footer_gets_the_buttons() -> None:
    """The owner died during its final edit (the record holds the final text and footer): the
    janitor writes that same final message, feedback buttons included; an answer it can only
    end with [interrupted] gets none (nothing finished to rate)."""
    store = MemoryStore()
    async with simulators() as (slack, claude):
        finishing = slack.post_user_message(CHANNEL, "<@UBOT> one?", user=ALICE)
        cut = slack.post_user_message(CHANNEL, "<@UBOT> two?", user=ALICE)
        for asked, phase in ((finishing, Phase.FINISHING), (cut, Phase.STREAMING)):
            record = AnswerRecord(
                answer_id=f"{TEAM}-{CHANNEL}-{asked.ts}",
                team_id=TEAM,
                channel=CHANNEL,
                thread_ts=asked.ts,
                question_ts=asked.ts,
                asker=ALICE,
                owner="test-replica",  # the harness's id: recovered at start-up
                incarnation="an-earlier-process",
                token="its-lease",
                origin="its-lease",
                phase=phase,
                text="The whole answer.",
                footer="Tokens: 10 in, 5 out · claude-sonnet-5-5",
                model="claude-sonnet-5-5",
            )
            assert (
                await store.register(record, lease_seconds=15, dedupe_ttl_seconds=60)
            ).registered
        async with running_bot(slack, claude, store=store) as h:
            await h.bot.janitor.settle()
            [recovered] = h.replies(finishing)
            [interrupted] = h.replies(cut)
    assert "Tokens: 10 in, 5 out" in recovered.visible_text()
    element = feedback_element(recovered)
    assert element is not None
    value = json.loads(element["positive_button"]["value"])
    assert (value["a"], value["m"], value["u"]) == (
        f"{TEAM}-{CHANNEL}-{finishing.ts}",
        "claude-sonnet-5-5",
        ALICE,
    )
    assert "[interrupted" in interrupted.visible_text() and feedback_element(interrupted) is None
