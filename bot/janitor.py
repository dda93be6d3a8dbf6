"""Recovery of orphaned answers: finish messages whose replica died mid-answer.

Every replica runs a janitor. Claiming a lapsed answer is atomic in the store, so when several
janitors find the same orphan exactly one finishes it; the others see nothing to do. The message is
finished with the text its owner last checkpointed (at most one heartbeat behind what Slack shows)
and `[interrupted]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot import render
from bot.config import Settings
from bot.metrics import Metrics
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import AnswerRecord, Store, StoreError

log = logging.getLogger(__name__)

RECOVERY_REASON = "the bot restarted while answering; please ask again"


class Janitor:
    def __init__(
        self,
        *,
        store: Store,
        slack: SlackCalls,
        settings: Settings,
        metrics: Metrics,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.slack = slack
        self.settings = settings
        self.metrics = metrics
        self.wall = wall

    @property
    def period(self) -> float:
        """Sweep often enough that an orphan waits at most about 1.25 leases in total."""
        return max(0.05, self.settings.stream_lease_seconds / 4)

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await stopped.wait()
            if stopped.is_set():
                return
            await self.sweep()

    async def sweep(self, *, previous_owner: str | None = None) -> int:
        """Claim and finish lapsed answers (or, at start-up, our own from a previous life)."""
        try:
            claimed = await self.store.claim_lapsed(
                now=self.wall(),
                new_owner=self.settings.replica_id,
                lease_seconds=self.settings.stream_lease_seconds,
                previous_owner=previous_owner,
            )
        except StoreError as e:
            log.warning("janitor: store unreachable", extra={"error": str(e)})
            return 0
        for record in claimed:
            await self._finish(record)
        return len(claimed)

    async def _wait_for_edit_budget(self, record: AnswerRecord) -> None:
        """A recovery edit is a final edit: it takes its token from the workspace budget like
        any other, so recoveries never push the workspace into Slack's 429s."""
        for _ in range(60):
            try:
                grant = await self.store.take_edit_token(
                    record.team_id,
                    now=self.wall(),
                    per_minute=self.settings.workspace_edits_per_minute,
                    burst=self.settings.workspace_edit_burst,
                    answer_id=record.answer_id,
                )
            except StoreError:
                return
            if grant.granted:
                return
            await asyncio.sleep(min(grant.wait, 5.0))

    async def _finish(self, record: AnswerRecord) -> None:
        log.warning(
            "recovering an orphaned answer",
            extra={
                "answer_id": record.answer_id,
                "previous_owner_lapsed_at": record.lease_until,
                "channel": record.channel,
            },
        )
        payload = render.final_payload(
            record.shown_text, footer=None, notes=[render.interrupted_note(RECOVERY_REASON)]
        )
        try:
            # The owner registers an answer before posting its placeholder, and records the
            # placeholder just after: a death in between leaves the message to be found.
            message_ts = record.message_ts or await self.slack.answer_message(
                record.channel,
                record.thread_ts,
                record.answer_id,
                oldest=record.question_ts or None,
            )
            if message_ts:
                await self._wait_for_edit_budget(record)
                await self.slack.call(
                    "chat.update", channel=record.channel, ts=message_ts, **payload.as_kwargs()
                )
            else:  # it died before its placeholder reached Slack: say so in the thread
                await self.slack.call(
                    "chat.postMessage",
                    channel=record.channel,
                    thread_ts=record.thread_ts,
                    **payload.as_kwargs(),
                )
        except SlackFailure as e:
            if not e.permanent:
                # Keep the claim; its lease lapses and a later sweep (ours or another's) retries.
                log.warning("janitor: final edit failed; will retry", extra={"error": e.error})
                return
            log.error("janitor: message cannot be finished", extra={"error": e.error})
        self.metrics.janitor_recoveries.inc()
        self.metrics.answers_finished.labels("recovered").inc()
        with contextlib.suppress(StoreError):
            await self.store.finish(record.answer_id, self.settings.replica_id)
