"""The simulated Claude, driven by the real Anthropic SDK: what the bot will see from it."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from bot.claude import describe_failure
from bot.sim.claude import ClaudeSim, Script, default_script
from tests.shared_files import ANTHROPIC_FIXTURES, missing, recorded_streams

MODEL = "claude-sonnet-5-5"
TEXT = "Streaming answers into Slack, one small piece at a time."


FIXTURES = ANTHROPIC_FIXTURES
FIXTURE_FILES = recorded_streams()

# Fixtures that SDK 2.14 itself cannot stream (the sim replays them faithfully):
# - six recordings omit `usage` from `message_start`; the SDK's accumulator then fails on
#   `None.output_tokens` when `message_delta` arrives (upstream fixed this after 2.14);
# - one recording streams tool JSON that does not parse (`"unit": celsius}`).
FIXTURES_RAISING: dict[str, type[Exception]] = {
    "beta_usage_omitted_input_tokens_response.txt": AttributeError,
    "beta_usage_omitted_with_optional_fields_response.txt": AttributeError,
    "missing_usage_response.txt": AttributeError,
    "missing_usage_rich_delta_response.txt": AttributeError,
    "usage_omitted_response.txt": AttributeError,
    "usage_omitted_with_optional_fields_response.txt": AttributeError,
    "tool_use_invalid_json_response.txt": ValueError,
}


@pytest.fixture
async def sim() -> AsyncIterator[ClaudeSim]:
    async with ClaudeSim() as server:
        yield server


def _client(sim: ClaudeSim, *, max_retries: int = 0, read: float = 5.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=sim.base_url,
        api_key="sk-sim",
        max_retries=max_retries,
        timeout=httpx2.Timeout(10.0, connect=2.0, read=read),
    )


def _ask(client: anthropic.AsyncAnthropic, prompt: str = "hello") -> Any:
    return client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": prompt}]
    )


async def _stream_text(client: anthropic.AsyncAnthropic, prompt: str = "hello") -> str:
    async with _ask(client, prompt) as stream:
        return "".join([text async for text in stream.text_stream])


async def test_normal_stream_delivers_text_in_chunks_with_usage(sim: ClaudeSim) -> None:
    sim.enqueue(
        Script(
            text=TEXT,
            chunk_chars=7,
            input_tokens=42,
            cache_creation_input_tokens=5,
            cache_read_input_tokens=3,
            output_tokens=17,
        )
    )
    async with _client(sim) as client, _ask(client) as stream:
        pieces = [text async for text in stream.text_stream]
        message = await stream.get_final_message()

    assert "".join(pieces) == TEXT
    assert pieces[0] == TEXT[:7] and all(len(piece) <= 7 for piece in pieces)
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert (message.usage.input_tokens, message.usage.output_tokens) == (42, 17)
    assert message.usage.cache_creation_input_tokens == 5
    assert message.usage.cache_read_input_tokens == 3
    assert stream.request_id is not None and stream.request_id.startswith("req_sim")
    headers = sim.requests[0]["_headers"]
    assert headers["authorization"] == "Bearer sk-sim"
    assert "anthropic-version" in headers
    assert sim.requests[0]["messages"] == [{"role": "user", "content": "hello"}]


async def test_timeline_records_when_each_text_delta_was_streamed(sim: ClaudeSim) -> None:
    sim.enqueue(
        Script(
            text=TEXT,
            chunk_chars=10,
            chunk_delay=0.01,
            http_error=(529, "overloaded_error"),
            http_error_times=1,
        )
    )
    async with _client(sim, max_retries=1) as client:
        before = time.monotonic()
        assert await _stream_text(client) == TEXT
        after = time.monotonic()

    assert len(sim.timelines) == len(sim.requests) == 2
    failed, streamed = sim.timelines
    assert failed == []  # the 529 attempt streamed nothing
    times = [at for at, _ in streamed]
    assert [chars for _, chars in streamed] == [min(i * 10, len(TEXT)) for i in range(1, 7)]
    assert before <= times[0] and times[-1] <= after
    assert all(b - a >= 0.01 for a, b in itertools.pairwise(times))  # the script's pace


async def test_usage_is_estimated_from_the_request_and_answer(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text="x" * 400), Script(text="x" * 400))
    async with _client(sim) as client:
        async with _ask(client, "short") as stream:
            short = await stream.get_final_message()
        async with _ask(client, "a much longer question " * 40) as stream:
            long = await stream.get_final_message()
    assert short.usage.output_tokens == 100
    assert 0 < short.usage.input_tokens < long.usage.input_tokens


async def test_thinking_block_streams_before_the_text(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, thinking="Let me think about pacing first.", chunk_chars=8))
    async with _client(sim) as client, _ask(client) as stream:
        kinds = [event.type async for event in stream]
        message = await stream.get_final_message()

    assert "thinking" in kinds and "signature" in kinds
    assert kinds.index("signature") < kinds.index("text")
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Let me think about pacing first."
    assert thinking.signature
    assert text.type == "text" and text.text == TEXT


@pytest.mark.parametrize("stop_reason", ["max_tokens", "refusal", "future_value"])
async def test_stop_reason_and_details_reach_the_final_message(
    sim: ClaudeSim, stop_reason: str
) -> None:
    details = {"type": "refusal", "category": None, "explanation": "Declined by the sim."}
    sim.enqueue(Script(text="Partial", stop_reason=stop_reason, stop_details=details))
    async with _client(sim) as client, _ask(client) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == stop_reason
    assert message.stop_details is not None
    assert message.stop_details.explanation == "Declined by the sim."


async def test_http_529_raises_overloaded_error(sim: ClaudeSim) -> None:
    sim.enqueue(Script(http_error=(529, "overloaded_error")))
    async with _client(sim) as client:
        with pytest.raises(anthropic.OverloadedError) as caught:
            await _stream_text(client)
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_sim")
    assert len(sim.requests) == 1


async def test_sdk_retry_succeeds_after_one_529(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, http_error=(529, "overloaded_error"), http_error_times=1))
    async with _client(sim, max_retries=1) as client:
        assert await _stream_text(client) == TEXT
    assert [r["_headers"].get("x-stainless-retry-count") for r in sim.requests] == ["0", "1"]


async def test_429_is_retried_promptly_and_401_is_not(sim: ClaudeSim) -> None:
    sim.enqueue(
        Script(text="after the limit", http_error=(429, "rate_limit_error"), http_error_times=2),
        Script(http_error=(401, "authentication_error")),
    )
    async with _client(sim, max_retries=2) as client:
        async with asyncio.timeout(1.0):  # 10 ms retry-after-ms, not the 0.5 s backoff
            assert await _stream_text(client) == "after the limit"
        with pytest.raises(anthropic.AuthenticationError):
            await _stream_text(client)
    assert len(sim.requests) == 4


async def test_in_stream_error_is_a_status_error_with_status_200(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, chunk_chars=5, error_event_after=2))
    received: list[str] = []
    async with _client(sim, max_retries=2) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with _ask(client) as stream:
                async for text in stream.text_stream:
                    received.append(text)
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error"
    assert "".join(received) == TEXT[:10]
    assert len(sim.requests) == 1  # a started stream is never retried


def _kind(exc: BaseException) -> str:
    """How the bot classifies a stream failure, whichever class this SDK release raised."""
    return describe_failure(exc, started=True, mid_answer=True, idle_timeout=1).error_type


async def test_dropped_connection_surfaces_as_transport_error(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, chunk_chars=5, drop_after=3))
    received: list[str] = []
    async with _client(sim) as client:
        with pytest.raises(Exception) as caught:
            async with _ask(client) as stream:
                async for text in stream.text_stream:
                    received.append(text)
    assert _kind(caught.value) == "connection_lost"
    assert "".join(received) == TEXT[:15]
    partial = stream.current_message_snapshot  # what the bot keeps before "[interrupted]"
    assert partial.stop_reason is None
    assert partial.content[0].type == "text" and partial.content[0].text == TEXT[:15]
    await sim.wait_for_open_streams(0)


async def test_silence_trips_the_read_timeout_and_releases_the_stream(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, silence_after=1))
    async with _client(sim, read=0.3) as client:
        with pytest.raises(Exception) as caught:
            await _stream_text(client)
    assert _kind(caught.value) == "idle_timeout"
    await sim.wait_for_open_streams(0, timeout=5.0)


async def test_a_stall_can_end_and_the_answer_complete(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, silence_after=2, silence_seconds=0.05))
    async with _client(sim) as client:
        assert await _stream_text(client) == TEXT


async def test_pings_keep_a_quiet_stream_within_the_read_timeout(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, first_delay=0.9, ping_every=0.05))
    async with _client(sim, read=0.3) as client:
        assert await _stream_text(client) == TEXT


async def test_end_without_message_delta_leaves_stop_reason_none(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, end_without_message_delta=True))
    async with _client(sim) as client, _ask(client) as stream:
        assert await stream.get_final_text() == TEXT
        message = await stream.get_final_message()
    assert message.stop_reason is None


@pytest.mark.skipif(
    not FIXTURE_FILES, reason=missing(ANTHROPIC_FIXTURES, "the recorded Claude streams")
)
@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
async def test_fixture_replays_through_the_sdk(sim: ClaudeSim, path: Path) -> None:
    sim.enqueue(Script(fixture=str(path)))
    async with _client(sim) as client:
        expected = FIXTURES_RAISING.get(path.name)
        if expected is not None:
            with pytest.raises(expected):
                async with _ask(client) as stream:
                    await stream.until_done()
            return
        async with _ask(client) as stream:
            kinds = [event.type async for event in stream]
            message = await stream.get_final_message()
    # The last event is dispatched although most files lack the final blank line.
    assert kinds[-1] == "message_stop"
    assert message.id.startswith("msg_")


@pytest.mark.skipif(
    not FIXTURE_FILES, reason=missing(ANTHROPIC_FIXTURES, "the recorded Claude streams")
)
async def test_recorded_stream_content_survives_replay(sim: ClaudeSim) -> None:
    sim.enqueue(Script(fixture=str(FIXTURES / "basic_response.txt")))
    async with _client(sim) as client, _ask(client) as stream:
        assert await stream.get_final_text() == "Hello there!"
        message = await stream.get_final_message()
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 6)


async def test_enqueued_scripts_answer_in_order_then_the_default(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text="first"), Script(text="second"))
    async with _client(sim) as client:
        answers = [await _stream_text(client, f"question {i}") for i in range(3)]
    assert answers[:2] == ["first", "second"]
    assert "question 2" in answers[2]
    await sim.wait_for_requests(3)


async def test_default_can_be_a_function_of_the_request() -> None:
    def shout(body: dict[str, Any]) -> Script:
        return Script(text=str(body["messages"][-1]["content"]).upper())

    async with ClaudeSim(default=shout) as sim, _client(sim) as client:
        assert await _stream_text(client, "quiet please") == "QUIET PLEASE"


async def test_long_directive_answers_with_markdown(sim: ClaudeSim) -> None:
    async with _client(sim) as client:
        text = await _stream_text(client, "Explain everything [sim:long 5000]")
    assert 4000 <= len(text) <= 5000
    assert "\n## " in f"\n{text}" and "\n- " in text
    assert text.count("```") >= 2 and text.count("```") % 2 == 0


def test_directives_shape_the_default_script() -> None:
    def script_for(prompt: str) -> Script:
        return default_script({"messages": [{"role": "user", "content": prompt}]})

    assert script_for("hi [sim:slow]").chunk_delay == 0.05
    assert script_for("hi [sim:think]").thinking
    assert script_for("hi [sim:refuse]").stop_reason == "refusal"
    assert script_for("hi [sim:error]").error_event_after is not None
    assert script_for("hi [sim:drop]").drop_after is not None
    assert script_for("hi [sim:stall]").silence_after is not None
    assert script_for("hi [sim:overloaded]").http_error == (529, "overloaded_error")
    assert "[sim:" not in script_for("hi [sim:slow]").text


async def test_overloaded_directive_does_not_affect_the_next_question(sim: ClaudeSim) -> None:
    async with _client(sim) as client:
        with pytest.raises(anthropic.OverloadedError):
            await _stream_text(client, "busy? [sim:overloaded]")
        assert "calm" in await _stream_text(client, "calm")


async def test_stop_returns_promptly_during_a_silent_stream() -> None:
    sim = ClaudeSim(default=Script(text=TEXT, silence_after=1))
    await sim.start()
    async with _client(sim, read=60.0) as client:
        reader = asyncio.create_task(_stream_text(client))
        await sim.wait_for_open_streams(1)
        async with asyncio.timeout(2.0):
            await sim.stop()
        with pytest.raises(Exception) as caught:
            await reader
    assert _kind(caught.value) == "connection_lost"


async def test_count_tokens_models_and_non_streaming_create(sim: ClaudeSim) -> None:
    sim.enqueue(Script(text=TEXT, thinking="hm", output_tokens=9))
    async with _client(sim) as client:
        short = await client.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        long = await client.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hi " * 400}], system="Be brief."
        )
        info = await client.models.retrieve(MODEL)
        message = await client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert 0 < short.input_tokens < long.input_tokens
    assert info.id == MODEL and info.max_input_tokens and info.max_tokens
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].type == "text" and message.content[1].text == TEXT
    assert message.usage.output_tokens == 9 and message.stop_reason == "end_turn"
    assert not sim.requests[-1].get("stream")


async def test_requests_the_api_would_reject_get_400(sim: ClaudeSim) -> None:
    async with _client(sim) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=MODEL, max_tokens=64, messages=[])
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": ""}]
            )
    assert sim.requests == []


async def test_both_auth_header_styles_are_accepted(sim: ClaudeSim) -> None:
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{sim.base_url}/v1/messages"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers={"x-api-key": "sk-old"}) as old_style:
            assert old_style.status == 200
        async with session.post(url, json=body) as anonymous:
            assert anonymous.status == 401
            error = json.loads(await anonymous.text())
    assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    assert error["request_id"].startswith("req_sim")
