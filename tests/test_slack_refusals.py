"""When Slack refuses for good (the message was deleted, the channel archived, the token
revoked), the answer ends at once: Claude's stream closed, the record finished, no more of the
workspace's budget spent, one log line naming the error, and a short note in the thread where
Slack still takes one. When Slack refuses only the payload, the answer goes out as plain text,
all of it."""

from __future__ import annotations

import logging

import pytest

from bot.lifecycle import Outcome, Phase
from bot.sim.claude import Script
from bot.store import MemoryStore
from tests.harness import CHANNEL, running_bot, simulators

SLOW = Script(text="streaming along " * 300, chunk_chars=8, chunk_delay=0.02)


@pytest.mark.parametrize(
    ("error", "notice"),
    [
        ("message_not_found", True),  # someone deleted the answer's message
        ("cant_update_message", True),
        ("edit_window_closed", True),
        ("channel_not_found", False),
        ("not_in_channel", False),
        ("is_archived", False),
        ("restricted_action_read_only_channel", False),
        ("ekm_access_denied", False),
        ("invalid_auth", False),
        ("token_revoked", False),
    ],
)
async def test_a_permanent_error_mid_answer_ends_it_at_once(
    error: str, notice: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    async with simulators() as (slack, claude):
        claude.enqueue(SLOW)
        async with running_bot(slack, claude, store=store) as h:
            asked = await h.mention("go on")
            await slack.wait_for(
                lambda: bool(h.replies(asked)) and "streaming" in h.replies(asked)[0].visible_text()
            )
            answer_id = f"T0001-{CHANNEL}-{asked.ts}"
            with caplog.at_level(logging.INFO):
                slack.fail_next["chat.update"] = [error]
                refused_at = len(slack.calls)
                await claude.wait_for_open_streams(0, timeout=5)  # the stream was closed
                await slack.wait_for(lambda: not h.bot.replier.running, timeout=5)
                record = await store.get(answer_id)
            later_updates = [
                c for c in slack.calls[refused_at:] if c.method == "chat.update" and c.ok
            ]
    assert record is not None and record.phase is Phase.FINISHED
    assert record.outcome == str(Outcome.UNDELIVERABLE)
    assert later_updates == []  # nothing more spent on a message Slack refuses
    lines = [
        r for r in caplog.records if "refuses this answer's message for good" in r.getMessage()
    ]
    assert len(lines) == 1 and getattr(lines[0], "error", "") == error
    replies = h.replies(asked)
    if notice:
        assert "its message was deleted" in replies[-1].visible_text()
        assert len(replies) == 2
    else:
        assert len(replies) == 1


async def test_a_placeholder_slack_refuses_is_given_up_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, store=store) as h:
            slack.fail_next["chat.postMessage"] = ["not_in_channel"]
            with caplog.at_level(logging.INFO):
                asked = await h.mention("hello?")
                await slack.wait_for(lambda: not h.bot.replier.running and bool(slack.calls_to(
                    "chat.postMessage")), timeout=5)  # fmt: skip
                record = await store.get(f"T0001-{CHANNEL}-{asked.ts}")
    assert [c.error for c in slack.calls_to("chat.postMessage")] == ["not_in_channel"]
    assert claude.requests == []
    assert record is not None and record.outcome == str(Outcome.UNDELIVERABLE)
    assert any("could not post the placeholder" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("error", ["internal_error", "fatal_error"])
async def test_a_server_failure_on_the_placeholder_may_have_posted_it(error: str) -> None:
    """Slack's own failures may have taken effect: the bot looks before posting again."""
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            slack.fail_next["chat.postMessage"] = [error]
            asked = await h.mention("are you there?")
            [reply] = await h.finished(asked)
    assert "Tokens:" in reply.visible_text()
    assert slack.calls_to("conversations.replies")  # it looked before posting again


async def test_a_refused_payload_is_sent_as_plain_text_and_nothing_is_cut() -> None:
    """A Slack that refuses rich payloads over 2,000 characters: the answer (9,000 characters,
    more than one plain message holds) still arrives whole, as plain text."""
    words = [f"word{i:04d}" for i in range(1000)]
    text = " ".join(words)
    async with simulators(markdown_limit=2000) as (slack, claude):
        claude.enqueue(Script(text=text, chunk_chars=400, chunk_delay=0.01))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("a long one")
            await slack.wait_for(
                lambda: any("Tokens:" in r.visible_text() for r in h.replies(asked)), timeout=20
            )
            replies = h.replies(asked)
    shown = " ".join(r.text for r in replies)
    missing = [w for w in words if w not in shown]
    assert missing == []
    assert not any(r.has_button("stop_answer") for r in replies)
    assert all(len(r.text) <= 4000 for r in replies)
