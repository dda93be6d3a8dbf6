"""How the bot is served: its HTTP routes (Slack events, health, readiness, metrics) and the
run loops of both modes, from the first signal handler to the last connection closed.

The bot itself (`app.SlackStream`) knows nothing of aiohttp's server: this module takes it as
a dependency, so what answers questions and what faces the network change apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import slack_http
from bot.app import SlackStream
from bot.handlers import ACTIONS, VIEWS
from bot.metrics import Metrics
from bot.store import StoreError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are far smaller; anything bigger is refused (413)
# Net allocations between two young-generation collections (Python's default is 700): see
# `run_until_signalled`.
GC_YOUNG_THRESHOLD = 20_000


def web_app(bot: SlackStream, *, with_events: bool = True) -> web.Application:
    """The aiohttp application: Slack endpoint (HTTP mode), health, readiness and metrics."""
    routes = Routes(bot)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    if with_events:
        app.router.add_post("/slack/events", routes.slack_events)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", routes.metrics)
    return app


class Routes:
    """The handlers of `web_app`'s routes, reading the bot's state (ready, draining)."""

    def __init__(self, bot: SlackStream) -> None:
        self.bot = bot

    async def slack_events(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, validate (`slack_http`), hand to Bolt. Refused while draining, so
        Slack retries elsewhere. Every hostile request gets a 4xx and one log line."""
        if self.bot.draining or not self.bot.ready:
            return web.json_response({"error": "not ready"}, status=503)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        secret = self.bot.settings.slack_signing_secret
        checked = _parse_slack_body(
            request, raw, secret.get_secret_value() if secret else None, time.time()
        )
        if isinstance(checked, slack_http.Refusal):
            log.info(
                "refused a request", extra={"status": checked.status, "reason": checked.reason}
            )
            error = "invalid signature" if checked.status == 401 else checked.reason
            return web.json_response({"error": error}, status=checked.status)
        if not checked.dispatch:
            log.info("acknowledged a request the bot has no listener for")
            return web.json_response({}, status=200)
        headers: dict[str, Any] = {name.lower(): v for name, v in request.headers.items()}
        headers["content-type"] = checked.content_type  # how it was validated is how Bolt reads it
        try:
            bolt_request = AsyncBoltRequest(
                body=checked.body, query=request.query_string, headers=headers
            )
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
            # Bolt reads fields `slack_http` did not check: refuse, and say so loudly.
            log.warning("refused a request Bolt cannot read", extra={"error": type(e).__name__})
            return web.json_response({"error": "malformed body"}, status=400)
        response = await self.bot.bolt.async_dispatch(bolt_request)
        if response.status == 404:
            # An event type we don't handle: acknowledge it, or Slack retries and counts failures.
            return web.json_response({}, status=200)
        return await to_aiohttp_response(response)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(1.0):
                await self.bot.store.ping()
            store_state = "ok"
        except (StoreError, TimeoutError):
            store_state = "degraded"
        ready = self.bot.ready and not self.bot.draining
        body = {
            "ready": ready,
            "draining": self.bot.draining,
            "store": {"kind": self.bot.store.kind, "state": store_state},
            "in_flight": len(self.bot.replier.running),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.bot.metrics.render(), headers={"Content-Type": Metrics.content_type}
        )


def _parse_slack_body(
    request: web.Request, raw: bytes, secret: str | None, now: float
) -> slack_http.Accepted | slack_http.Refusal:
    """The signature first, over the raw bytes, then the body (see `slack_http`)."""
    refusal = slack_http.authenticate(request.headers, raw, secret, now=now)
    return refusal or slack_http.read_body(raw, request.content_type, actions=ACTIONS, views=VIEWS)


async def run_until_signalled(
    bot: SlackStream,
    *,
    runner_setup: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
    open_intake: Callable[[SlackStream], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain. `runner_setup` starts serving HTTP and returns its
    stop; `open_intake` (Socket Mode) starts taking events once the bot can answer them.

    A signal during start-up (Slack or Redis unreachable, auth.test retrying) stops the start
    at once, and the process exits without waiting for it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reads CHANNEL_SETTINGS_FILE again (answers in flight keep their settings).
    loop.add_signal_handler(signal.SIGHUP, bot.reload_channel_settings)
    async with contextlib.AsyncExitStack() as stack:
        stop_serving = await runner_setup()
        stack.push_async_callback(stop_serving)  # unwound last: /healthz answers while draining
        stack.push_async_callback(bot.shutdown)
        started = time.monotonic()
        starting = asyncio.create_task(bot.start(), name="start-up")
        signalled = asyncio.create_task(stop.wait(), name="signals")
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.warning("stopped during start-up")
            starting.cancel()
            await asyncio.wait({starting})
            return
        signalled.cancel()
        starting.result()  # a start-up failure (a rejected token) ends the process here
        if open_intake is not None:
            await open_intake(bot)
        # What exists now (modules, the SDKs' models and schemas, clients) lives as long as the
        # process. Out of the collector's sight, it is no longer rescanned by every full
        # collection: under load those ran every few seconds and paused the loop for up to
        # 0.3 s at 300 answers in flight (measured), which is what Slack's event acks wait on.
        gc.freeze()
        # Nearly everything an answer allocates (events, payloads, futures) dies young, in
        # bursts; at Python's default (a young collection every 700 net allocations) 300
        # answers in flight ran ~900 young collections in 40 s, 2.8 s of collector time with
        # pauses up to 94 ms. At 20,000: 8 collections, 0.12 s (bench.overhead, measured).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        log.info("ready", extra={"startup_seconds": round(time.monotonic() - started, 3)})
        await stop.wait()
        bot.draining = True  # readiness and events answer 503 from this moment


async def start_http(bot: SlackStream, *, with_events: bool = True) -> tuple[web.AppRunner, str]:
    """Serve the bot's routes on HOST:PORT (PORT 0: a free port); returns the runner and the
    base URL it really listens on."""
    runner = web.AppRunner(
        web_app(bot, with_events=with_events), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.TCPSite(runner, bot.settings.host, bot.settings.port).start()
    host, port = runner.addresses[0][:2]
    log.info("listening", extra={"host": host, "port": port})
    return runner, f"http://{host}:{port}"


async def serve(bot: SlackStream) -> None:
    """HTTP mode: events, health and metrics on one aiohttp server."""

    async def setup() -> Callable[[], Awaitable[None]]:
        runner, _ = await start_http(bot)
        return runner.cleanup

    await run_until_signalled(bot, runner_setup=setup)


async def connect_socket_mode(bot: SlackStream) -> Any:
    """Open the Socket Mode connection; shutdown closes it first, before the drain. Call it
    once the bot has started: an event acknowledged earlier could not be answered."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    handler = AsyncSocketModeHandler(bot.bolt, bot.settings.secret("slack_app_token"))
    await handler.connect_async()  # type: ignore[no-untyped-call]
    bot.close_intake_first(handler.close_async)
    return handler


async def serve_socket_mode(bot: SlackStream) -> None:
    """Socket Mode: events over Slack's WebSocket; health and metrics still served over HTTP."""

    async def setup() -> Callable[[], Awaitable[None]]:
        runner, _ = await start_http(bot, with_events=False)
        return runner.cleanup

    await run_until_signalled(bot, runner_setup=setup, open_intake=connect_socket_mode)
