"""How an answer ends, decided from how its stream ended: the outcome, and the final message's
text, notes and footer. Pure: the answer logs and counts what it decides, then writes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot import render
from bot.claude import ClaudeFailure, StreamState, describe_failure
from bot.lifecycle import Outcome, StopRequest
from bot.usage import estimate_cost

ENDED_EARLY = "Claude's answer ended early"


@dataclass(frozen=True)
class Closing:
    outcome: Outcome
    text: str
    notes: list[str] = field(default_factory=list)
    footer: str | None = None
    failure: ClaudeFailure | None = None  # what Claude's stream failed with, if it did
    ended_early: bool = False  # the stream ended without its message_delta


@dataclass(frozen=True)
class FooterFacts:
    """What the footer shows besides the usage (the model, when the answer began, the cost)."""

    model: str
    elapsed: float
    show_cost: bool
    dropped_turns: int = 0


def closing(
    state: StreamState,
    *,
    stop: StopRequest | None,
    stream_error: BaseException | None,
    idle_timeout: float,
    facts: FooterFacts,
) -> Closing:
    """The final message of an answer. A stop wins over how the stream ended; Claude failing
    before any text is one clear line (`FAILED`); failing mid-answer, or a stream without its
    `message_delta`, keeps the text and ends with `[interrupted: reason]`."""
    text = state.text()
    failure: ClaudeFailure | None = None
    interrupted: str | None = None
    if stop is not None:
        interrupted = stop.reason
    elif stream_error is not None:
        failure = describe_failure(
            stream_error,
            started=state.events > 0,
            mid_answer=state.length > 0,
            idle_timeout=idle_timeout,
        )
        if not text:
            return Closing(Outcome.FAILED, "", [f":warning: {failure.reason}"], failure=failure)
        interrupted = failure.reason
    elif state.stop_reason is None:
        interrupted = ENDED_EARLY
    notes: list[str] = []
    sources = render.sources_note(state.trail.sources.listed())
    if sources:  # right after the text it numbers
        notes.append(sources)
    note = render.stop_reason_note(state.stop_reason, state.stop_details)
    if interrupted is None and note:
        notes.append(note)
    if interrupted is not None:
        notes.append(render.interrupted_note(interrupted))
    if interrupted is None:
        outcome = Outcome.COMPLETED
    elif stop is not None:
        outcome = stop.outcome
    else:
        outcome = Outcome.INTERRUPTED
    return Closing(
        outcome,
        text,
        notes,
        footer=footer(state, facts),
        failure=failure,
        ended_early=interrupted == ENDED_EARLY and stop is None and failure is None,
    )


def footer(state: StreamState, facts: FooterFacts) -> str | None:
    if state.usage is None:
        return None
    model = state.model or facts.model
    cost = estimate_cost(state.usage, model) if facts.show_cost else None
    usage, trail = state.usage, state.trail
    return render.format_footer(
        usage,
        elapsed=facts.elapsed,
        model=model,
        cost_usd=cost,
        dropped_turns=facts.dropped_turns,
        # As billed; what the stream showed when the usage leaves them out.
        searches=usage.web_search_requests or trail.searches,
        pages_read=usage.web_fetch_requests or trail.fetches,
    )
