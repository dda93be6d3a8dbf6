"""A simulated Claude Messages API, served over HTTP for the real Anthropic SDK.

The demo, the integration tests and the benchmarks point `AsyncAnthropic(base_url=...)` at
`ClaudeSim` so that the whole streaming path (SDK retries, SSE framing, exceptions) runs for
real, offline and deterministically. Each request is answered by a `Script`: scripts given to
`enqueue()` are used first, in order; otherwise the default (a `Script`, or a function of the
request body) answers.

Routes: `POST /v1/messages` (streaming and not), `POST /v1/messages/count_tokens`,
`GET /v1/models/{id}`. Both auth styles are accepted (`x-api-key`, SDK < 2, and
`Authorization: Bearer`, SDK 2.x); a request with neither gets 401.

The built-in default answers from the last user message and honours these directives anywhere in
it (they combine):

=====================  =============================================================
``[sim:long N]``       about N characters of Markdown (headings, lists, a code block);
                       N defaults to 5000
``[sim:slow]``         0.05 s between text deltas
``[sim:fast]``         no delay between text deltas (the demo streams at a reading pace)
``[sim:think]``        a thinking block streams before the text
``[sim:refuse]``       stop_reason ``refusal`` with ``stop_details``
``[sim:error]``        an in-stream ``overloaded_error`` event after 3 text deltas
``[sim:drop]``         the connection is cut after 3 text deltas
``[sim:stall]``        the stream goes silent (no pings) after 3 text deltas
``[sim:overloaded]``   HTTP 529 ``overloaded_error`` on every attempt
``[sim:overloaded N]`` HTTP 529 on the first N attempts only (the SDK retries, then it answers)
=====================  =============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = ["ClaudeSim", "Script", "default_script", "long_markdown"]


@dataclass
class Script:
    """One scripted answer: its content, its pace and the fault it should show, if any."""

    text: str = "Hello from the simulated Claude."
    chunk_chars: int = 12
    chunk_delay: float = 0.0
    first_delay: float = 0.0
    thinking: str | None = None
    thinking_delay: float = 0.0
    stop_reason: str | None = "end_turn"
    stop_details: dict[str, Any] | None = None
    input_tokens: int | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int | None = None
    model: str | None = None
    ping_every: float | None = None
    # faults
    http_error: tuple[int, str] | None = None  # (status, error type), before any byte of stream
    http_error_times: int = 1_000_000  # failing requests in a row (retries too) before it answers
    error_event_after: int | None = None
    drop_after: int | None = None
    silence_after: int | None = None
    silence_seconds: float = 3600.0
    end_without_message_delta: bool = False
    fixture: str | None = None


ScriptSource = Script | Callable[[dict[str, Any]], Script]


class _ServerStopping(Exception):
    """Raised inside a stream when `ClaudeSim.stop()` runs, so the stream is cut at once."""


_DIRECTIVE = re.compile(r"\[sim:(\w+)(?:\s+(\d+))?\]")
_FAULT_AFTER = 3
_SLOW_DELAY = 0.05
_LONG_DEFAULT = 5000
_LONG_MAX = 200_000
_MODEL_INFO_BASE: dict[str, Any] = {
    "type": "model",
    "created_at": "2026-01-01T00:00:00Z",
    "lifecycle": "active",
    "max_input_tokens": 1_000_000,
    "max_tokens": 128_000,
}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event; the blank line that ends it is what makes the SDK dispatch it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _input_estimate(body: dict[str, Any]) -> int:
    prompt = {"system": body.get("system"), "messages": body.get("messages")}
    return _estimate_tokens(json.dumps(prompt, ensure_ascii=False))


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(block.get("text", ""))
                for block in content
                if isinstance(block, dict) and block.get("type") == "text"
            )
        return ""
    return ""


_TOPICS = ("Pacing", "Rendering", "Leases", "Recovery", "Budgets", "Splitting")
_SENTENCES = (
    "Streaming an answer into Slack means editing one message many times while tokens arrive.",
    "Each edit carries the newest text, so a slow edit never leaves the reader behind.",
    "The workspace shares one budget of edits per minute among every answer in flight.",
    "Partial Markdown is closed safely before it is shown, so a half-written list stays a list.",
    "When a replica dies, another one notices the lapsed lease and finishes the answer.",
    "Long answers continue in further messages of the same thread, and nothing is lost.",
    "Usage arrives in two places: input counts at the start and the output count at the end.",
)


def _long_part(i: int) -> str:
    kind, n = i % 4, i // 4
    topic = _TOPICS[n % len(_TOPICS)]
    if kind == 0:
        return f"## {n + 1}. {topic}"
    if kind == 1:
        return " ".join(_SENTENCES[(n + k) % len(_SENTENCES)] for k in range(3))
    if kind == 2:
        return "\n".join(
            f"- **{topic} {k + 1}:** {_SENTENCES[(n + k + 3) % len(_SENTENCES)]}" for k in range(3)
        )
    return (
        "```python\n"
        f"def {topic.lower()}_step(n: int) -> int:\n"
        f'    """Step {n + 1} of the {topic.lower()} example."""\n'
        f"    return n * {n + 2}\n"
        "```"
    )


def long_markdown(chars: int) -> str:
    """Deterministic Markdown prose of about `chars` characters, made of whole parts.

    Parts (heading, paragraph, list, fenced code block) are never cut, so the result is always
    well-formed Markdown; it is at most `chars` long unless the first part alone is longer.
    """
    parts: list[str] = []
    total = 0
    i = 0
    while True:
        part = _long_part(i)
        added = len(part) + (2 if parts else 0)
        if parts and total + added > chars:
            return "\n\n".join(parts)
        parts.append(part)
        total += added
        i += 1


def default_script(body: dict[str, Any], *, chunk_delay: float = 0.0) -> Script:
    """Answer deterministically from the last user message, honouring `[sim:...]` directives;
    `chunk_delay` paces the text deltas unless the message asks for `[sim:fast]`."""
    prompt = _last_user_text(body)
    directives = {name: number for name, number in _DIRECTIVE.findall(prompt)}
    asked = " ".join(_DIRECTIVE.sub(" ", prompt).split())
    if len(asked) > 200:
        asked = asked[:199] + "…"
    script = Script(
        text=(
            f"You asked: “{asked or '(nothing)'}”\n\n"
            "This answer comes from the *simulated* Claude, so it is the same every time. "
            "It streams in small pieces, the way the real API does."
        )
    )
    if "long" in directives:
        size = int(directives["long"] or _LONG_DEFAULT)
        script.text = long_markdown(min(size, _LONG_MAX))
    script.chunk_delay = 0.0 if "fast" in directives else chunk_delay
    if "slow" in directives:
        script.chunk_delay = max(script.chunk_delay, _SLOW_DELAY)
    if "think" in directives:
        script.thinking = (
            f"The user asked about {asked or 'nothing in particular'}. Answer briefly."
        )
    if "refuse" in directives:
        script.text = ""
        script.stop_reason = "refusal"
        script.stop_details = {"type": "refusal", "category": None, "explanation": None}
    if "error" in directives:
        script.error_event_after = _FAULT_AFTER
    if "drop" in directives:
        script.drop_after = _FAULT_AFTER
    if "stall" in directives:
        script.silence_after = _FAULT_AFTER
    if "overloaded" in directives:
        script.http_error = (529, "overloaded_error")
        if directives["overloaded"]:  # only the first N attempts: the SDK's retry gets through
            script.http_error_times = int(directives["overloaded"])
    return script


def _validation_error(body: Any) -> str | None:
    """The message of the API's 400 for the request mistakes a bot could make, else None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: must be a positive integer"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: must be 'user' or 'assistant'"
        content = message.get("content")
        last_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if not content and not last_assistant:
            return f"messages.{i}: all messages must have non-empty content"
        if isinstance(content, list):
            for j, block in enumerate(content):
                if (
                    isinstance(block, dict)
                    and block.get("type") == "text"
                    and not block.get("text")
                ):
                    return f"messages.{i}.content.{j}: text content blocks must be non-empty"
    return None


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
class _Stream:
    """Writes one SSE response; pauses wake up (and cut the stream) when the server stops."""

    request: web.Request
    response: web.StreamResponse
    script: Script
    stopping: asyncio.Event
    timeline: list[tuple[float, int]] = field(default_factory=list)

    async def send(self, event: str, data: dict[str, Any]) -> None:
        await self.response.write(_sse(event, data))

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
                raise _ServerStopping

    def cut(self) -> None:
        """Close the socket without the final chunk, as a dropped connection looks to the SDK."""
        if self.request.transport is not None:
            self.request.transport.close()


