"""A simulated Slack Web API, served over HTTP so the real slack-sdk client can talk to it.

The demo, the tests and the benchmarks point ``AsyncWebClient(base_url=sim.api_url)`` here. The
sim keeps messages in memory, checks payloads against Slack's documented limits, enforces
per-method rate limits, and can inject failures. Argument and error names follow Slack's method
metadata (Slack's per-method JSON reference); where Slack's behaviour is undocumented, the
function that makes the choice says what it does.

`SlackSim` is the workspace (its conversations, people and messages: `slack_workspace`) served
over HTTP, with the Web API methods (`slack_api`, which check what a message may carry with
`slack_payloads`) and Socket Mode (`slack_socket`); this module serves them and is the tests'
handle on all of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from bot.sim.slack_api import DEFAULT_SCOPES, LOST_RESPONSE, SimCall, WebApi
from bot.sim.slack_files import SimFiles
from bot.sim.slack_payloads import JsonDict, Limits, decode_blocks
from bot.sim.slack_socket import SocketMode
from bot.sim.slack_views import Views
from bot.sim.slack_workspace import SimMessage, Workspace

__all__ = [
    "DEFAULT_BOT_TOKEN",
    "LOST_RESPONSE",
    "JsonDict",
    "SimCall",
    "SimMessage",
    "SlackSim",
]

DEFAULT_BOT_TOKEN = "xoxb-sim"


class SlackSim(Workspace):
    """One simulated workspace with one bot installed, served over HTTP: the workspace (its
    conversations, people and messages) with its Web API and Socket Mode."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = "xapp-sim",
        latency: float = 0.0,
        rate_limits: dict[str, tuple[float, float]] | None = None,
        text_limit: int = 4000,
        markdown_limit: int = 12000,
        blocks_text_limit: int = 13000,
        scopes: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(team_id=team_id, bot_user_id=bot_user_id, bot_id=bot_id, clock=clock)
        self.latency = latency
        self.api_url = ""
        self.api = WebApi(
            self,
            bot_token=bot_token,
            app_token=app_token,
            limits=Limits(text=text_limit, markdown=markdown_limit, blocks_text=blocks_text_limit),
            rate_limits=rate_limits or {},
            scopes=list(scopes if scopes is not None else DEFAULT_SCOPES),
            clock=clock,
        )
        self.socket = SocketMode(self.notify)
        self._runner: web.AppRunner | None = None
        self.files = SimFiles(self.api)  # uploads, files.info and the file host
        self.api.add_method("files.info", self.files.info)

    # --- the Web API's credentials -----------------------------------------------------------

    @property
    def bot_token(self) -> str:
        return self.api.bot_token

    @property
    def app_token(self) -> str:
        return self.api.app_token

    # --- server life cycle -------------------------------------------------------------------

    async def start(self) -> str:
        """Serve on a free loopback port; returns ``api_url`` for ``AsyncWebClient(base_url=)``."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._serve)
        app.router.add_get("/socket", self.socket.serve)
        self.files.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.api_url = f"http://127.0.0.1:{port}/api/"
        self.api.socket_url = f"ws://127.0.0.1:{port}/socket"
        self.files.base_url = f"http://127.0.0.1:{port}"
        return self.api_url

    async def stop(self) -> None:
        await self.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackSim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- test controls -----------------------------------------------------------------------

    @property
    def fail_next(self) -> dict[str, list[str]]:
        """Failures for the next calls of a method: an error name, or LOST_RESPONSE."""
        return self.api.fail_next

    def set_latency(self, seconds: float) -> None:
        self.latency = seconds

    def set_rate_limit(self, method: str, per_minute: float, burst: float) -> None:
        """Limit ``method`` from now on, starting with a full bucket."""
        self.api.set_rate_limit(method, per_minute, burst)

    def clear_rate_limit(self, method: str) -> None:
        """Lift a rate limit set with `set_rate_limit` (its bucket is forgotten too)."""
        self.api.clear_rate_limit(method)

    async def push_socket(self, payload: JsonDict, *, kind: str = "events_api") -> str:
        """Deliver an Events API envelope (or `kind="interactive"` payload) over the newest
        Socket Mode connection; returns its envelope id, which the bot must acknowledge."""
        return await self.socket.push(payload, kind=kind)

    @property
    def views(self) -> Views:
        """Home tabs and modals, and what people do with them (`slack_views`)."""
        return self.api.views

    # --- inspection --------------------------------------------------------------------------

    @property
    def calls(self) -> list[SimCall]:
        return self.api.calls

    @property
    def socket_acks(self) -> list[str]:
        return self.socket.acks

    @property
    def socket_connections(self) -> int:
        return self.socket.connections

    def calls_to(self, method: str) -> list[SimCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 (fixed API)
    ) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every call and store change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._describe_timeout(predicate, timeout))
            changed = self.changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue

    def _describe_timeout(self, predicate: Callable[[], bool], timeout: float) -> str:
        name = getattr(predicate, "__qualname__", repr(predicate))
        lines = [f"{name} still false after {timeout} s. Latest messages:"]
        lines += [
            f"  {m.channel} {m.ts} {m.user}: {m.visible_text()[:80]!r}" for m in self.latest(5)
        ]
        lines.append("Latest calls:")
        lines += [f"  {c.method} -> {c.status} {c.error or 'ok'}" for c in self.calls[-5:]]
        return "\n".join(lines)

    # --- HTTP --------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # simulated network delay
        params, token = await _read_request(request)
        reply = self.api.call(method, params, token, peer=_peer(request))
        if reply.body is None:
            return web.Response(
                status=reply.status, text="Internal Server Error", headers=reply.headers
            )
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)


def _peer(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peername[0]}:{peername[1]}" if peername else ""


async def _read_request(request: web.Request) -> tuple[JsonDict, str | None]:
    """Arguments from the query, a form or a JSON body; the token from the header or a field."""
    params: JsonDict = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
        else:
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    if "blocks" in params:
        params["blocks"] = decode_blocks(params["blocks"])
    field_token = params.pop("token", None)
    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
    return params, token or field_token
