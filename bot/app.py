"""Composition root: builds clients, store, Bolt app and aiohttp app; runs start-up and shutdown.

Nothing here decides how an answer is produced: that is `reply`; which events are answered is
`admission`; when edits go out is `pacing`. This module only connects them and owns the process
lifecycle (ready, draining on SIGTERM, exit).
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

import aiohttp
import anthropic
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot import home, render, slack_http
from bot.admission import ADMISSION_TIMEOUT_SECONDS, Admission
from bot.budgets import Budgets, Calendar, time_zone
from bot.channels import ChannelDirectory
from bot.config import Settings
from bot.feedback import FeedbackDesk, Rated
from bot.handlers import ACTIONS, VIEWS, register_listeners
from bot.janitor import Janitor
from bot.lifecycle import Phase, stopped_by
from bot.metrics import Metrics
from bot.pacing import PacingPolicy
from bot.question import BotIdentity
from bot.reply import HURRY_SECONDS, Replier
from bot.retry import Backoff
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import (
    AnswerRecord,
    ChannelOverride,
    InstrumentedStore,
    MemoryStore,
    RedisStore,
    SpendView,
    Store,
    StoreError,
)
from bot.usage_ledger import UsageLedger

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are far smaller; anything bigger is refused (413)
# Connections to Slack kept by the shared session (about one per answer editing at that moment).
SLACK_MAX_CONNECTIONS = 1000
# How long a model named in the channel settings modal is looked up at Claude (the modal's
# answer must reach Slack within 3 s); a lookup that fails otherwise accepts the name.
MODEL_LOOKUP_SECONDS = 1.5
UI_DRAIN_SECONDS = 3.0  # at shutdown, Home tab updates and votes in progress get this long


def build_store(settings: Settings) -> Store:
    """Redis when REDIS_URL is set; otherwise an in-process store good for one replica only."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url)
    log.warning(
        "REDIS_URL is not set: using an in-process store; run ONE replica only "
        "(answers in flight are not recoverable after a crash)"
    )
    return MemoryStore()


def build_slack_client(settings: Settings) -> AsyncWebClient:
    """The Slack Web API client (Bolt uses it too); it gets its session from `slack_session`."""
    return AsyncWebClient(
        token=settings.secret("slack_bot_token"),
        base_url=settings.slack_api_url,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2)],
    )


def slack_session(client: AsyncWebClient) -> aiohttp.ClientSession:
    """One aiohttp session for every call of `client`, and of Bolt's per-request clients, which
    copy it: kept-alive connections instead of slack-sdk's default of a new session, and TCP
    connection, per call. Call it inside the running loop, as aiohttp requires."""
    return aiohttp.ClientSession(
        # slack-sdk applies its timeout only to the sessions it makes itself.
        timeout=aiohttp.ClientTimeout(total=client.timeout),
        connector=aiohttp.TCPConnector(limit=SLACK_MAX_CONNECTIONS),
    )


def build_claude(settings: Settings) -> anthropic.AsyncAnthropic:
    """The Claude client the bot streams with. The SDK's aiohttp transport: per streamed event
    it costs about a third of the CPU of the default httpx2 one, and streaming is most of what
    the bot does. Its connections open inside the running loop, at the first request."""
    return anthropic.AsyncAnthropic(
        api_key=settings.secret("anthropic_api_key"),
        base_url=settings.anthropic_base_url,
        max_retries=2,
        http_client=anthropic.DefaultAioHttpClient(),
    )