class ClaudeSim:
    """An aiohttp server that answers the Messages API with scripted streams and faults.

    `requests` records every `/v1/messages` request that passed validation (a 400 is not
    recorded), failed attempts included, so tests can count SDK retries.

    `timelines[i]` is when `requests[i]`'s text was streamed, for the pacing benchmark to compare
    with what Slack showed: one `(time.monotonic(), cumulative text characters)` per text delta,
    taken as the delta is written (SlackSim's default clock). It stays empty for requests that
    streamed no text (failed attempts, non-streaming calls, fixture replays).
    """

    def __init__(self, *, default: ScriptSource | None = None) -> None:
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.timelines: list[list[tuple[float, int]]] = []
        self._default: ScriptSource = default if default is not None else default_script
        self._queue: deque[Script] = deque()
        self._current: Script | None = None
        self._failures = 0
        self._default_failures: dict[str, int] = {}  # conversation -> failed attempts so far
        self._open_streams = 0
        self._ids = 0
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def open_streams(self) -> int:
        """Streams currently being written (a cut or finished stream no longer counts)."""
        return self._open_streams

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models/{model_id}", self._model)
        # handler_cancellation: a client that goes away ends its stream here too.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; open streams (even silent ones) are cut rather than waited for."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def enqueue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until at least `n` `/v1/messages` requests have arrived."""
        await self._wait_until(lambda: len(self.requests) >= n, timeout)

    async def wait_for_open_streams(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until exactly `n` streams are open (0: every stream was released)."""
        await self._wait_until(lambda: self._open_streams == n, timeout)

    async def _wait_until(self, predicate: Callable[[], bool], limit: float) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        """Wake every waiter; each re-checks its own condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_sim{self._ids:06d}"

    def _error(self, status: int, error_type: str, message: str) -> web.Response:
        request_id = self._next_id("req")
        headers = {"request-id": request_id}
        if status == 429:
            # `retry-after: 0` alone makes the SDK back off 0.5 s; `retry-after-ms` keeps it quick.
            headers.update({"retry-after": "0", "retry-after-ms": "10"})
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        bearer = request.headers.get("authorization", "")
        return bool(request.headers.get("x-api-key")) or (
            bearer.lower().startswith("bearer ") and bool(bearer[7:].strip())
        )

    def _pick_script(self, body: dict[str, Any]) -> tuple[Script, bool]:
        """The script for this request and whether this attempt fails with its HTTP error.

        A queued script stays at the head of the queue until it has failed `http_error_times`
        consecutive requests (SDK retries included), then answers the next one. A default
        script is made anew for every request and fails while the failures so far for the same
        conversation are fewer than its `http_error_times` (counted per conversation, so
        concurrent questions do not share a count).
        """
        if self._current is None and self._queue:
            self._current = self._queue.popleft()
            self._failures = 0
        if self._current is not None:
            script = self._current
            if script.http_error is not None and self._failures < script.http_error_times:
                self._failures += 1
                return script, True
            self._current = None
            self._failures = 0
            return script, False
        script = self._default_script(body)
        key = json.dumps(body.get("messages"), sort_keys=True)
        failed = self._default_failures.get(key, 0)
        if script.http_error is not None and failed < script.http_error_times:
            self._default_failures[key] = failed + 1
            return script, True
        self._default_failures.pop(key, None)
        return script, False

    def _default_script(self, body: dict[str, Any]) -> Script:
        return self._default if isinstance(self._default, Script) else self._default(body)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "invalid_request_error", "request body is not valid JSON")
        if (problem := _validation_error(body)) is not None:
            return self._error(400, "invalid_request_error", problem)
        self.requests.append(
            {**body, "_headers": {k.lower(): v for k, v in request.headers.items()}}
        )
        timeline: list[tuple[float, int]] = []
        self.timelines.append(timeline)
        self._notify()
        script, fail = self._pick_script(body)
        if fail:
            assert script.http_error is not None
            status, error_type = script.http_error
            return self._error(status, error_type, f"Simulated {error_type}")
        if not body.get("stream"):
            return await self._message_json(body, script)
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "request-id": self._next_id("req"),
            }
        )
        await response.prepare(request)
        stream = _Stream(request, response, script, self._stopping, timeline)
        self._open_streams += 1
        self._notify()
        try:
            if script.fixture is not None:
                await self._replay(stream, script.fixture)
            else:
                await self._stream(stream, body)
        except _ServerStopping:
            stream.cut()
        finally:
            self._open_streams -= 1
            self._notify()
        return response

    async def _count_tokens(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "invalid_request_error", "request body is not valid JSON")
        if not isinstance(body, dict):
            return self._error(400, "invalid_request_error", "request body must be a JSON object")
        return web.json_response({"input_tokens": _input_estimate(body)})

    async def _model(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        model_id = request.match_info["model_id"]
        return web.json_response({**_MODEL_INFO_BASE, "id": model_id, "display_name": model_id})

    def _message(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        """The Message object as `message_start` announces it (no content, no stop reason)."""
        usage = {
            "input_tokens": (
                script.input_tokens if script.input_tokens is not None else _input_estimate(body)
            ),
            "cache_creation_input_tokens": script.cache_creation_input_tokens,
            "cache_read_input_tokens": script.cache_read_input_tokens,
            "output_tokens": 1,
            "service_tier": "standard",
        }
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": script.model or body["model"],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }

    @staticmethod
    def _output_tokens(script: Script) -> int:
        if script.output_tokens is not None:
            return script.output_tokens
        return _estimate_tokens(script.text + (script.thinking or ""))

    @staticmethod
    def _signature(script: Script) -> str:
        return f"sim-signature-{len(script.thinking or '')}"

    async def _message_json(self, body: dict[str, Any], script: Script) -> web.Response:
        if script.first_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), script.first_delay)
        message = self._message(body, script)
        if script.thinking is not None:
            message["content"].append(
                {
                    "type": "thinking",
                    "thinking": script.thinking,
                    "signature": self._signature(script),
                }
            )
        message["content"].append({"type": "text", "text": script.text})
        message["stop_reason"] = script.stop_reason
        if script.stop_details is not None:
            message["stop_details"] = script.stop_details
        message["usage"]["output_tokens"] = self._output_tokens(script)
        return web.json_response(message, headers={"request-id": self._next_id("req")})

    async def _replay(self, stream: _Stream, path: str) -> None:
        for i, event in enumerate(_fixture_events(path)):
            if i:
                await stream.pause(stream.script.chunk_delay, pings=False)
            await stream.send_raw(event)

    async def _stream(self, stream: _Stream, body: dict[str, Any]) -> None:
        script = stream.script
        await stream.send(
            "message_start", {"type": "message_start", "message": self._message(body, script)}
        )
        await stream.pause(script.first_delay)
        index = 0
        if script.thinking is not None:
            await self._thinking_block(stream, script.thinking)
            index = 1
        await stream.send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await stream.send("ping", {"type": "ping"})
        chunks = _chunks(script.text, script.chunk_chars)
        streamed = 0
        for sent in range(len(chunks) + 1):
            if await self._fault(stream, sent, last=sent == len(chunks)):
                return
            if sent == len(chunks):
                break
            if sent:
                await stream.pause(script.chunk_delay)
            text_delta = {"type": "text_delta", "text": chunks[sent]}
            await stream.send(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": text_delta},
            )
            streamed += len(chunks[sent])
            stream.timeline.append((time.monotonic(), streamed))
        await stream.send("content_block_stop", {"type": "content_block_stop", "index": index})
        if script.end_without_message_delta:
            return
        delta: dict[str, Any] = {"stop_reason": script.stop_reason, "stop_sequence": None}
        if script.stop_details is not None:
            delta["stop_details"] = script.stop_details
        await stream.send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": self._output_tokens(script)},
            },
        )
        await stream.send("message_stop", {"type": "message_stop"})

    async def _thinking_block(self, stream: _Stream, thinking: str) -> None:
        await stream.send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        )
        chunks = _chunks(thinking, stream.script.chunk_chars)
        for chunk in chunks:
            await stream.pause(stream.script.thinking_delay / len(chunks))
            delta = {"type": "thinking_delta", "thinking": chunk}
            await stream.send(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        signature = {"type": "signature_delta", "signature": self._signature(stream.script)}
        await stream.send(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature}
        )
        await stream.send("content_block_stop", {"type": "content_block_stop", "index": 0})

    @staticmethod
    async def _fault(stream: _Stream, sent: int, *, last: bool) -> bool:
        """Play the script's fault due after `sent` text deltas; True when the stream must end.

        A fault set beyond the number of deltas fires after the last one.
        """
        script = stream.script

        def due(after: int | None) -> bool:
            return after is not None and (sent == after or (last and after > sent))

        if due(script.error_event_after):
            error = {"type": "overloaded_error", "message": "Overloaded"}
            await stream.send("error", {"type": "error", "error": error})
            return True
        if due(script.drop_after):
            stream.cut()
            return True
        if due(script.silence_after):
            await stream.pause(script.silence_seconds, pings=False)
        return False
