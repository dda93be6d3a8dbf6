"""A simulated Claude Messages API, served over HTTP for the real Anthropic SDK.

The demo, the integration tests and the benchmarks point `AsyncAnthropic(base_url=...)` at
`ClaudeSim` so that the whole streaming path (SDK retries, SSE framing, exceptions) runs for
real, offline and deterministically. Each request is answered by a `Script`: scripts given to
`enqueue()` are used first, in order; otherwise the default (a `Script`, or a function of the
request body) answers. The built-in default, `default_script`, honours `[sim:...]` directives
in the question (see `bot.sim.claude_scripts`); `bot.sim.claude_stream` writes the answers.

Routes: `POST /v1/messages` (streaming and not), `POST /v1/messages/count_tokens`,
`GET /v1/models/{id}`. Both auth styles are accepted (`x-api-key`, SDK < 2, and
`Authorization: Bearer`, SDK 2.x); a request with neither gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bot.sim.claude_scripts import (
    Cite,
    Lookup,
    Say,
    Script,
    ScriptSource,
    default_script,
    long_markdown,
)
from bot.sim.claude_stream import (
    ServerStopping,
    SseStream,
    complete_message,
    input_estimate,
    message_start,
    script_steps,
)
from bot.sim.claude_tool_checks import tools_problem
from bot.sim.claude_tools import Plan, plan_answer
from bot.sim.content_blocks import block_problem, request_problem

__all__ = [
    "Cite",
    "ClaudeSim",
    "Lookup",
    "Say",
    "Script",
    "ScriptSource",
    "default_script",
    "long_markdown",
]

_MODEL_INFO_BASE: dict[str, Any] = {
    "type": "model",
    "created_at": "2026-01-01T00:00:00Z",
    "lifecycle": "active",
    "max_input_tokens": 1_000_000,
    "max_tokens": 128_000,
}


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
                if (problem := block_problem(f"messages.{i}.content.{j}", block)) is not None:
                    return problem  # an image or document block (files in the thread)
    return request_problem(body)


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
        self._emitted: set[str] = set()  # encrypted values handed out, to know them back
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
        headers = {k.lower(): v for k, v in request.headers.items()}
        if (problem := _validation_error(body)) is not None or (
            problem := tools_problem(body, headers, self._emitted)
        ) is not None:
            return self._error(400, "invalid_request_error", problem)
        self.requests.append({**body, "_headers": headers})
        timeline: list[tuple[float, int]] = []
        self.timelines.append(timeline)
        self._notify()
        script, fail = self._pick_script(body)
        if fail:
            assert script.http_error is not None
            status, error_type = script.http_error
            return self._error(status, error_type, f"Simulated {error_type}")
        plan = self._plan(body, script)
        if not body.get("stream"):
            return await self._message_json(body, script, plan)
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "request-id": self._next_id("req"),
            }
        )
        await response.prepare(request)
        stream = SseStream(request, response, script, self._stopping, timeline)
        self._open_streams += 1
        self._notify()
        try:
            if script.fixture is not None:
                await stream.replay(script.fixture)
            else:
                await stream.play(message_start(body, script, self._next_id("msg")), plan)
        except ServerStopping:
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
        return web.json_response({"input_tokens": input_estimate(body)})

    async def _model(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        model_id = request.match_info["model_id"]
        return web.json_response({**_MODEL_INFO_BASE, "id": model_id, "display_name": model_id})

    def _plan(self, body: dict[str, Any], script: Script) -> Plan:
        """The script's content blocks; the encrypted values in them are remembered."""
        return plan_answer(script_steps(script), body, self._next_id, self._emitted)

    async def _message_json(self, body: dict[str, Any], script: Script, plan: Plan) -> web.Response:
        if script.first_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), script.first_delay)
        message = message_start(body, script, self._next_id("msg"))
        message = complete_message(message, script, plan)
        return web.json_response(message, headers={"request-id": self._next_id("req")})
