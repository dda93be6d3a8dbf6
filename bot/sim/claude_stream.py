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

from bot.sim.claude_scripts import Say, Script
from bot.sim.claude_tools import TOOL_USE_TYPES, Plan, steps_text
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
    return estimate_tokens(steps_text(script_steps(script)) + (script.thinking or ""))


def script_steps(script: Script) -> list[Any]:
    """The steps the script plays: its `steps`, or its `text` as one text block."""
    return script.steps if script.steps is not None else [Say(script.text)]


def _usage_delta(script: Script, plan: Plan) -> dict[str, Any]:
    usage: dict[str, Any] = {"output_tokens": output_tokens(script)}
    if plan.server_tool_use is not None:
        usage["server_tool_use"] = plan.server_tool_use
    return usage


def _json_pieces(value: dict[str, Any]) -> list[str]:
    """A tool's input as the API streams it: an empty piece, then the JSON in three or so."""
    text = json.dumps(value)
    size = max(1, -(-len(text) // 3))
    return ["", *_chunks(text, size)]


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


def complete_message(message: dict[str, Any], script: Script, plan: Plan) -> dict[str, Any]:
    """`message` (from `message_start`) with the script's content (`plan`), stop reason and
    usage: the answer to a request that does not stream."""
    if script.thinking is not None:
        message["content"].append(
            {"type": "thinking", "thinking": script.thinking, "signature": signature(script)}
        )
    message["content"] += [planned.block for planned in plan.blocks]
    message["stop_reason"] = script.stop_reason
    if script.stop_details is not None:
        message["stop_details"] = script.stop_details
    message["usage"].update(_usage_delta(script, plan))
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
    _sent: int = 0  # text deltas written so far, for the script's fault
    _streamed: int = 0  # text characters written so far

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

    async def play(self, message: dict[str, Any], plan: Plan) -> None:
        """The script as the Messages API streams it, from `message_start` (announcing
        `message`) to `message_stop`, `plan` its content, unless its fault ends it first."""
        script = self.script
        await self.send("message_start", {"type": "message_start", "message": message})
        await self.pause(script.first_delay)
        first = 0
        if script.thinking is not None:
            await self._thinking_block(script.thinking)
            first = 1
        texts = [i for i, planned in enumerate(plan.blocks) if planned.block["type"] == "text"]
        self._sent = self._streamed = 0
        for i, planned in enumerate(plan.blocks):
            await self.pause(planned.delay)
            index = first + i
            await self._start(index, planned.block, ping=i == 0)
            if planned.block["type"] == "text":
                if await self._text(index, planned.block, final=i == texts[-1]):
                    return
            elif planned.block["type"] in TOOL_USE_TYPES:
                for piece in _json_pieces(planned.block["input"]):
                    await self._delta(index, {"type": "input_json_delta", "partial_json": piece})
            await self.send("content_block_stop", {"type": "content_block_stop", "index": index})
            await self.pause(planned.after)
        if not texts and await self._fault(self._sent, last=True):
            return
        if script.end_without_message_delta:
            return
        delta: dict[str, Any] = {"stop_reason": script.stop_reason, "stop_sequence": None}
        if script.stop_details is not None:
            delta["stop_details"] = script.stop_details
        await self.send(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": _usage_delta(script, plan)},
        )
        await self.send("message_stop", {"type": "message_stop"})

    async def _start(self, index: int, block: dict[str, Any], *, ping: bool) -> None:
        """`content_block_start`: text and tool uses start empty, results whole."""
        if block["type"] == "text":
            block = {"type": "text", "text": ""}
        elif block["type"] in TOOL_USE_TYPES:
            block = {**block, "input": {}}
        await self.send(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        if ping:
            await self.send("ping", {"type": "ping"})

    async def _delta(self, index: int, delta: dict[str, Any]) -> None:
        await self.send(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    async def _text(self, index: int, block: dict[str, Any], *, final: bool) -> bool:
        """A text block's citations, then its text in paced deltas; True when a fault ended
        the stream (faults count the deltas of every text block)."""
        for citation in block.get("citations") or []:
            await self._delta(index, {"type": "citations_delta", "citation": citation})
        for k, chunk in enumerate(_chunks(block["text"], self.script.chunk_chars)):
            if await self._fault(self._sent, last=False):
                return True
            if k:
                await self.pause(self.script.chunk_delay)
            await self._delta(index, {"type": "text_delta", "text": chunk})
            self._sent += 1
            self._streamed += len(chunk)
            self.timeline.append((time.monotonic(), self._streamed))
        return final and await self._fault(self._sent, last=True)

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
