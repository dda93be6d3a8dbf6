"""One answer's life, driven through the phases of `lifecycle.py`:

    register (lease) ─> post the placeholder ─> stream and publish ─> finish ─> tombstone

Inside the answer's own task a TaskGroup holds its children (the lease's renewals, Claude's
stream), so none outlives the answer. Stopping is a `StopRequest` value read at defined points
(between edits, before finishing), set by the Stop button, by shutdown, by the lease (taken
over, or another registration answers the question) or by Slack refusing the message for
good. The answer's task is never cancelled to stop it; only its stream child is, by itself.

The finish and the tombstone are written by `finishing.Finisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anthropic

from bot import render
from bot.asking import Asking
from bot.bookkeeping import Bookkeeping
from bot.budgets import Calendar
from bot.channels import ChannelFile, resolve
from bot.claude import StreamState
from bot.config import Settings
from bot.finishing import Finisher
from bot.lease import Lease
from bot.lifecycle import Outcome, Phase, StopRequest, advance, shutdown
from bot.logs import ContextLog
from bot.message import AnswerMessage, AnswerRef, Sent
from bot.metrics import Metrics
from bot.pacing import EditKind, MessagePacer, PacingPolicy
from bot.publisher import Publisher
from bot.question import BotIdentity, Question
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import AnswerRecord, Registration, Store, StoreError
from bot.thread import ThreadReader
from bot.usage_ledger import AnswerProfile, UsageLedger

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Services:
    """What an answer works with; the replier builds it once."""

    slack: SlackCalls
    claude: anthropic.AsyncAnthropic
    store: Store
    settings: Settings
    metrics: Metrics
    policy: PacingPolicy
    threads: ThreadReader
    identity: Callable[[], BotIdentity]
    incarnation: str
    clock: Clock
    ledger: UsageLedger | None = None  # None: usage is not counted (nor budgets noted)


class Answer:
    """See the module docstring."""

    def __init__(
        self,
        services: Services,
        q: Question,
        *,
        dedupe_keys: Sequence[str] = (),
        verify_first: bool = False,
        profile: AnswerProfile | None = None,
    ) -> None:
        self.s = services
        self.q = q
        # Its channel's settings and usage period, decided at admission (default: the
        # environment's settings, counted today).
        self.profile = profile or default_profile(services, q)
        self.settings = self.profile.channel.apply(services.settings)
        self.answer_id = q.answer_id
        # The store lost its dedupe claims recently: look in the thread before answering.
        self.verify_first = verify_first
        self.log = ContextLog(log, {"answer_id": self.answer_id, "channel": q.channel})
        self.phase = Phase.REGISTERED
        self.stop: StopRequest | None = None
        self.ending = asyncio.Event()  # the stream ended, or a stop was requested
        self.hurry = asyncio.Event()  # the process is going away: wait for nothing any more
        self.state = StreamState()
        self.stream_error: BaseException | None = None
        settings = services.settings
        record = new_record(services, q, model=self.profile.channel.model, dedupe_keys=dedupe_keys)
        self.lease = Lease(
            store=services.store,
            metrics=services.metrics,
            lease_seconds=settings.stream_lease_seconds,
            record=record,
            on_stop=self.request_stop,
            log=self.log,
        )
        self.message = AnswerMessage(
            slack=services.slack,
            store=services.store,
            settings=settings,
            policy=services.policy,
            lease=self.lease,
            ref=AnswerRef.of(record),
            metrics=services.metrics,
            log=self.log,
            clock=services.clock,
            hurry=self.hurry,
        )
        self.publisher = Publisher(
            q=q,
            state=self.state,
            message=self.message,
            budget=self.message.budget,
            lease=self.lease,
            pacer=MessagePacer(services.policy),
            slack=services.slack,
            metrics=services.metrics,
            clock=services.clock,
            log=self.log,
            placeholder_text=settings.placeholder_text,
            interval=services.policy.interval,
            ending=self.ending,
            wanted=self._wanted,
            on_stop=self.request_stop,
        )
        self.books = Bookkeeping(
            q=q,
            profile=self.profile,
            settings=settings,
            metrics=services.metrics,
            ledger=services.ledger,
            clock=services.clock,
            log=self.log,
        )
        self.asking = Asking(
            q=q,
            settings=self.settings,
            slack=services.slack,
            store=services.store,
            claude=services.claude,
            threads=services.threads,
            identity=services.identity,
            context_budget=settings.context_token_budget,
            clock=services.clock,
            log=self.log,
            know=self._know,
            files=self.profile.channel.switch("files", True),  # CHANNEL_SETTINGS_FILE's `files`
        )
        self.finisher = Finisher(
            state=self.state,
            message=self.message,
            lease=self.lease,
            books=self.books,
            asking=self.asking,
            publisher=self.publisher,
            threads=services.threads,
            log=self.log,
            phase=lambda: self.phase,
            advance=self._advance,
            know=self._know,
            wanted=self._wanted,
        )

    # -- stopping --------------------------------------------------------------------------------

    def request_stop(self, request: StopRequest) -> bool:
        """Ask the answer to stop; the first request wins (False for later ones), except that
        news from the lease (another replica holds the answer) overrides a stop this replica
        would have finished itself."""
        if self.phase is Phase.FINISHED:
            return False
        current = self.stop
        overrides = current is not None and current.finishes_here and not request.finishes_here
        if current is not None and not overrides:
            return False
        self.stop = request
        self.log.info("stop requested", extra={"kind": str(request.kind), "detail": request.detail})
        self.ending.set()
        self.state.changed.set()
        return True

    def _advance(self, to: Phase) -> None:
        self.phase = advance(self.phase, to)

    def _wanted(self) -> bool:
        """Whether edits are still worth making: the lease holds and nothing says otherwise."""
        return self.lease.held and (self.stop is None or self.stop.finishes_here)

    # -- the life --------------------------------------------------------------------------------

    async def run(self, *, draining: Callable[[], bool]) -> Outcome:
        """Answer, and always end in a finished message (or hand it to whoever finishes it).
        Never raises: a bug ends the answer with `[interrupted]` and one logged traceback."""
        metrics = self.s.metrics
        metrics.answers_in_flight.inc()
        outcome = Outcome.ABANDONED
        try:
            async with asyncio.TaskGroup() as children:
                outcome = await self._live(children, draining)
        except Exception:
            self.log.exception("answer failed unexpectedly")
            outcome = await self.finisher.after_bug()
        finally:
            self.lease.release()
            metrics.answers_in_flight.dec()
            metrics.answers_finished.labels(str(outcome)).inc()
            metrics.answer_duration.observe(self.s.clock() - self.q.received_at)
        return outcome

    async def _live(self, children: asyncio.TaskGroup, draining: Callable[[], bool]) -> Outcome:
        if self.verify_first and await self._answered_in_thread():
            return Outcome.DUPLICATE
        registration = await self._register()
        if registration is not None and not registration.registered:
            holder = registration.existing
            self.log.info(
                "question already answered by another registration; not answering it again",
                extra={"holder": holder.owner if holder else ""},
            )
            return Outcome.DUPLICATE
        children.create_task(self.lease.keep(), name=f"lease-{self.answer_id}")
        sent = await self.message.post(
            render.placeholder_payload(self.s.settings.placeholder_text, answer_id=self.answer_id)
        )
        if not sent.delivered:
            return await self._not_posted(sent)
        self._advance(Phase.POSTED)
        self.lease.note(message_ts=self.message.ts, phase=Phase.POSTED)
        self.lease.renew_soon()  # the store learns which message is ours at once
        self.s.metrics.answers_started.inc()
        if draining() and self.stop is None:
            self.request_stop(shutdown())
        if self.stop is None:
            self._advance(Phase.STREAMING)
            self.lease.note(phase=Phase.STREAMING)
            await self._stream_and_publish(children)
        return await self.finisher.finish(self.stop, self.stream_error)

    async def _register(self) -> Registration | None:
        """None when the store is unreachable: the answer goes on unregistered (degraded)."""
        try:
            return await self.lease.register()
        except StoreError:
            self.log.warning("store unreachable: answer not registered for recovery")
            return None

    async def _answered_in_thread(self) -> bool:
        """After the store lost its dedupe claims (an empty restart), a retried event may be a
        question answered, or being answered, before: its messages carry this answer's id.
        Looked for before registering, so a duplicate leaves nothing behind."""
        try:
            parts = await self.message.find()
        except SlackFailure:
            return False
        if parts:
            self.log.warning("question already answered in the thread; not answering it again")
        return bool(parts)

    async def _not_posted(self, sent: Sent) -> Outcome:
        error = sent.failure.error if sent.failure else ""
        if sent.refusal is not None:
            self.log.error("could not post the placeholder", extra={"error": error})
            await self.lease.finish(str(Outcome.UNDELIVERABLE))
            return Outcome.UNDELIVERABLE
        # The record stays with its lease: a janitor posts the interruption once Slack takes it.
        self.log.error(
            "could not post the placeholder; leaving it to a janitor", extra={"error": error}
        )
        return Outcome.ABANDONED

    # -- streaming -------------------------------------------------------------------------------

    async def _stream_and_publish(self, children: asyncio.TaskGroup) -> None:
        stream = children.create_task(self._stream(), name=f"stream-{self.answer_id}")
        await self.publisher.run()
        if not stream.done():
            stream.cancel()  # a stop: the answer's own child, closed with its connection
        await asyncio.wait({stream})

    async def _stream(self) -> None:
        """Fold Claude's stream into `self.state`; a failure is kept for the publisher."""
        st = self.state
        try:
            await self.asking.wait_turn(
                stopped=lambda: self.stop is not None, waiting=self._show_waiting
            )
            await self.asking.stream(st, own_ts=self.message.ts)
        except Exception as e:
            self.stream_error = e
        finally:
            st.done.set()
            self.ending.set()
            st.changed.set()

    async def _show_waiting(self) -> None:
        self.log.info("waiting for an earlier answer in the thread")
        with contextlib.suppress(SlackFailure):
            await self.message.update(
                render.placeholder_payload(
                    "Waiting for the answer above to finish…", answer_id=self.answer_id
                ),
                EditKind.STATUS,
                wanted=self._wanted,
            )

    def _know(self, names: dict[str, str]) -> None:
        """People Claude may mention are shown by name (never notified unless allowed)."""
        known = {**self.message.mentions.names, **names}
        self.message.mentions = render.Mentions(
            names=known, live_users=self.s.settings.allow_user_mentions
        )


def new_record(
    services: Services, q: Question, *, model: str, dedupe_keys: Sequence[str]
) -> AnswerRecord:
    """The store's record of a new answer, owned by this replica: its first lease token is
    also its origin, which tells its own registrations apart after the store is emptied."""
    token = f"{services.incarnation}:{uuid.uuid4().hex[:12]}"
    return AnswerRecord(
        answer_id=q.answer_id,
        team_id=q.team_id,
        channel=q.channel,
        thread_ts=q.thread_ts,
        question_ts=q.ts,
        asker=q.user,
        owner=services.settings.replica_id,
        incarnation=services.incarnation,
        token=token,
        origin=token,
        model=model,
        dedupe_keys=tuple(dedupe_keys),
    )


def default_profile(services: Services, q: Question) -> AnswerProfile:
    """An answer admitted without a profile: the environment's settings, counted today."""
    calendar = services.ledger.calendar if services.ledger is not None else Calendar()
    return AnswerProfile(
        channel=resolve(services.settings, ChannelFile(), q.channel), period=calendar.period()
    )
