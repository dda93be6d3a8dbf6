"""The bot's Claude request on the bot's transport: raw events over the SDK's aiohttp client.

`stream_answer` and `build_claude` are exactly what an answer uses, driven against ClaudeSim
over loopback. These tests pin down how `describe_failure` names each failure on this
transport, whichever exception class the installed SDK release raises for it (they differ
between releases: a cut mid-stream is an httpx2 transport error in one, an
`APIConnectionError` in the next), and that every way out of a stream releases its connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from bot.app import build_claude
from bot.claude import ClaudeFailure, StreamState, describe_failure, stream_answer
from bot.config import Settings
from bot.sim.claude import ClaudeSim, Script
from bot.sim.redis import free_port

TEXT = "Streaming answers into Slack, one small piece at a time."
QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def sim() -> AsyncIterator[ClaudeSim]:
    async with ClaudeSim() as server:
        yield server


def settings_for(claude: ClaudeSim, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": "xoxb-sim",
        "anthropic_api_key": "sk-sim",
        "anthropic_base_url": claude.base_url,
        "redis_url": None,
        "stream_idle_timeout_seconds": 2.0,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
async def client(sim: ClaudeSim) -> AsyncIterator[anthropic.AsyncAnthropic]:
    claude = build_claude(settings_for(sim))
    yield claude
    await claude.close()


async def answer(
    claude: anthropic.AsyncAnthropic, settings: Settings, state: StreamState | None = None
) -> StreamState:
    state = state or StreamState()
    await stream_answer(claude, settings, QUESTION, state, time.monotonic)
    return state


def described(exc: BaseException, state: StreamState, idle_timeout: float = 2.0) -> ClaudeFailure:
    """How the answer that held `state` would describe `exc` to its reader."""
    return describe_failure(
        exc, started=state.events > 0, mid_answer=state.length > 0, idle_timeout=idle_timeout
    )


def test_the_bot_streams_over_the_sdks_aiohttp_transport(sim: ClaudeSim) -> None:
    claude = build_claude(settings_for(sim))
    assert isinstance(claude._client, anthropic.DefaultAioHttpClient)


async def test_raw_events_fold_into_text_usage_and_stop_reason(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(
        Script(
            text=TEXT,
            chunk_chars=7,
            input_tokens=42,
            output_tokens=17,
            cache_read_input_tokens=5,
            thinking="private",
            model="claude-sim-model",
        )
    )
    state = await answer(client, settings_for(sim))
    assert state.text() == TEXT
    assert state.deltas == len(range(0, len(TEXT), 7))  # one per text delta, nothing else
    assert state.thinking
    assert state.stop_reason == "end_turn"
    assert state.model == "claude-sim-model"
    assert state.usage is not None
    assert (state.usage.input_tokens, state.usage.output_tokens) == (42, 17)
    assert state.usage.cache_read_input_tokens == 5


async def test_an_error_event_is_a_status_error_and_never_retried(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(Script(text=TEXT, chunk_chars=5, error_event_after=2))
    state = StreamState()
    with pytest.raises(anthropic.APIStatusError) as caught:
        await answer(client, settings_for(sim), state)
    assert caught.value.status_code == 200
    assert described(caught.value, state) == ClaudeFailure(
        "overloaded_error", "Claude became overloaded mid-answer"
    )
    assert state.text() == TEXT[:10]
    assert len(sim.requests) == 1
    await sim.wait_for_open_streams(0)


async def test_a_cut_connection_is_a_transport_error_not_a_timeout(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(Script(text=TEXT, chunk_chars=5, drop_after=3))
    state = StreamState()
    with pytest.raises(Exception) as caught:
        await answer(client, settings_for(sim), state)
    assert described(caught.value, state) == ClaudeFailure(
        "connection_lost", "the connection to Claude was lost"
    )
    assert state.text() == TEXT[:15]
    assert state.stop_reason is None
    assert len(sim.requests) == 1  # a started stream is never retried


async def test_silence_past_the_idle_timeout_is_a_read_timeout(sim: ClaudeSim) -> None:
    settings = settings_for(sim, stream_idle_timeout_seconds=0.3)
    claude = build_claude(settings)
    sim.enqueue(Script(text=TEXT, chunk_chars=5, silence_after=2))
    state = StreamState()
    try:
        with pytest.raises(Exception) as caught:
            await answer(claude, settings, state)
    finally:
        await claude.close()
    assert described(caught.value, state, idle_timeout=0.3) == ClaudeFailure(
        "idle_timeout", "Claude went silent for 0.3 s"
    )
    assert state.text() == TEXT[:10]
    assert len(sim.requests) == 1
    await sim.wait_for_open_streams(0)


async def test_pings_keep_a_slow_stream_alive_past_the_idle_timeout(sim: ClaudeSim) -> None:
    """The idle timeout is a read timeout, renewed by every event: a ping counts."""
    settings = settings_for(sim, stream_idle_timeout_seconds=0.3)
    claude = build_claude(settings)
    sim.enqueue(Script(text=TEXT, chunk_chars=30, chunk_delay=0.8, ping_every=0.1))
    try:
        state = await answer(claude, settings)
    finally:
        await claude.close()
    assert state.text() == TEXT
    assert state.stop_reason == "end_turn"


async def test_a_stream_without_message_delta_ends_with_no_stop_reason(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(Script(text=TEXT, end_without_message_delta=True))
    state = await answer(client, settings_for(sim))
    assert state.text() == TEXT
    assert state.stop_reason is None  # the publisher reports "Claude's answer ended early"
    assert state.usage is not None and state.usage.input_tokens > 0


@pytest.mark.parametrize(
    ("status", "kind", "error", "attempts"),
    [
        (401, "authentication_error", anthropic.AuthenticationError, 1),
        (429, "rate_limit_error", anthropic.RateLimitError, 3),
        (529, "overloaded_error", anthropic.APIStatusError, 3),
        (500, "api_error", anthropic.InternalServerError, 3),
    ],
)
async def test_http_errors_before_the_stream_are_retried_by_the_sdk(
    sim: ClaudeSim,
    client: anthropic.AsyncAnthropic,
    status: int,
    kind: str,
    error: type[Exception],
    attempts: int,
) -> None:
    sim.enqueue(Script(http_error=(status, kind)))
    with pytest.raises(error) as caught:
        await answer(client, settings_for(sim))
    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.status_code == status
    assert len(sim.requests) == attempts
    await sim.wait_for_open_streams(0)


async def test_a_transient_overload_is_retried_and_streams(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(Script(text=TEXT, http_error=(529, "overloaded_error"), http_error_times=1))
    state = await answer(client, settings_for(sim))
    assert state.text() == TEXT
    assert len(sim.requests) == 2


async def test_claude_unreachable_is_a_connection_error_after_retries() -> None:
    async with ClaudeSim() as sim:
        settings = settings_for(sim, anthropic_base_url=f"http://127.0.0.1:{free_port()}")
    claude = build_claude(settings)
    try:
        with pytest.raises(anthropic.APIConnectionError) as caught:
            await answer(claude, settings)
    finally:
        await claude.close()
    assert described(caught.value, StreamState()) == ClaudeFailure(
        "connection", "Couldn't reach Claude. Please try again."
    )


async def test_cancelling_a_stream_closes_its_connection_and_the_client_stays_usable(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    """Stop and shutdown cancel the streamer task: the response must be closed, not left
    open in the pool (the simulator sees its client go away)."""
    sim.enqueue(Script(text=TEXT * 50, chunk_chars=5, chunk_delay=0.02), Script(text=TEXT))
    state = StreamState()
    task = asyncio.create_task(answer(client, settings_for(sim), state))
    await sim.wait_for_open_streams(1)
    while state.deltas < 3:
        await asyncio.wait_for(state.changed.wait(), 5)
        state.changed.clear()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await sim.wait_for_open_streams(0, timeout=5)
    again = await answer(client, settings_for(sim))
    assert again.text() == TEXT


async def test_closing_the_client_closes_its_aiohttp_session(sim: ClaudeSim) -> None:
    claude = build_claude(settings_for(sim))
    sim.enqueue(Script(text=TEXT))
    await answer(claude, settings_for(sim))
    transport = claude._client._transport  # the vendored AiohttpTransport
    session = transport.client  # type: ignore[attr-defined]
    assert session is not None and not session.closed

    await claude.close()

    assert claude.is_closed() and session.closed
