"""How an answer ends, decided purely from how its stream ended (`closing.closing`)."""

from __future__ import annotations

import httpx2

from bot.claude import StreamState
from bot.closing import FooterFacts, closing
from bot.lifecycle import Outcome, shutdown, stopped_by
from bot.usage import Usage

FACTS = FooterFacts(model="claude-sonnet-5-5", elapsed=2.0, show_cost=False)
CUT = httpx2.RemoteProtocolError("peer closed connection")


def streamed(
    text: str = "", *, stop_reason: str | None = "end_turn", events: int = 3
) -> StreamState:
    state = StreamState()
    if text:
        state.add_text(text, 0.0)
    state.events = events
    state.stop_reason = stop_reason
    state.usage = Usage(input_tokens=10, output_tokens=5)
    return state


def end(state: StreamState, **kw: object) -> tuple[Outcome, str, list[str], str | None]:
    kw.setdefault("stop", None)
    kw.setdefault("stream_error", None)
    c = closing(state, idle_timeout=60, facts=FACTS, **kw)  # type: ignore[arg-type]
    return c.outcome, c.text, c.notes, c.footer


def test_a_complete_answer_ends_with_its_footer_and_no_note() -> None:
    outcome, text, notes, footer = end(streamed("All done."))
    assert (outcome, text, notes) == (Outcome.COMPLETED, "All done.", [])
    assert footer is not None and footer.startswith("Tokens: 10 in, 5 out")


def test_a_truncated_answer_says_so() -> None:
    outcome, _, notes, _ = end(streamed("Half", stop_reason="max_tokens"))
    assert outcome is Outcome.COMPLETED and "truncated" in notes[0]


def test_a_stop_wins_over_how_the_stream_ended() -> None:
    outcome, text, notes, _ = end(streamed("Part"), stop=stopped_by("U1"), stream_error=CUT)
    assert outcome is Outcome.STOPPED and text == "Part"
    assert notes == ["[interrupted: stopped by <@U1>]"]
    assert end(streamed("Part"), stop=shutdown())[0] is Outcome.INTERRUPTED


def test_claude_failing_before_any_text_is_one_clear_line() -> None:
    outcome, text, notes, footer = end(streamed(events=0), stream_error=CUT)
    assert outcome is Outcome.FAILED and text == "" and footer is None
    assert notes == [":warning: Couldn't reach Claude. Please try again."]


def test_claude_failing_mid_answer_keeps_the_text_and_says_why() -> None:
    outcome, text, notes, _ = end(streamed("Some text"), stream_error=CUT)
    assert outcome is Outcome.INTERRUPTED and text == "Some text"
    assert notes == ["[interrupted: the connection to Claude was lost]"]


def test_a_stream_without_its_message_delta_ended_early() -> None:
    ending = closing(streamed("Text", stop_reason=None), stop=None, stream_error=None,
                     idle_timeout=60, facts=FACTS)  # fmt: skip
    assert ending.outcome is Outcome.INTERRUPTED and ending.ended_early
    assert ending.notes == ["[interrupted: Claude's answer ended early]"]
