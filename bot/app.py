"""Composition root: builds clients, store and Bolt app; runs start-up and shutdown.

Nothing here decides how an answer is produced: that is `reply`; which events are answered is
`admission`; when edits go out is `pacing`; the Home tab is `home_tab`; HTTP routes and run
loops are `serving`. This module only connects them and owns the bot's lifecycle (ready,
draining, closing what it opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.admission import ADMISSION_TIMEOUT_SECONDS, Admission
from bot.budgets import Budgets, Calendar, time_zone
from bot.channels import ChannelDirectory
from bot.config import Settings
from bot.feedback import FeedbackDesk
from bot.handlers import register_listeners
from bot.home_tab import HomeTab
from bot.janitor import Janitor
from bot.lifecycle import Phase, stopped_by
from bot.metrics import Metrics
from bot.pacing import PacingPolicy
from bot.question import BotIdentity
from bot.reply import HURRY_SECONDS, Replier
from bot.retry import Backoff
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import (
    InstrumentedStore,
    MemoryStore,
    RedisStore,
    Store,
    StoreError,
)
from bot.usage_ledger import UsageLedger

log = logging.getLogger(__name__)

# Connections to Slack kept by the shared session (about one per answer editing at that moment).
SLACK_MAX_CONNECTIONS = 1000
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
    """One running bot: Bolt listeners, the replier, the janitor, the Home tab, background
    work (`serving` puts it on the network). `start()` opens what the bot needs, each resource
    with its closing registered in one exit stack; `shutdown()` drains the answers, then
    unwinds the stack in reverse."""

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
        self.ledger = UsageLedger(
            store=self.store, metrics=self.metrics, budgets=self.budgets, calendar=self.calendar
        )
        self.replier = Replier(
            slack=self.slack,
            claude=self.claude,
            store=self.store,
            settings=settings,
            metrics=self.metrics,
            identity=self._identity,
            policy=policy,
            ledger=self.ledger,
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
            feedback=self.feedback_desk.recovered_buttons,
            ledger=self.ledger,
        )
        self.home_tab = HomeTab(
            slack=self.slack,
            store=self.store,
            claude=self.claude,
            channels=self.channels,
            calendar=self.calendar,
            budgets=self.budgets,
            in_background=self._in_background,
            default_team=lambda: self._identity().team_id,
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
        register_listeners(self.bolt, self, self.home_tab)
        self._resources = contextlib.AsyncExitStack()
        self._intake: set[asyncio.Task[None]] = set()  # acknowledged events being admitted
        self._intake_closers: list[Callable[[], Awaitable[None]]] = []
        self._ui: set[asyncio.Task[None]] = set()  # Home tab updates, modals, feedback votes
        self._stopped = asyncio.Event()
        self._shut_down = False

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
            asyncio.create_task(self.replier.follow_cancels(self._stopped), name="cancel-signals"),
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
        if user != asker and not await self.slack.is_admin(user):
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

    async def _tell(self, channel: str, user: str, text: str) -> None:
        with contextlib.suppress(SlackFailure):
            await self.slack.call("chat.postEphemeral", channel=channel, user=user, text=text)

    # -- Channel settings, feedback, background UI work ----------------------------------------

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
