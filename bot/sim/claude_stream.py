"""How the simulated Claude writes an answer: the Message object, and the Messages API's SSE
stream of it as a `Script` plays it (pace, thinking, faults), or a recorded stream replayed."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.sim.claude_scripts import Script
from bot.sim.content_blocks import media_tokens, without_media


class ServerStopping(Exception):
    """Raised inside a stream when `ClaudeSim.stop()` runs, so the stream is cut at once."""


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event; the blank line that ends it is what makes the SDK dispatch it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def input_estimate(body: dict[str, Any]) -> int:
    # Images and documents count as Claude counts them, not as the length of their base64.
    prompt = {"system": body.get("system"), "messages": without_media(body.get("messages"))}
    return estimate_tokens(json.dumps(prompt, ensure_ascii=False)) + media_tokens(body)


def output_tokens(script: Script) -> int:
    if script.output_tokens is not None:
        return script.output_tokens
    return estimate_tokens(script.text + (script.thinking or ""))


def signature(script: Script) -> str:
    return f"sim-signature-{len(script.thinking or '')}"


def message_start(body: dict[str, Any], script: Script, message_id: str) -> dict[str, Any]:
    """The Message object as `message_start` announces it (no content, no stop reason)."""
    usage = {
        "input_tokens": (
            script.input_tokens if script.input_tokens is not None else input_estimate(body)
        ),
        "cache_creation_input_tokens": script.cache_creation_input_tokens,
        "cache_read_input_tokens": script.cache_read_input_tokens,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": script.model or body["model"],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }


def complete_message(message: dict[str, Any], script: Script) -> dict[str, Any]:
    """`message` (from `message_start`) with the script's content, stop reason and usage: the
    answer to a request that does not stream."""
    if script.thinking is not None:
        message["content"].append(
            {"type": "thinking", "thinking": script.thinking, "signature": signature(script)}
        )
    message["content"].append({"type": "text", "text": script.text})
    message["stop_reason"] = script.stop_reason
    if script.stop_details is not None:
        message["stop_details"] = script.stop_details
    message["usage"]["output_tokens"] = output_tokens(script)
    return message


def _fixture_events(path: str) -> list[bytes]:
    """The events of a recorded SSE file, each re-framed to end with exactly one blank line."""
    with open(path, encoding="utf-8") as f:
        raw = f.read().replace("\r\n", "\n")
    return [
        (block.strip("\n") + "\n\n").encode()
        for block in re.split(r"\n[ \t]*\n", raw)
        if block.strip()
    ]


@dataclass
class SseStream:
    """Writes one SSE response; pauses wake up (and cut the stream) when the server stops.

    `timeline` gets one `(time.monotonic(), cumulative text characters)` per text delta.
    """

    request: web.Request
    response: web.StreamResponse
    script: Script
    stopping: asyncio.Event
    timeline: list[tuple[float, int]] = field(default_factory=list)

    async def send(self, event: str, data: dict[str, Any]) -> None:
        await self.response.write(sse(event, data))

    async def send_raw(self, chunk: bytes) -> None:
        await self.response.write(chunk)

    async def pause(self, seconds: float, *, pings: bool = True) -> None:
        """Wait `seconds`, sending `ping` events every `script.ping_every` if asked to."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        interval = self.script.ping_every if pings else None
        while (remaining := deadline - loop.time()) > 0:
            step = min(remaining, interval) if interval else remaining
            try:
                await asyncio.wait_for(self.stopping.wait(), step)
            except TimeoutError:
                if interval and deadline - loop.time() > 0:
                    await self.send("ping", {"type": "ping"})
            else:
                raise ServerStopping

    def cut(self) -> None:
        """Close the socket without the final chunk, as a dropped connection looks to the SDK."""
        if self.request.transport is not None:
            self.request.transport.close()

    async def replay(self, path: str) -> None:
        """A recorded stream, event by event, `script.chunk_delay` apart."""
        for i, event in enumerate(_fixture_events(path)):
            if i:
                await self.pause(self.script.chunk_delay, pings=False)
            await self.send_raw(event)

    async def play(self, message: dict[str, Any]) -> None:
        """The script as the Messages API streams it, from `message_start` (announcing
        `message`) to `message_stop`, unless its fault ends it first."""
        script = self.script
        await self.send("message_start", {"type": "message_start", "message": message})
        await self.pause(script.first_delay)
        index = 0
        if script.thinking is not None:
            await self._thinking_block(script.thinking)
            index = 1
        await self.send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await self.send("ping", {"type": "ping"})
        chunks = _chunks(script.text, script.chunk_chars)
        streamed = 0
        for sent in range(len(chunks) + 1):
            if await self._fault(sent, last=sent == len(chunks)):
                return
            if sent == len(chunks):
                break
            if sent:
                await self.pause(script.chunk_delay)
            text_delta = {"type": "text_delta", "text": chunks[sent]}
            await self.send(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": text_delta},
            )
            streamed += len(chunks[sent])
            self.timeline.append((time.monotonic(), streamed))
        await self.send("content_block_stop", {"type": "content_block_stop", "index": index})
        if script.end_without_message_delta:
            return
        delta: dict[str, Any] = {"stop_reason": script.stop_reason, "stop_sequence": None}
        if script.stop_details is not None:
            delta["stop_details"] = script.stop_details
        await self.send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": output_tokens(script)},
            },
        )
        await self.send("message_stop", {"type": "message_stop"})

    async def _thinking_block(self, thinking: str) -> None:
        await self.send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        )
        chunks = _chunks(thinking, self.script.chunk_chars)
        for chunk in chunks:
            await self.pause(self.script.thinking_delay / len(chunks))
            delta = {"type": "thinking_delta", "thinking": chunk}
            await self.send(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        done = {"type": "signature_delta", "signature": signature(self.script)}
        await self.send(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": done}
        )
        await self.send("content_block_stop", {"type": "content_block_stop", "index": 0})

    async def _fault(self, sent: int, *, last: bool) -> bool:
        """Play the script's fault due after `sent` text deltas; True when the stream must end.

        A fault set beyond the number of deltas fires after the last one.
        """
        script = self.script

        def due(after: int | None) -> bool:
            return after is not None and (sent == after or (last and after > sent))

        if due(script.error_event_after):
            error = {"type": "overloaded_error", "message": "Overloaded"}
            await self.send("error", {"type": "error", "error": error})
            return True
        if due(script.drop_after):
            self.cut()
            return True
        if due(script.silence_after):
            await self.pause(script.silence_seconds, pings=False)
        return False
