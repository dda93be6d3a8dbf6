"""Claude's side of an answer: the streamed request, the fold of its events, and what a failure
means for a reader.

The stream is requested as raw events (`messages.create(stream=True)`) and folded into a
`StreamState` by `fold_event`, the only function that reads Claude's event shapes. Failures are
described by `describe_failure`, which does not rely on which exception class an SDK release
picks for a given fault: where the answer was when it failed decides the form of the note, the
exception only refines the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import anthropic
import httpx2
from anthropic.types import MessageParam, RawMessageStreamEvent

from bot.config import Settings
from bot.lookups import Trail, marker
from bot.tools import tool_request
from bot.usage import Usage

Clock = Callable[[], float]


@dataclass
class StreamState:
    """What the streamer has received so far; the publisher renders from it."""

    chunks: list[str] = field(default_factory=list)
    length: int = 0
    deltas: int = 0
    events: int = 0  # any event at all: the stream has started once this is above 0
    thinking: bool = False
    usage: Usage | None = None  # every request of the answer together
    earlier_usage: Usage = field(default_factory=Usage)  # requests before the current one
    request_usage: Usage | None = None
    requests: int = 0  # requests made for this answer (more than 1 after `pause_turn`)
    trail: Trail = field(default_factory=Trail)  # what Claude's tools did (bot/lookups.py)
    model: str = ""
    stop_reason: str | None = None
    stop_details: dict[str, Any] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed_at: float | None = None  # when text arrived that has not been shown yet

    def add_text(self, text: str, now: float) -> None:
        """Per-delta work: keep it O(1); the join happens per edit, not per delta."""
        self.chunks.append(text)
        self.length += len(text)
        self.deltas += 1
        if self.changed_at is None:
            self.changed_at = now
        self.changed.set()

    def ends_in_space(self) -> bool:
        return bool(self.chunks) and self.chunks[-1][-1:].isspace()

    def text(self) -> str:
        if len(self.chunks) > 1:
            self.chunks[:] = ["".join(self.chunks)]
        return self.chunks[0] if self.chunks else ""


def fold_event(state: StreamState, event: RawMessageStreamEvent, now: float) -> None:
    """Fold one raw stream event into the state.

    Raw events rather than the SDK's `messages.stream()` helper, which rebuilds the whole message
    on every delta: nearly every event is a text delta, tested first and kept O(1). Thinking
    shows only as a flag (its text is never shown); usage comes from `message_start` and
    `message_delta` (whose counts are cumulative for the request); every other block (tool use,
    tool results, citations) goes to the `Trail`, which says what tools do and which sources the
    text cites. Fields the API may omit are read with a default, as the SDK builds events
    without validating them.
    """
    state.events += 1
    trail = state.trail
    if event.type == "content_block_delta":
        delta = event.delta
        if delta.type == "text_delta":
            if trail.activity is not None:
                trail.text_resumed()
            state.add_text(delta.text, now)
        else:
            trail.delta(event.index, delta)
    elif event.type == "content_block_start":
        block = event.content_block
        if block.type in ("thinking", "redacted_thinking") and not state.thinking:
            state.thinking = True
            state.changed.set()
        seq = trail.activity_seq
        trail.start(event.index, block, state.length)
        if trail.activity_seq != seq:
            state.changed.set()
    elif event.type == "content_block_stop":
        seq = trail.activity_seq
        cited = trail.stop(event.index, state.length)
        if cited:
            state.add_text(("" if state.ends_in_space() else " ") + marker(cited), now)
        if trail.activity_seq != seq:
            state.changed.set()
    elif event.type == "message_start":
        trail.new_request()
        state.requests += 1
        state.model = getattr(event.message, "model", None) or ""
        state.request_usage = _usage(getattr(event.message, "usage", None), Usage())
        state.usage = state.earlier_usage + state.request_usage
    elif event.type == "message_delta":
        state.stop_reason = getattr(event.delta, "stop_reason", None)
        details = getattr(event.delta, "stop_details", None)
        state.stop_details = details.model_dump() if details is not None else None
        state.request_usage = _usage(getattr(event, "usage", None), state.request_usage or Usage())
        state.usage = state.earlier_usage + state.request_usage


def _usage(counts: Any, before: Usage) -> Usage:
    """`before` updated with the counts an event carries (absent or None: unchanged)."""
    if counts is None:
        return before
    tools = getattr(counts, "server_tool_use", None)
    return Usage(
        input_tokens=getattr(counts, "input_tokens", None) or before.input_tokens,
        output_tokens=getattr(counts, "output_tokens", None) or before.output_tokens,
        cache_creation_input_tokens=getattr(counts, "cache_creation_input_tokens", None)
        or before.cache_creation_input_tokens,
        cache_read_input_tokens=getattr(counts, "cache_read_input_tokens", None)
        or before.cache_read_input_tokens,
        web_search_requests=getattr(tools, "web_search_requests", None)
        or before.web_search_requests,
        web_fetch_requests=getattr(tools, "web_fetch_requests", None) or before.web_fetch_requests,
    )


async def stream_answer(
    claude: anthropic.AsyncAnthropic,
    settings: Settings,
    messages: list[dict[str, Any]],
    state: StreamState,
    clock: Clock,
) -> None:
    """Stream Claude's answer to `messages` into `state`, as raw events (see fold_event).

    With server tools on, Claude may pause a long tool turn (`pause_turn`): the conversation
    so far, its own content included, goes back to it and the answer streams on into the same
    state, at most `claude_max_continuations` times (then the answer ends paused, with a note).
    """
    tools = tool_request(settings, settings.claude_model)
    conversation = messages
    while True:
        await _stream_request(claude, settings, conversation, tools.kwargs(), state, clock)
        if state.stop_reason != "pause_turn" or state.requests > settings.claude_max_continuations:
            return
        state.earlier_usage = state.usage or state.earlier_usage
        state.stop_reason = None  # until the continuation says how it ended
        conversation = [
            *messages,
            {"role": "assistant", "content": state.trail.content(state.text())},
        ]


async def _stream_request(
    claude: anthropic.AsyncAnthropic,
    settings: Settings,
    messages: list[dict[str, Any]],
    tools: dict[str, Any],
    state: StreamState,
    clock: Clock,
) -> None:
    """One request. The read timeout is the idle timeout: any event, a ping too, resets it.
    The SDK retries until the response starts (429, 529, 5xx, connection errors), never after.
    Errors propagate; `describe_failure` names them. MCP servers need the beta endpoint."""
    params: dict[str, Any] = {
        "model": settings.claude_model,
        "max_tokens": settings.claude_max_tokens,
        "system": [
            {
                "type": "text",
                "text": settings.system_prompt,
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": cast("list[MessageParam]", messages),
        "stream": True,
        "timeout": httpx2.Timeout(settings.stream_idle_timeout_seconds, connect=10.0),
        **tools,
    }
    if "betas" in params:
        stream: Any = await claude.beta.messages.create(**params)
    else:
        stream = await claude.messages.create(**params)
    # Closed on every way out (its end, an error, a cancel for Stop or shutdown), which
    # releases the connection: an unfinished response's connection is closed, not pooled.
    async with stream:
        async for event in stream:
            fold_event(state, event, clock())


# --------------------------------------------------------------------------------------------
# Failures


@dataclass(frozen=True)
class ClaudeFailure:
    """A failed answer, in words: `error_type` labels the metric, `reason` is for the reader.

    Before any text the reason is a whole sentence that replaces the placeholder; mid-answer
    it is the short reason shown in `[interrupted: reason]` after the partial text.
    """

    error_type: str
    reason: str


# Checked before the connection kinds: SDKs report a read timeout as a connection error too.
_TIMEOUTS: tuple[type[BaseException], ...] = (
    anthropic.APITimeoutError,
    httpx2.TimeoutException,
    aiohttp.ServerTimeoutError,
    TimeoutError,
)
_CONNECTION_FAULTS: tuple[type[BaseException], ...] = (
    anthropic.APIConnectionError,
    httpx2.TransportError,
    aiohttp.ClientError,
    OSError,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from (`raise … from`), outermost first: an SDK may wrap a
    transport error in its own class. Implicit context is not followed: it can be an earlier,
    unrelated failure (a retried attempt)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def describe_failure(
    exc: BaseException, *, started: bool, mid_answer: bool, idle_timeout: float
) -> ClaudeFailure:
    """What a failure of Claude's stream means for the reader.

    `started`: Claude had begun to answer (any stream event arrived); `mid_answer`: some of the
    answer's text had arrived, so the reader keeps it and the reason follows `[interrupted`.
    Those two facts decide the wording; the exception only says which kind of fault it was
    (an HTTP status, a silence, a broken connection), found anywhere along its cause chain.
    """
    causes = _causes(exc)
    status = next((e for e in causes if isinstance(e, anthropic.APIStatusError)), None)
    if status is not None:
        return _status_failure(status, mid_answer=mid_answer)
    if any(isinstance(e, _TIMEOUTS) for e in causes):
        if started:
            silent = f"Claude went silent for {idle_timeout:g} s"
            return ClaudeFailure(
                "idle_timeout", silent if mid_answer else f"{silent}. Please try again."
            )
        return ClaudeFailure("timeout", "Claude did not answer in time. Please try again.")
    if any(isinstance(e, _CONNECTION_FAULTS) for e in causes):
        if mid_answer:
            return ClaudeFailure("connection_lost", "the connection to Claude was lost")
        if started:
            return ClaudeFailure(
                "connection_lost", "The connection to Claude was lost. Please try again."
            )
        return ClaudeFailure("connection", "Couldn't reach Claude. Please try again.")
    name = type(exc).__name__
    if mid_answer:
        return ClaudeFailure(name, "an unexpected error occurred")
    return ClaudeFailure(name, "Something went wrong while asking Claude. Please try again.")


def _status_failure(exc: anthropic.APIStatusError, *, mid_answer: bool) -> ClaudeFailure:
    kind = str(getattr(exc, "type", None) or f"http_{exc.status_code}")
    if exc.status_code == 200:  # an `error` event inside a started stream
        if kind == "overloaded_error":
            reason = "Claude became overloaded mid-answer"
        else:
            reason = f"Claude reported an error ({kind})"
        return ClaudeFailure(kind, reason if mid_answer else f"{reason}. Please try again.")
    if isinstance(exc, anthropic.AuthenticationError):
        return ClaudeFailure(
            kind, "The bot's Anthropic API key was rejected; an admin must check ANTHROPIC_API_KEY."
        )
    if isinstance(exc, anthropic.PermissionDeniedError):
        return ClaudeFailure(kind, "The bot's Anthropic API key is not allowed to use this model.")
    if isinstance(exc, anthropic.NotFoundError):
        return ClaudeFailure(
            kind, "The configured Claude model was not found; an admin must check CLAUDE_MODEL."
        )
    if isinstance(exc, anthropic.RateLimitError):
        return ClaudeFailure(kind, "Claude's rate limit was reached. Please try again in a minute.")
    if exc.status_code == 529 or kind == "overloaded_error":
        return ClaudeFailure(
            "overloaded_error", "Claude is overloaded right now. Please try again in a minute."
        )
    if exc.status_code >= 500:
        return ClaudeFailure(kind, "Claude had an internal error. Please try again.")
    if isinstance(exc, anthropic.BadRequestError):
        return ClaudeFailure(
            kind, "Claude could not accept this conversation (it may be too long)."
        )
    return ClaudeFailure(kind, f"Claude answered with an error ({exc.status_code}).")
