"""Recovery of answers whose replica died: every replica runs a janitor.

A janitor claims answers whose lease ran out (atomically in the store, so each has exactly one
taker), holds each claim with a renewed lease of its own while it works, and finishes the
answer's messages the way the answer would have (`message.AnswerMessage`):

- it reads the thread back first: a message marked final (in its metadata, by the final
  edit) is already finished (its owner finished it but could not record that) and is left
  as it is; a part posted without a record of it is adopted, never posted twice;
- an answer that was finishing is finished with the footer and notes its owner recorded, so the
  reader gets the same final text;
- any other answer keeps every character its owner checkpointed (at least what readers saw,
  since each edit records its text before Slack shows it) and ends with `[interrupted]`;
- a message that never reached Slack is posted, with the interruption;
- the answer's usage, as its checkpoints carried it to the record, is counted for its asker
  (`UsageLedger.record_recovered`), once: not again if its owner counted it before dying.

A janitor claims nothing until it has reached the store for a whole lease without a break: when
the store was unreachable (or frozen) for everyone, every lease looks lapsed at once, and the
owners, alive, need a lease's time to renew. At start-up a replica also takes back, at once,
the answers its own earlier process left (same REPLICA_ID, another incarnation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot import render
from bot.config import Settings
from bot.lease import Lease
from bot.lifecycle import RECOVERY_REASON, Outcome, Phase, StopRequest
from bot.logs import ContextLog
from bot.message import AnswerMessage, AnswerRef, Sent
from bot.metrics import Metrics
from bot.pacing import PacingPolicy
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import AnswerRecord, Store, StoreError
from bot.usage_ledger import UsageLedger

log = logging.getLogger(__name__)

Clock = Callable[[], float]

MAX_RECOVERING = 8  # answers finished at once by one janitor (each holds its claim meanwhile)
SWEEP_LIMIT = 32  # answers claimed per sweep
RECOVERY_DEADLINE = 120.0  # how long one recovery keeps trying before its claim lapses again


class Janitor:
    """See the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        slack: SlackCalls,
        settings: Settings,
        metrics: Metrics,
        policy: PacingPolicy,
        incarnation: str,
        clock: Clock = time.monotonic,
        feedback: Callable[[AnswerRecord], render.FeedbackButtons | None] | None = None,
        ledger: UsageLedger | None = None,  # None: recovered answers' usage is not counted
    ) -> None:
        self.store = store
        self.ledger = ledger
        # The feedback buttons of an answer finished with its owner's footer (None: none).
        self.feedback = feedback
        self.slack = slack
        self.settings = settings
        self.metrics = metrics
        self.policy = policy
        self.incarnation = incarnation
        self.clock = clock
        self._reachable_since: float | None = None
        self._last_contact: float | None = None
        self._slots = asyncio.Semaphore(MAX_RECOVERING)
        self._recoveries: set[asyncio.Task[None]] = set()
        self.hurry = asyncio.Event()

    @property
    def period(self) -> float:
        """Sweep often enough that an orphan waits at most about 1.25 leases in all."""
        return max(0.05, self.settings.stream_lease_seconds / 4)

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await stopped.wait()
            if stopped.is_set():
                return
            await self.sweep()

    async def _store_steady(self) -> bool:
        """True once the store has answered without a break for a whole lease."""
        now = self.clock()
        try:
            async with asyncio.timeout(self.period):
                await self.store.ping()
        except (StoreError, TimeoutError):
            self._reachable_since = self._last_contact = None
            return False
        gap = now - self._last_contact if self._last_contact is not None else None
        if self._reachable_since is None or gap is None or gap > 3 * self.period + 1.0:
            self._reachable_since = now  # (again) in touch: give live owners a lease to renew
        self._last_contact = self.clock()
        return self.clock() - self._reachable_since >= self.settings.stream_lease_seconds

    async def sweep(self, *, previous_owner: str | None = None) -> int:
        """Claim lapsed answers (or, at start-up, this replica's from an earlier process) and
        start finishing them; returns how many were claimed."""
        if previous_owner is None and not await self._store_steady():
            return 0
        try:
            claimed = await self.store.claim_lapsed(
                new_owner=self.settings.replica_id,
                incarnation=self.incarnation,
                lease_seconds=self.settings.stream_lease_seconds,
                previous_owner=previous_owner,
                limit=SWEEP_LIMIT,
            )
        except StoreError as e:
            log.warning("janitor: store unreachable", extra={"error": str(e)})
            return 0
        for record in claimed:
            task = asyncio.create_task(self._recover(record), name=f"recover-{record.answer_id}")
            self._recoveries.add(task)
            task.add_done_callback(self._recoveries.discard)
        return len(claimed)

    async def settle(self) -> None:
        """Wait for the recoveries under way (each is bounded by RECOVERY_DEADLINE)."""
        if self._recoveries:
            await asyncio.wait(set(self._recoveries))

    async def close(self, *, within: float) -> None:
        """At shutdown: recoveries under way get `within` seconds, hurried; then they are
        cancelled and their claims lapse to another janitor."""
        self.hurry.set()
        pending = set(self._recoveries)
        if pending:
            await asyncio.wait(pending, timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _recover(self, record: AnswerRecord) -> None:
        answer_log = ContextLog(log, {"answer_id": record.answer_id, "channel": record.channel})
        lease = Lease(
            store=self.store,
            metrics=self.metrics,
            lease_seconds=self.settings.stream_lease_seconds,
            record=record,
            on_stop=lambda request: _lost(answer_log, request),
            log=answer_log,
        )
        lease.registered = True  # the claim registered it to us
        keeper = asyncio.create_task(lease.keep())
        try:
            async with self._slots, asyncio.timeout(RECOVERY_DEADLINE):
                outcome = await self._finish(record, lease, answer_log)
        except (TimeoutError, SlackFailure) as e:
            answer_log.warning("janitor: recovery will be retried", extra={"error": str(e)})
            outcome = None
        finally:
            lease.release()
            await asyncio.wait({keeper})
        if outcome is not None:
            await self._count_usage(record, outcome, answer_log)
            await lease.finish(str(outcome))

    async def _count_usage(
        self, record: AnswerRecord, outcome: Outcome, answer_log: ContextLog
    ) -> None:
        """Count what Claude billed for the answer, unless its owner counted it already."""
        if self.ledger is None:
            return
        totals = await self.ledger.record_recovered(record, outcome=str(outcome))
        if totals is None:
            return
        if totals.counted:
            answer_log.info("janitor: usage counted", extra={"asker": record.asker})
        else:
            answer_log.info("janitor: usage already counted", extra={"asker": record.asker})

    async def _finish(
        self, record: AnswerRecord, lease: Lease, answer_log: ContextLog
    ) -> Outcome | None:
        """Finish the answer's messages; the outcome for its tombstone, or None to leave the
        claim to lapse (a later sweep tries again)."""
        message = AnswerMessage(
            slack=self.slack,
            store=self.store,
            settings=self.settings,
            policy=self.policy,
            lease=lease,
            ref=AnswerRef.of(record),
            metrics=self.metrics,
            log=answer_log,
            clock=self.clock,
            hurry=self.hurry,
            part=record.part,
            offset=record.offset,
            ts=record.message_ts,
        )
        message.adopt = True
        current = [p for p in await message.find() if p.part == record.part]
        if current and current[0].final:
            answer_log.info(
                "janitor: the answer's message is already finished; recording that",
                extra={"previous_owner": record.owner},
            )
            return Outcome.RECOVERED
        answer_log.warning(
            "recovering an orphaned answer",
            extra={"previous_owner": record.owner, "phase": str(record.phase)},
        )
        if not message.ts and current:
            message.ts = current[0].ts
        if not message.ts:  # it died before this part reached Slack: post it now
            sent = await message.post(render.streaming_payload("", answer_id=record.answer_id))
            if not sent.delivered:
                return _given_up(sent, answer_log)
            lease.note(message_ts=message.ts)
        feedback = None
        if record.phase is Phase.FINISHING:
            footer, notes = record.footer or None, list(record.notes)
            feedback = self.feedback(record) if self.feedback is not None else None
        else:
            # While streaming, the notes hold the Sources list of the text shown so far.
            kept = [note for note in record.notes if note]
            footer, notes = None, [*kept, render.interrupted_note(RECOVERY_REASON)]
        sent = await message.finish(record.text, footer=footer, notes=notes, feedback=feedback)
        if not sent.delivered:
            return _given_up(sent, answer_log)
        self.metrics.janitor_recoveries.inc()
        self.metrics.answers_finished.labels(str(Outcome.RECOVERED)).inc()
        return Outcome.RECOVERED


def _given_up(sent: Sent, answer_log: ContextLog) -> Outcome | None:
    error = sent.failure.error if sent.failure else ""
    if sent.refusal is not None:
        answer_log.error("janitor: message cannot be finished", extra={"error": error})
        return Outcome.UNDELIVERABLE
    answer_log.warning("janitor: final edit failed; will retry", extra={"error": error})
    return None


def _lost(answer_log: ContextLog, request: StopRequest) -> None:
    answer_log.warning("janitor: claim lost to another replica", extra={"detail": request.detail})
