"""`describe_failure`: where the answer was decides the note, the exception only the reason.

SDK releases report the same fault with different classes (anthropic 2.16 let httpx2's
transport errors through mid-stream; 2.17 wraps them in `APIConnectionError` /
`APITimeoutError`). Each fault is built here in every shape a release has used, and must read
the same to a Slack user.
"""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from bot.claude import ClaudeFailure, describe_failure

REQUEST = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")


def wrapped(outer: BaseException, inner: BaseException) -> BaseException:
    """`outer` raised from `inner`, as `raise outer from inner` leaves it."""
    outer.__cause__ = inner
    return outer


def silence_shapes() -> list[BaseException]:
    read_timeout = httpx2.ReadTimeout("timed out", request=REQUEST)
    return [read_timeout, wrapped(anthropic.APITimeoutError(REQUEST), read_timeout)]


def cut_shapes() -> list[BaseException]:
    cut = httpx2.RemoteProtocolError("peer closed connection", request=REQUEST)
    return [
        cut,
        wrapped(anthropic.APIConnectionError(request=REQUEST), cut),
        wrapped(anthropic.APIConnectionError(request=REQUEST), ConnectionResetError()),
    ]


@pytest.mark.parametrize("exc", silence_shapes())
def test_silence_mid_answer_says_claude_went_silent(exc: BaseException) -> None:
    assert describe_failure(exc, started=True, mid_answer=True, idle_timeout=60) == ClaudeFailure(
        "idle_timeout", "Claude went silent for 60 s"
    )


@pytest.mark.parametrize("exc", cut_shapes())
def test_a_cut_mid_answer_says_the_connection_was_lost(exc: BaseException) -> None:
    assert describe_failure(exc, started=True, mid_answer=True, idle_timeout=60) == ClaudeFailure(
        "connection_lost", "the connection to Claude was lost"
    )


@pytest.mark.parametrize("exc", cut_shapes())
def test_a_cut_before_the_stream_says_claude_was_unreachable(exc: BaseException) -> None:
    failure = describe_failure(exc, started=False, mid_answer=False, idle_timeout=60)
    assert failure == ClaudeFailure("connection", "Couldn't reach Claude. Please try again.")


@pytest.mark.parametrize("exc", silence_shapes())
def test_silence_before_any_event_says_claude_did_not_answer(exc: BaseException) -> None:
    failure = describe_failure(exc, started=False, mid_answer=False, idle_timeout=60)
    assert failure == ClaudeFailure("timeout", "Claude did not answer in time. Please try again.")


@pytest.mark.parametrize("exc", [*silence_shapes(), *cut_shapes()])
def test_after_the_stream_started_but_before_text_the_line_stands_alone(
    exc: BaseException,
) -> None:
    """Claude was thinking when it failed: nothing of the answer exists, so the reason is a
    whole sentence (it replaces the placeholder) that still says the stream had begun."""
    failure = describe_failure(exc, started=True, mid_answer=False, idle_timeout=30)
    assert failure.reason.endswith("Please try again.")
    assert "Couldn't reach" not in failure.reason and "did not answer" not in failure.reason


def test_an_error_event_keeps_its_kind() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    exc = anthropic.APIStatusError(
        "Overloaded", response=httpx2.Response(200, request=REQUEST), body=body
    )
    mid = describe_failure(exc, started=True, mid_answer=True, idle_timeout=60)
    assert mid == ClaudeFailure("overloaded_error", "Claude became overloaded mid-answer")
    before = describe_failure(exc, started=True, mid_answer=False, idle_timeout=60)
    assert before.reason == "Claude became overloaded mid-answer. Please try again."


def test_an_unknown_exception_is_named_in_the_metric_not_shown_to_the_reader() -> None:
    failure = describe_failure(KeyError("x"), started=True, mid_answer=True, idle_timeout=60)
    assert failure == ClaudeFailure("KeyError", "an unexpected error occurred")
