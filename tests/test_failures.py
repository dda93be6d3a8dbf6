"""Whatever goes wrong with Claude, the Slack message is finished, readably, without a traceback."""

from __future__ import annotations

import pytest

from bot.sim.claude import Script
from tests.harness import running_bot, simulators

PARTIAL = "The first part of the answer arrives fine. " * 3


def _assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Error(" not in text and "httpx" not in text


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (Script(text=PARTIAL + "never shown", chunk_chars=20, error_event_after=3), "overloaded"),
        (Script(text=PARTIAL + "never shown", chunk_chars=20, drop_after=3), "connection"),
        (Script(text=PARTIAL + "never shown", chunk_chars=20, silence_after=3), "silent for"),
        (Script(text=PARTIAL, chunk_chars=20, end_without_message_delta=True), "ended early"),
    ],
    ids=["error-event", "dropped-connection", "idle-timeout", "no-message-delta"],
)
async def test_mid_stream_failure_keeps_partial_answer_and_says_interrupted(
    script: Script, reason: str
) -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(script)
        async with running_bot(slack, claude, stream_idle_timeout_seconds=0.5) as h:
            asked = await h.mention("tell me something")
            [reply] = await h.finished(asked)
    text = reply.visible_text()
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("[interrupted"), text  # the note is the last line
    assert reason in lines[-1]
    assert "The first part of the answer arrives fine." in text
    assert "never shown" not in text
    assert not reply.has_button("stop_answer")
    _assert_no_traceback(text)


async def test_idle_timeout_is_inactivity_not_total_time() -> None:
    """A slow answer that keeps sending events finishes though it outlasts the timeout."""
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="slow but steady " * 10, chunk_chars=8, chunk_delay=0.05))
        async with running_bot(slack, claude, stream_idle_timeout_seconds=0.4) as h:
            asked = await h.mention("take your time")
            [reply] = await h.finished(asked)
    assert "[interrupted" not in reply.visible_text()
    assert "Tokens:" in reply.visible_text()


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (401, "authentication_error", "API key was rejected"),
        (429, "rate_limit_error", "rate limit"),
        (529, "overloaded_error", "overloaded"),
        (500, "api_error", "internal error"),
    ],
)
async def test_api_error_before_any_text_replaces_placeholder_with_one_clear_line(
    status: int, kind: str, expected: str
) -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(http_error=(status, kind)))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("hello?")
            [reply] = await h.finished(asked)
    text = reply.visible_text()
    assert expected in text
    assert len(text.strip().splitlines()) == 1
    assert "Thinking…" not in text
    assert not reply.has_button("stop_answer")
    _assert_no_traceback(text)
    retried = status in (429, 529, 500)
    assert len(claude.requests) == (3 if retried else 1)  # the SDK's own retries, then give up


async def test_transient_overload_is_retried_by_the_sdk_and_answered() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(
                text="Worked the second time.",
                http_error=(529, "overloaded_error"),
                http_error_times=1,
            )
        )
        async with running_bot(slack, claude) as h:
            asked = await h.mention("hello?")
            [reply] = await h.finished(asked)
    assert "Worked the second time." in reply.visible_text()
    assert "Tokens:" in reply.visible_text()


async def test_final_edit_survives_slack_rate_limit() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="An answer that must not be lost."))
        async with running_bot(slack, claude) as h:
            slack.fail_next["chat.update"] = ["ratelimited", "http_500"]
            asked = await h.mention("hello?")
            [reply] = await h.finished(asked, timeout=20)
    assert "An answer that must not be lost." in reply.visible_text()
    assert "Tokens:" in reply.visible_text()
    assert "[interrupted" not in reply.visible_text()  # a 500's error page is no bug
    errors = [c.error for c in slack.calls_to("chat.update") if not c.ok]
    assert "ratelimited" in errors


async def test_unreadable_thread_still_answers_the_question() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="Answer without context."))
        async with running_bot(slack, claude) as h:
            slack.fail_next["conversations.replies"] = ["missing_scope"]
            asked = await h.mention("what now?")
            [reply] = await h.finished(asked)
    assert "Answer without context." in reply.visible_text()
    assert "what now?" in str(claude.requests[0]["messages"][-1])


async def test_thinking_shows_an_indicator_not_the_thinking_text() -> None:
    secret_thoughts = "I should consider the private reasoning here"
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="The answer.", thinking=secret_thoughts, thinking_delay=0.3))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("think first")
            [reply] = await h.finished(asked)
    shown = [str(v) for v in reply.history]
    assert not any(secret_thoughts in s for s in shown)
    # The placeholder already says "Thinking…": no edit is spent on saying it again.
    assert all("hinking" in str(v.get("text")) for v in reply.history[:-1])
    assert len(reply.history) == 2
    assert [status for *_, status in slack.statuses] == ["is thinking…", ""]
    assert "The answer." in reply.visible_text()


async def test_thinking_replaces_a_custom_placeholder_with_an_indicator() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="The answer.", thinking="hmm", thinking_delay=0.3))
        async with running_bot(slack, claude, placeholder_text="On it…") as h:
            asked = await h.mention("think first")
            [reply] = await h.finished(asked)
    texts = [str(v.get("text")) for v in reply.history]
    assert texts[0] == "On it…"
    assert any("Thinking…" in t for t in texts[1:-1])
    assert "hmm" not in str(reply.history)
    assert "The answer." in reply.visible_text()
