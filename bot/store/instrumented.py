"""The store as the bot uses it: every call measured, whoever makes it (answers, the janitor,
admission, the app), and every call an answer waits on bounded in time.

Measured: `slackstream_store_latency_seconds{op}` and `slackstream_store_errors_total{op}`.
Bounded: a stalled Redis (a long fork, a paused VM) would otherwise hold each call for the
client's timeouts and retries, about 8 s; a call that takes longer than its bound in
`TIMEOUTS` raises StoreError instead, and the caller carries on degraded as it does when Redis
is down. A command cut short may still run once Redis resumes, which every step tolerates:
claims and registrations carry tokens that make a late or repeated run harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from bot.metrics import Metrics
from bot.store.contract import (
    AnswerRecord,
    Checkpoint,
    EditGrant,
    EventClaim,
    LeaseReport,
    LeaseState,
    Registration,
    Store,
    StoreError,
)
from bot.store.ledger import (
    AdmissionView,
    ChannelOverride,
    FeedbackVote,
    SpendView,
    Thresholds,
    UsageCell,
    UsageEntry,
    UsageKeep,
    UsageTotals,
    VoteResult,
)

T = TypeVar("T")

# Seconds a call may take before it counts as failed (the answer goes on without it).
TIMEOUTS: dict[str, float] = {
    "claim_event": 2.0,
    "count_in_flight": 2.0,
    "register": 1.0,
    "renew": 2.0,
    "take_edit_token": 1.0,
    "pause_edits": 1.0,
    "earlier_in_thread": 1.0,
    "get_thread": 1.0,
    "put_thread": 1.0,
    "get": 2.0,
    "request_cancel": 2.0,
    "ping": 1.0,
    # running for a company (`ledger.py`): admission's read replaces count_in_flight's; an
    # answer's usage is added just before its final edit, which it must not hold up long.
    "admission_view": 2.0,
    "record_usage": 1.0,
    "usage_spend": 2.0,
    "record_feedback": 2.0,
    "set_channel_override": 2.0,
    "channel_overrides": 2.0,
    # Files in threads: a prepared PDF can be tens of megabytes.
    "get_file": 2.0,
    "put_file": 5.0,
}


class InstrumentedStore:
    """`inner`, timed and counted; the same contract, so callers do not know it is there."""

    def __init__(
        self, inner: Store, metrics: Metrics, *, timeouts: dict[str, float] | None = None
    ) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._metrics = metrics
        self._timeouts = TIMEOUTS if timeouts is None else timeouts

    async def _measured(self, op: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeouts.get(op)):
                return await call
        except TimeoutError:
            self._metrics.store_errors.labels(op).inc()
            raise StoreError(f"store call {op} timed out") from None
        except StoreError:
            self._metrics.store_errors.labels(op).inc()
            raise
        finally:
            self._metrics.store_latency.labels(op).observe(time.perf_counter() - started)

    async def claim_event(self, key: str, ttl_seconds: float, token: str) -> EventClaim:
        return await self._measured("claim_event", self.inner.claim_event(key, ttl_seconds, token))

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        return await self._measured("get_thread", self.inner.get_thread(key))

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        await self._measured("put_thread", self.inner.put_thread(key, messages, ttl_seconds))

    async def register(
        self,
        record: AnswerRecord,
        *,
        lease_seconds: float,
        take_back: bool = False,
        dedupe_ttl_seconds: float,
    ) -> Registration:
        return await self._measured(
            "register",
            self.inner.register(
                record,
                lease_seconds=lease_seconds,
                take_back=take_back,
                dedupe_ttl_seconds=dedupe_ttl_seconds,
            ),
        )

    async def renew(
        self,
        answer_id: str,
        token: str,
        *,
        lease_seconds: float,
        checkpoint: Checkpoint | None = None,
    ) -> LeaseReport:
        return await self._measured(
            "renew",
            self.inner.renew(answer_id, token, lease_seconds=lease_seconds, checkpoint=checkpoint),
        )

    async def finish(self, answer_id: str, token: str, *, outcome: str) -> LeaseState:
        return await self._measured("finish", self.inner.finish(answer_id, token, outcome=outcome))

    async def get(self, answer_id: str) -> AnswerRecord | None:
        return await self._measured("get", self.inner.get(answer_id))

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        return await self._measured("count_in_flight", self.inner.count_in_flight(team_id, user))

    async def earlier_in_thread(self, channel: str, thread_ts: str, question_ts: str) -> int:
        return await self._measured(
            "earlier_in_thread", self.inner.earlier_in_thread(channel, thread_ts, question_ts)
        )

    async def claim_lapsed(
        self,
        *,
        new_owner: str,
        incarnation: str,
        lease_seconds: float,
        previous_owner: str | None = None,
        limit: int = 100,
    ) -> list[AnswerRecord]:
        return await self._measured(
            "claim_lapsed",
            self.inner.claim_lapsed(
                new_owner=new_owner,
                incarnation=incarnation,
                lease_seconds=lease_seconds,
                previous_owner=previous_owner,
                limit=limit,
            ),
        )

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        await self._measured(
            "request_cancel", self.inner.request_cancel(answer_id, by_user, ttl_seconds)
        )

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        return self.inner.cancel_signals()

    async def take_edit_token(
        self,
        team_id: str,
        *,
        per_minute: float,
        burst: float,
        reserve: float = 0.0,
        answer_id: str = "",
        token: str = "",
        checkpoint: Checkpoint | None = None,
        waits: bool = False,
        waited: float = 0.0,
    ) -> EditGrant:
        return await self._measured(
            "take_edit_token",
            self.inner.take_edit_token(
                team_id,
                per_minute=per_minute,
                burst=burst,
                reserve=reserve,
                answer_id=answer_id,
                token=token,
                checkpoint=checkpoint,
                waits=waits,
                waited=waited,
            ),
        )

    async def pause_edits(self, team_id: str, seconds: float) -> None:
        await self._measured("pause_edits", self.inner.pause_edits(team_id, seconds))

    async def ping(self) -> None:
        await self._measured("ping", self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()

    # -- running for a company: usage, budgets, feedback, channel overrides (`ledger.py`) ------

    async def admission_view(
        self, team_id: str, user: str, channel: str, *, day: str, month: str
    ) -> AdmissionView:
        return await self._measured(
            "admission_view",
            self.inner.admission_view(team_id, user, channel, day=day, month=month),
        )

    async def record_usage(
        self, entry: UsageEntry, *, thresholds: Thresholds, keep: UsageKeep
    ) -> UsageTotals:
        return await self._measured(
            "record_usage", self.inner.record_usage(entry, thresholds=thresholds, keep=keep)
        )

    async def usage_spend(self, team_id: str, user: str, *, day: str, month: str) -> SpendView:
        return await self._measured(
            "usage_spend", self.inner.usage_spend(team_id, user, day=day, month=month)
        )

    async def usage_cells(
        self, *, since: str, until: str, team_id: str | None = None
    ) -> list[UsageCell]:
        # Not bounded: only the Home tab and the usage report read a range of days.
        return await self._measured(
            "usage_cells", self.inner.usage_cells(since=since, until=until, team_id=team_id)
        )

    async def record_feedback(
        self, vote: FeedbackVote, *, keep_seconds: float, cell_keep_seconds: float
    ) -> VoteResult:
        return await self._measured(
            "record_feedback",
            self.inner.record_feedback(
                vote, keep_seconds=keep_seconds, cell_keep_seconds=cell_keep_seconds
            ),
        )

    async def set_channel_override(
        self, team_id: str, channel: str, override: ChannelOverride | None
    ) -> None:
        await self._measured(
            "set_channel_override", self.inner.set_channel_override(team_id, channel, override)
        )

    async def channel_overrides(self, team_id: str) -> dict[str, ChannelOverride]:
        return await self._measured("channel_overrides", self.inner.channel_overrides(team_id))

    # -- files in threads -----------------------------------------------------------

    async def get_file(self, key: str) -> dict[str, Any] | None:
        return await self._measured("get_file", self.inner.get_file(key))

    async def put_file(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        await self._measured("put_file", self.inner.put_file(key, value, ttl_seconds))
