"""An answer's claim in the store, from registration to its tombstone.

The lease is a token the store handed out at registration (or at a take-over) and renews on
the store's clock every third of `STREAM_LEASE_SECONDS`. Every store call made for the answer
carries it, together with a checkpoint of what the answer's message shows, so that the store
always holds at least what readers saw. What comes back is handled here, in one place:

- a Stop pressed on any replica becomes a `StopRequest` for the answer;
- a record the store lost (a Redis restarted empty) is registered again at once, with its
  dedupe keys, and wins over a newer registration of the same question;
- a lease another replica now holds stops the answer: quietly, when the new holder carries on
  with this same registration (it finishes this same message), or by removing our message
  when another registration answers the question in a message of its own.

While the store is unreachable nothing is lost or stopped: the answer streams on, degraded,
and the lease is renewed again once the store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from bot.lifecycle import Phase, StopKind, StopRequest, stopped_by
from bot.logs import ContextLog
from bot.metrics import Metrics
from bot.retry import Backoff
from bot.store import (
    AnswerRecord,
    Checkpoint,
    LeaseReport,
    LeaseState,
    Registration,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

DEDUPE_TTL_SECONDS = 6 * 3600  # well past Slack's last retry (~5 min) and any clock skew
FINISH_RETRY_SECONDS = 30.0  # how long a tombstone is retried while the store is unreachable
TAKEN_OVER_REASON = "another replica finishes this answer"
DISPLACED_REASON = "another replica answers this question"


@dataclass
class Outbox:
    """A checkpoint on its way to the store with one call; the caller says what became of it."""

    checkpoint: Checkpoint | None
    applied: bool = False
    rejected: bool = False  # the text did not line up: send it whole next time


class Lease:
    """See the module docstring. `snapshot()` gives the answer's record as it stands (to
    register it again); `on_stop` receives the requests the store's answers imply."""

    def __init__(
        self,
        *,
        store: Store,
        metrics: Metrics,
        lease_seconds: float,
        record: AnswerRecord,
        on_stop: Callable[[StopRequest], object],
        log: ContextLog,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.answer_id = record.answer_id
        self.token = record.token
        self.origin = record.origin or record.token
        self._record = record  # what was registered, updated by note(): the snapshot
        self._on_stop = on_stop
        self.log = log
        self.state = LeaseState.HELD
        self.registered = False
        self.renewed_at_least_once = False
        # What the store holds of the text (characters and UTF-8 bytes); None: unknown.
        self._stored_chars = len(record.text)
        self._stored_bytes: int | None = len(record.text.encode())
        self._pending: dict[str, object] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._released = asyncio.Event()

    @property
    def period(self) -> float:
        return max(0.05, min(self.lease_seconds / 3, 5.0))

    @property
    def held(self) -> bool:
        return self.state is LeaseState.HELD

    # -- what the answer shows ---------------------------------------------------------------

    def note(self, *, text: str | None = None, **fields: object) -> None:
        """Declare what the message shows (or is about to show): the text so far, and any of
        message_ts, part, offset, phase, footer, notes; and Claude's usage so far. It reaches
        the store with the next call that carries the lease: the next edit's budget request or
        the next renewal."""
        changes = fields if text is None else {**fields, "text": text}
        if changes:
            self._record = replace(self._record, **changes)  # type: ignore[arg-type]
        self._pending.update(fields)

    def snapshot(self) -> AnswerRecord:
        return self._record

    def _checkpoint(self) -> Checkpoint | None:
        text = self._record.text
        append: str | None = None
        text_at: int | None = None
        if self._stored_bytes is None:
            append = text
        elif len(text) > self._stored_chars:
            append, text_at = text[self._stored_chars :], self._stored_bytes
        checkpoint = Checkpoint(text=append, text_at=text_at, **self._pending)  # type: ignore[arg-type]
        return checkpoint if checkpoint else None

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[Outbox]:
        """One store call carrying the pending checkpoint; only one at a time, so two calls
        never append the same text."""
        async with self._lock:
            outbox = Outbox(self._checkpoint())
            yield outbox
            if outbox.rejected:
                self._stored_bytes = None
            elif outbox.applied and outbox.checkpoint is not None:
                self._committed(outbox.checkpoint)

    def _committed(self, checkpoint: Checkpoint) -> None:
        if checkpoint.text is not None:
            self._stored_chars = len(self._record.text)
            self._stored_bytes = len(self._record.text.encode())
        for name in list(self._pending):
            if getattr(checkpoint, name, None) == self._pending[name]:
                del self._pending[name]

    # -- registration ----------------------------------------------------------------------------

    async def register(self, *, take_back: bool = False) -> Registration:
        """Register the answer (a new one, or again after the store lost it)."""
        record = self._record
        async with self._lock:
            registration = await self.store.register(
                record,
                lease_seconds=self.lease_seconds,
                take_back=take_back,
                dedupe_ttl_seconds=DEDUPE_TTL_SECONDS,
            )
            if registration.registered:
                self.registered = True
                self._stored_chars = len(record.text)
                self._stored_bytes = len(record.text.encode())
                self._pending.clear()
        return registration

    # -- renewal ---------------------------------------------------------------------------------

    async def keep(self) -> None:
        """Renew every `period` (sooner when `renew_soon()` asks) until `release()`."""
        while not self._released.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await self._wake.wait()
            self._wake.clear()
            if self._released.is_set():
                return
            await self.renew()

    def renew_soon(self) -> None:
        self._wake.set()

    def release(self) -> None:
        """Stop renewing: the answer is finished, handed over, or left to a janitor."""
        self._released.set()
        self._wake.set()

    async def renew(self) -> LeaseReport | None:
        """One renewal with the pending checkpoint; None while the store is unreachable. An
        answer whose registration failed (the store was unreachable) registers here once the
        store answers: a registration that did land meanwhile is recognised by its token."""
        if not self.held:
            return None
        if not self.registered:
            await self._register_late()
            return None
        try:
            async with self.sending() as outbox:
                report = await self.store.renew(
                    self.answer_id,
                    self.token,
                    lease_seconds=self.lease_seconds,
                    checkpoint=outbox.checkpoint,
                )
                outbox.applied = report.state is LeaseState.HELD and not report.text_rejected
                outbox.rejected = report.text_rejected
        except StoreError as e:
            self.log.warning("lease not renewed: store unreachable", extra={"error": str(e)})
            return None
        self.renewed_at_least_once = True
        await self.heard(report.state, holder=report.holder, stop_by=report.stop_by)
        return report

    async def heard(
        self, state: LeaseState, *, holder: AnswerRecord | None = None, stop_by: str | None = None
    ) -> None:
        """React to what a store call said about the lease (a renewal or an edit's grant)."""
        if not self.held:
            return
        if state is LeaseState.HELD:
            if stop_by:
                self._on_stop(stopped_by(stop_by))
            return
        if state is LeaseState.MISSING:
            await self._register_again()
            return
        if holder is None:
            with contextlib.suppress(StoreError):
                holder = await self.store.get(self.answer_id)
        self._lost(holder)

    async def _register_late(self) -> None:
        try:
            registration = await self.register()
        except StoreError:
            return
        if registration.registered:
            self.log.info("answer registered once the store answered")
        else:
            self._lost(registration.existing)

    async def _register_again(self) -> None:
        """The store lost the record (a Redis restarted empty): register it again, with its
        dedupe keys, before a retried event can be taken for a new question elsewhere."""
        if self._record.phase is Phase.FINISHED:
            return
        self.log.warning("answer record vanished from the store; registering it again")
        self.metrics.records_reregistered.inc()
        try:
            registration = await self.register(take_back=True)
        except StoreError:
            return  # still unreachable: the next renewal tries again
        if not registration.registered:
            self._lost(registration.existing)

    def _lost(self, holder: AnswerRecord | None) -> None:
        """Another token holds the answer. The same registration carried on by a janitor
        finishes this same message: stop quietly. Another registration of the question (made
        while the store had lost ours) answers in its own message: ours must go."""
        self.state = LeaseState.LOST
        self.release()
        same_registration = holder is not None and holder.origin == self.origin
        if holder is None or same_registration:
            self.log.warning(
                "lease lost: another replica finishes this answer",
                extra={"holder": holder.owner if holder else "", "finished": _finished(holder)},
            )
            self._on_stop(StopRequest(StopKind.LEASE_LOST, TAKEN_OVER_REASON, holder_of(holder)))
        else:
            self.log.warning(
                "another registration answers this question; removing ours",
                extra={"holder": holder.owner},
            )
            self._on_stop(StopRequest(StopKind.DISPLACED, DISPLACED_REASON, holder.owner))

    # -- the end ---------------------------------------------------------------------------------

    async def finish(self, outcome: str) -> bool:
        """Leave the tombstone. While the store is unreachable it is retried for a while: the
        message is final already, and a janitor that finds the record later reads the message
        back and finds it finished, so nothing is lost if this gives up."""
        self.release()
        if not self.registered or not self.held:
            return False
        backoff = Backoff.within(FINISH_RETRY_SECONDS, first=0.25, cap=5.0)
        while True:
            try:
                state = await self.store.finish(self.answer_id, self.token, outcome=outcome)
            except StoreError as e:
                wait = backoff.delay()
                if wait is None:
                    self.log.error(
                        "answer finished, but the store could not record it",
                        extra={"error": str(e)},
                    )
                    return False
                await asyncio.sleep(wait)
                continue
            return state is LeaseState.HELD


def _finished(holder: AnswerRecord | None) -> bool:
    return holder is not None and holder.phase is Phase.FINISHED


def holder_of(holder: AnswerRecord | None) -> str:
    return holder.owner if holder is not None else ""