class _TokenUnusedFilter(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment even when it is given a client, then
    warns that the token will be unused. It is the client's own token: the warning is noise on
    every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def bolt_logger() -> logging.Logger:
    logger = logging.getLogger("slack_bolt")
    if not any(isinstance(f, _TokenUnusedFilter) for f in logger.filters):
        logger.addFilter(_TokenUnusedFilter())
    return logger


class SlackStream:
    """One running bot: Bolt listeners, the replier, the janitor, background work, the HTTP
    routes. `start()` opens what the bot needs, each resource with its closing registered in
    one exit stack; `shutdown()` drains the answers, then unwinds the stack in reverse."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        slack_client: AsyncWebClient | None = None,
        claude: anthropic.AsyncAnthropic | None = None,
        metrics: Metrics | None = None,
        policy: PacingPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # Per-channel settings (the file is read here: a mistake stops start-up in one line
        # per mistake), the usage calendar and the budgets.
        self.channels = ChannelDirectory(settings)
        self.calendar = Calendar(time_zone(settings.usage_timezone), wall_clock)
        self.budgets = Budgets(
            user_day_tokens=settings.user_daily_token_budget,
            user_month_cost_usd=settings.user_monthly_cost_budget_usd,
            workspace_month_cost_usd=settings.workspace_monthly_cost_budget_usd,
        )
        # Every store call is measured, whoever makes it.
        self.store: Store = InstrumentedStore(store or build_store(settings), self.metrics)
        # A client made here gets one shared aiohttp session at start(); a given one is the
        # caller's, left as it is.
        self._owns_slack_client = slack_client is None
        self.slack_client = slack_client or build_slack_client(settings)
        self.claude = claude or build_claude(settings)
        self.slack = SlackCalls(self.slack_client, self.metrics)
        self.identity: BotIdentity | None = None
        self.ready = False
        self.draining = False
        self.replier = Replier(
            slack=self.slack,
            claude=self.claude,
            store=self.store,
            settings=settings,
            metrics=self.metrics,
            identity=self._identity,
            policy=policy,
            ledger=UsageLedger(
                store=self.store, metrics=self.metrics, budgets=self.budgets, calendar=self.calendar
            ),
        )
        self.admission = Admission(
            store=self.store,
            settings=settings,
            metrics=self.metrics,
            answering_here=lambda: [answer.q for answer in self.replier.running.values()],
            channels=self.channels,
            budgets=self.budgets,
            calendar=self.calendar,
        )
        self.feedback_desk = FeedbackDesk(
            store=self.store, metrics=self.metrics, calendar=self.calendar
        )
        self.janitor = Janitor(
            store=self.store,
            slack=self.slack,
            settings=settings,
            metrics=self.metrics,
            policy=self.replier.services.policy,
            incarnation=self.replier.incarnation,
            feedback=self._recovered_feedback,
        )
        self.bolt = AsyncApp(
            client=self.slack_client,
            # Signatures are checked once, before Bolt sees a request (`slack_http`); Socket
            # Mode has none. An empty secret keeps Bolt from reading SLACK_SIGNING_SECRET.
            signing_secret="",
            request_verification_enabled=False,
            # Listeners only hand the event to a tracked task (`ask`), so running them before
            # the ack costs nothing and no acknowledged event is left untracked.
            process_before_response=True,
            logger=bolt_logger(),
        )
        register_listeners(self.bolt, self)
        self._resources = contextlib.AsyncExitStack()
        self._intake: set[asyncio.Task[None]] = set()  # acknowledged events being admitted
        self._intake_closers: list[Callable[[], Awaitable[None]]] = []
        self._ui: set[asyncio.Task[None]] = set()  # Home tab updates, modals, feedback votes
        self._stopped = asyncio.Event()
        self._shut_down = False

    def _recovered_feedback(self, record: AnswerRecord) -> render.FeedbackButtons | None:
        """The feedback buttons of an answer a janitor finishes with its owner's footer (its
        votes count on the day it is recovered, for the model it was asked of)."""
        if not record.text.strip():
            return None
        day = self.calendar.period().day
        return Rated(record.answer_id, day, record.channel, record.model, record.asker).buttons()

    def _identity(self) -> BotIdentity:
        if self.identity is None:
            raise RuntimeError("the bot identity is known only after start()")
        return self.identity

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the clients, learn who the bot is (auth.test), recover this replica's answers
        from an earlier process, start the background work; then the bot is ready. Cancelling
        it (SIGTERM while Slack is unreachable) leaves only opened resources to `shutdown()`."""
        stack = self._resources
        stack.push_async_callback(self.store.close)  # opened first, closed last
        stack.push_async_callback(self._close_claude)
        if self._owns_slack_client and self.slack_client.session is None:
            self.slack_client.session = slack_session(self.slack_client)
            stack.push_async_callback(self._close_slack_session)
        self.identity = await self._learn_identity()
        log.info(
            "connected to Slack",
            extra={
                "bot_user_id": self.identity.user_id,
                "store": self.store.kind,
                "replica": self.settings.replica_id,
                "incarnation": self.replier.incarnation,
            },
        )
        await self.janitor.sweep(previous_owner=self.settings.replica_id)
        background = [
            asyncio.create_task(self._forward_cancels(), name="cancel-signals"),
            asyncio.create_task(self.janitor.run(self._stopped), name="janitor"),
        ]
        stack.push_async_callback(self._stop_background, background)
        self.ready = True

    async def _learn_identity(self) -> BotIdentity:
        backoff = Backoff()
        while True:
            try:
                data = await self.slack.call("auth.test")
            except SlackFailure as e:
                if e.permanent:
                    raise
                log.warning("auth.test failed; retrying", extra={"error": e.error})
                await asyncio.sleep(backoff.delay(e.retry_after) or backoff.cap)
                continue
            return BotIdentity(
                user_id=str(data.get("user_id") or ""),
                bot_id=str(data.get("bot_id") or ""),
                team_id=str(data.get("team_id") or ""),
            )

    def close_intake_first(self, close: Callable[[], Awaitable[None]]) -> None:
        """Register how to stop taking events (the Socket Mode connection): it runs first at
        shutdown, before the drain, so no new event has to be interrupted."""
        self._intake_closers.append(close)

    async def shutdown(self) -> None:
        """Drain: refuse new events, give answers the grace period, stop the rest and let them
        finish, then close everything `start()` opened, in reverse. Bounded: it returns within
        SHUTDOWN_GRACE_SECONDS plus about 15 s, whatever Slack, Claude or Redis do."""
        if self._shut_down:
            return
        self._shut_down = True
        self.draining = True
        for close_intake in self._intake_closers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await close_intake()
        if self._intake:  # acknowledged events become answers (admission is bounded)
            await asyncio.wait(set(self._intake), timeout=ADMISSION_TIMEOUT_SECONDS)
        log.info(
            "draining",
            extra={
                "grace_seconds": self.settings.shutdown_grace_seconds,
                "in_flight": len(self.replier.running),
            },
        )
        await self.replier.drain(self.settings.shutdown_grace_seconds)
        if self._ui:
            await asyncio.wait(set(self._ui), timeout=UI_DRAIN_SECONDS)
        self._stopped.set()
        await self.janitor.close(within=HURRY_SECONDS)
        async with asyncio.timeout(10.0):
            await self._resources.aclose()
        log.info("stopped")

    async def _stop_background(self, tasks: list[asyncio.Task[None]]) -> None:
        self._stopped.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_claude(self) -> None:
        with contextlib.suppress(Exception):
            await self.claude.close()  # and the connections of its aiohttp transport

    async def _close_slack_session(self) -> None:
        session = self.slack_client.session
        if session is not None:
            self.slack_client.session = None
            await session.close()

    async def _forward_cancels(self) -> None:
        """Stop signals from any replica, delivered to the answers streaming here."""
        backoff = Backoff()
        while not self._stopped.is_set():
            try:
                async for answer_id, user in self.store.cancel_signals():
                    self.replier.stop(answer_id, stopped_by(user))
                    backoff.reset()
            except StoreError as e:
                log.warning("cancel signals interrupted; resubscribing", extra={"error": str(e)})
            if self._stopped.is_set():
                return
            await asyncio.sleep(backoff.delay() or backoff.cap)

    # -- Dispatcher (called by the Bolt listeners) ---------------------------------------------

    async def ask(self, event: dict[str, Any], *, event_id: str | None, team_id: str) -> None:
        """Take the event in a tracked task and return at once, so Slack's ack goes out now and
        shutdown still answers every event that was acknowledged."""
        self.metrics.events.labels(str(event.get("type") or "unknown")).inc()
        task = asyncio.create_task(self._admit(event, event_id=event_id, team_id=team_id))
        self._intake.add(task)
        task.add_done_callback(self._intake.discard)

    async def _admit(self, event: dict[str, Any], *, event_id: str | None, team_id: str) -> None:
        identity = self._identity()
        verdict, intake = await self.admission.admit(
            event,
            event_id=event_id,
            team_id=team_id or identity.team_id,
            bot_user_id=identity.user_id,
        )
        question = intake.question
        if verdict.refusal is not None and question is not None:
            await self.replier.refuse(question, verdict.refusal)
        elif verdict.answer and question is not None:
            self.replier.start(
                question,
                dedupe_keys=intake.dedupe_keys,
                verify_first=intake.verify_first,
                profile=intake.profile,
            )
        else:
            log.debug("event not answered", extra={"reason": verdict.reason})

    async def stop(self, *, answer_id: str, user: str, channel: str, team_id: str) -> None:
        """Stop pressed: only the asker or a workspace admin may; the owner replica obeys."""
        try:
            record = await self.store.get(answer_id)
        except StoreError:
            running = self.replier.running.get(answer_id)
            if running is None:
                await self._tell(channel, user, "I can't stop that answer right now; try again.")
                return
            asker = running.q.user
        else:
            if record is None or record.phase is Phase.FINISHED:
                await self._tell(channel, user, "That answer has already finished.")
                return
            asker = record.asker
        if user != asker and not await self._is_admin(user):
            await self._tell(
                channel,
                user,
                "Only the person who asked, or a workspace admin, can stop this answer.",
            )
            return
        log.info("stop requested", extra={"answer_id": answer_id, "by": user})
        self.replier.stop(answer_id, stopped_by(user))
        with contextlib.suppress(StoreError):
            await self.store.request_cancel(answer_id, user)

    async def _is_admin(self, user: str) -> bool:
        try:
            data = await self.slack.call("users.info", user=user)
        except SlackFailure:
            return False
        info = data.get("user") or {}
        return bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))

    async def _tell(self, channel: str, user: str, text: str) -> None:
        with contextlib.suppress(SlackFailure):
            await self.slack.call("chat.postEphemeral", channel=channel, user=user, text=text)

    # -- Channel settings, the Home tab, feedback ----------------------------------------------

    def reload_channel_settings(self) -> bool:
        """SIGHUP: read CHANNEL_SETTINGS_FILE again. Answers in flight keep the settings they
        started with; a file with mistakes is refused and the settings in force stay."""
        return self.channels.reload()

    def _in_background(self, work: Awaitable[object], name: str) -> None:
        """Run UI work in a tracked task, so Slack's ack goes out at once."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work failed", extra={"work": name})

        task = asyncio.create_task(run(), name=name)
        self._ui.add(task)
        task.add_done_callback(self._ui.discard)

    def feedback(self, *, user: str, team_id: str, value: object) -> None:
        """A feedback button was clicked: acknowledged already, recorded in the background."""
        team = team_id or self._identity().team_id
        self._in_background(
            self.feedback_desk.vote(team_id=team, voter=user, value=value), "feedback"
        )

    def home_opened(self, *, user: str, team_id: str) -> None:
        self._in_background(self.publish_home(user, team_id or self._identity().team_id), "home")

    async def publish_home(self, user: str, team_id: str) -> None:
        """Publish `user`'s Home tab: their usage; for an admin, the admin section too."""
        period = self.calendar.period()
        spend: SpendView | None
        try:
            spend = await self.store.usage_spend(team_id, user, day=period.day, month=period.month)
        except StoreError:
            spend = None
        admin = None
        if await self._is_admin(user):
            admin = await self._admin_facts(team_id, period.month + "-01", period.day)
        view = home.home_view(
            home.HomeFacts(user=user, period=period, budgets=self.budgets, spend=spend, admin=admin)
        )
        try:
            await self.slack.call("views.publish", user_id=user, view=view)
        except SlackFailure as e:
            log.warning("could not publish the Home tab", extra={"error": e.error})

    async def _admin_facts(self, team_id: str, since: str, until: str) -> home.AdminFacts:
        try:
            overrides = await self.store.channel_overrides(team_id)
            cells = await self.store.usage_cells(since=since, until=until, team_id=team_id)
        except StoreError:
            overrides, cells = {}, []
        channel_file = self.channels.file
        return home.AdminFacts(
            defaults=self.channels.resolve(""),
            file_path=channel_file.path,
            file_channels={c: self.channels.resolve(c) for c in channel_file.channels},
            overrides=overrides,
            cells=cells,
            zone=self.calendar.zone,
        )

    def open_channel_settings(
        self, *, user: str, team_id: str, trigger_id: str, channel: str
    ) -> None:
        self._in_background(
            self._open_channel_settings(
                user, team_id or self._identity().team_id, trigger_id, channel
            ),
            "channel-settings",
        )

    async def _open_channel_settings(
        self, user: str, team_id: str, trigger_id: str, channel: str
    ) -> None:
        if not await self._is_admin(user):
            log.info("refused to open channel settings for a non-admin", extra={"user": user})
            return
        override: ChannelOverride | None = None
        if channel:
            try:
                override = (await self.store.channel_overrides(team_id)).get(channel)
            except StoreError:
                override = self.channels.last_override(team_id, channel)
        try:
            await self.slack.call(
                "views.open", trigger_id=trigger_id, view=home.settings_modal(channel, override)
            )
        except SlackFailure as e:
            log.warning("could not open the channel settings", extra={"error": e.error})

    async def channel_settings_submitted(
        self, *, user: str, team_id: str, view: dict[str, Any]
    ) -> dict[str, str] | None:
        """An admin saved the modal: store the override (None back), or say what is wrong
        per block. Anyone else is refused, whatever the request says."""
        if not await self._is_admin(user):
            log.info("refused channel settings from a non-admin", extra={"user": user})
            return {"channel": "Only workspace admins can change a channel's settings."}
        submitted = home.read_submission(view)
        if isinstance(submitted, dict):
            return submitted
        if submitted.model and not await self._model_exists(submitted.model):
            return {"model": f"Claude has no model named {submitted.model}."}
        override = None
        if not submitted.clears:
            override = ChannelOverride(
                system_prompt=submitted.system_prompt,
                model=submitted.model,
                by=user,
                at=self.calendar.clock(),
            )
        team = team_id or self._identity().team_id
        try:
            await self.store.set_channel_override(team, submitted.channel, override)
        except StoreError:
            return {"channel": "The settings could not be saved right now; please try again."}
        self.channels.remember(team, submitted.channel, override)
        log.info(
            "channel settings changed from Slack",
            extra={
                "channel": submitted.channel,
                "by": user,
                "model": submitted.model,
                "prompt_chars": len(submitted.system_prompt),
                "removed": override is None,
            },
        )
        self._in_background(self.publish_home(user, team), "home")
        return None

    async def _model_exists(self, model: str) -> bool:
        """False only when Claude says it has no such model; any other failure accepts it."""
        try:
            async with asyncio.timeout(MODEL_LOOKUP_SECONDS):
                await self.claude.models.retrieve(model)
        except anthropic.NotFoundError:
            return False
        except (anthropic.APIError, TimeoutError):
            return True
        return True

    # -- HTTP ----------------------------------------------------------------------------------

    def web_app(self, *, with_events: bool = True) -> web.Application:
        """The aiohttp application: Slack endpoint (HTTP mode), health, readiness and metrics."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        if with_events:
            app.router.add_post("/slack/events", self._slack_events)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _slack_events(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, validate (`slack_http`), hand to Bolt. Refused while draining, so
        Slack retries elsewhere. Every hostile request gets a 4xx and one log line."""
        if self.draining or not self.ready:
            return web.json_response({"error": "not ready"}, status=503)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        secret = self.settings.slack_signing_secret
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
        response = await self.bolt.async_dispatch(bolt_request)
        if response.status == 404:
            # An event type we don't handle: acknowledge it, or Slack retries and counts failures.
            return web.json_response({}, status=200)
        return await to_aiohttp_response(response)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(1.0):
                await self.store.ping()
            store_state = "ok"
        except (StoreError, TimeoutError):
            store_state = "degraded"
        ready = self.ready and not self.draining
        body = {
            "ready": ready,
            "draining": self.draining,
            "store": {"kind": self.store.kind, "state": store_state},
            "in_flight": len(self.replier.running),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": Metrics.content_type}
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
        log.info("ready", extra={"startup_seconds": round(time.monotonic() - started, 3)})
        await stop.wait()
        bot.draining = True  # readiness and events answer 503 from this moment


async def start_http(bot: SlackStream, *, with_events: bool = True) -> tuple[web.AppRunner, str]:
    """Serve the bot's routes on HOST:PORT (PORT 0: a free port); returns the runner and the
    base URL it really listens on."""
    runner = web.AppRunner(
        bot.web_app(with_events=with_events), access_log=None, handle_signals=False
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
