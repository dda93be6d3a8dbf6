"""The store of a lone replica (no `REDIS_URL`): the same contract as `RedisStore`, nothing
survives a restart. This module holds the answers' life: event claims, leases with their
checkpoints and tombstones, the indexes of answers in flight, and the workspace edit budget;
`MemoryStore` mixes in the other parts (`memory_cancels`, `memory_caches`, `memory_ledger`; the
package docstring says why mixins).

Each method runs without awaiting, so on one event loop every step is atomic. `clock` is the
store's clock (leases, buckets, expiries); tests inject a manual one. Everything it keeps is
bounded: dedupe claims and cancel flags expire, and at most `max_events` claims are kept (the
oldest go first), so a fallback store that takes every event during a Redis outage cannot grow
without end.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from bot.lifecycle import Phase
from bot.pacing import COMPETING_WINDOW_SECONDS, TokenBucket
from bot.store.contract import (
    AnswerRecord,
    Checkpoint,
    EditGrant,
    EventClaim,
    LeaseReport,
    LeaseState,
    Registration,
    check_budget,
    thread_order,
)
from bot.store.memory_caches import MemoryCaches
from bot.store.memory_cancels import MemoryCancels
from bot.store.memory_ledger import MemoryLedger

K = TypeVar("K")

MAX_EVENTS = 100_000  # dedupe claims kept at most (about 10 MB); the oldest are dropped first
TOMBSTONE_SECONDS = 6 * 3600.0


def _discard(index: dict[K, set[str]], key: K, answer_id: str) -> None:
    """Remove `answer_id` from the set at `index[key]`, and the key once the set is empty."""
    members = index.get(key)
    if members is not None:
        members.discard(answer_id)
        if not members:
            del index[key]


def _encoded_length(text: str) -> int:
    return len(text.encode())


class MemoryStore(MemoryCancels, MemoryCaches, MemoryLedger):
    """See the module docstring."""

    kind = "memory"

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_events: int = MAX_EVENTS
    ) -> None:
        super().__init__()
        self._clock = clock
        self._max_events = max_events
        self._answers: dict[str, AnswerRecord] = {}
        self._tombstones: dict[str, float] = {}  # answer id -> when its tombstone expires
        # Indexes of unfinished answers, kept by _index/_unindex only.
        self._by_team: dict[str, set[str]] = {}
        self._by_user: dict[tuple[str, str], set[str]] = {}
        self._by_thread: dict[tuple[str, str], set[str]] = {}  # answers with a question_ts
        self._events: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (token, expiry)
        self._event_expiries: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._buckets: dict[str, TokenBucket] = {}
        # team -> answer_id -> when it last asked, oldest first (so expiry pops from the front)
        self._competitors: dict[str, OrderedDict[str, float]] = {}

    # -- dedupe ----------------------------------------------------------------------------------

    async def claim_event(self, key: str, ttl_seconds: float, token: str) -> EventClaim:
        now = self._clock()
        self._forget_expired_events(now)
        held = self._events.get(key)
        first = held is None or held[0] == token
        if held is None:
            expires = now + ttl_seconds
            self._events[key] = (token, expires)
            heapq.heappush(self._event_expiries, (expires, next(self._sequence), key))
            while len(self._events) > self._max_events:
                self._events.popitem(last=False)
        # Its data lives exactly as long as this process: it is never lost behind its back.
        return EventClaim(first=first, data_age=math.inf)

    def _forget_expired_events(self, now: float) -> None:
        # A heap keeps the cleanup cheap however many events go by.
        while self._event_expiries and self._event_expiries[0][0] <= now:
            expires, _, key = heapq.heappop(self._event_expiries)
            held = self._events.get(key)
            if held is not None and held[1] == expires:
                del self._events[key]

    # -- answers ---------------------------------------------------------------------------------

    def _live(self, answer_id: str) -> AnswerRecord | None:
        """The record, or None; an expired tombstone is dropped here."""
        record = self._answers.get(answer_id)
        expires = self._tombstones.get(answer_id)
        if record is not None and expires is not None and expires <= self._clock():
            del self._answers[answer_id]
            del self._tombstones[answer_id]
            return None
        return record

    async def register(
        self,
        record: AnswerRecord,
        *,
        lease_seconds: float,
        take_back: bool = False,
        dedupe_ttl_seconds: float,
    ) -> Registration:
        now = self._clock()
        existing = self._live(record.answer_id)
        if existing is not None and (
            existing.phase is Phase.FINISHED or (existing.token != record.token and not take_back)
        ):
            return Registration(False, existing)
        if existing is not None:
            self._unindex(existing)
        started = record.started_at or now
        # As in Redis, a registration writes a new record: its usage is not counted yet.
        stored = replace(
            record, lease_until=now + lease_seconds, started_at=started, usage_counted=False
        )
        self._answers[record.answer_id] = stored
        self._tombstones.pop(record.answer_id, None)
        self._index(stored)
        for key in record.dedupe_keys:
            self._events[key] = (record.token, now + dedupe_ttl_seconds)
            heapq.heappush(
                self._event_expiries, (now + dedupe_ttl_seconds, next(self._sequence), key)
            )
        return Registration(True)

    def _index(self, record: AnswerRecord) -> None:
        answer_id = record.answer_id
        self._by_team.setdefault(record.team_id, set()).add(answer_id)
        self._by_user.setdefault((record.team_id, record.asker), set()).add(answer_id)
        if thread_order(record.question_ts) is not None:
            self._by_thread.setdefault((record.channel, record.thread_ts), set()).add(answer_id)

    def _unindex(self, record: AnswerRecord) -> None:
        """The reverse of _index; an index left empty is dropped, so none outlives its answers."""
        answer_id = record.answer_id
        _discard(self._by_team, record.team_id, answer_id)
        _discard(self._by_user, (record.team_id, record.asker), answer_id)
        _discard(self._by_thread, (record.channel, record.thread_ts), answer_id)

    def _held(self, answer_id: str, token: str) -> tuple[LeaseState, AnswerRecord | None]:
        record = self._live(answer_id)
        if record is None:
            return LeaseState.MISSING, None
        if record.token != token or record.phase is Phase.FINISHED:
            return LeaseState.LOST, record
        return LeaseState.HELD, record

    def _apply(
        self, record: AnswerRecord, checkpoint: Checkpoint | None
    ) -> tuple[AnswerRecord, bool]:
        """`record` with the checkpoint recorded; True when its text did not line up."""
        if checkpoint is None:
            return record, False
        refused = False
        changes: dict[str, Any] = {
            name: value
            for name in ("message_ts", "part", "offset", "phase", "footer", "notes", "usage")
            if (value := getattr(checkpoint, name)) is not None
        }
        if checkpoint.text is not None:
            if checkpoint.text_at is None:
                changes["text"] = checkpoint.text
            elif _encoded_length(record.text) == checkpoint.text_at:
                changes["text"] = record.text + checkpoint.text
            else:
                refused = True
        return replace(record, **changes), refused

    async def renew(
        self,
        answer_id: str,
        token: str,
        *,
        lease_seconds: float,
        checkpoint: Checkpoint | None = None,
    ) -> LeaseReport:
        state, record = self._held(answer_id, token)
        if state is not LeaseState.HELD or record is None:
            return LeaseReport(state, holder=record)
        record, refused = self._apply(record, checkpoint)
        self._answers[answer_id] = replace(record, lease_until=self._clock() + lease_seconds)
        return LeaseReport(
            LeaseState.HELD, stop_by=self._cancel_flag(answer_id), text_rejected=refused
        )

    def _forget_expired_tombstones(self, now: float) -> None:
        """Tombstones are kept in expiry order (each is re-inserted when written), so the
        expired ones are at the front."""
        while self._tombstones:
            answer_id, expires = next(iter(self._tombstones.items()))
            if expires > now:
                return
            del self._tombstones[answer_id]
            self._answers.pop(answer_id, None)

    async def finish(self, answer_id: str, token: str, *, outcome: str) -> LeaseState:
        now = self._clock()
        self._forget_expired_tombstones(now)
        record = self._live(answer_id)
        if record is None:
            return LeaseState.MISSING
        if record.token != token:
            return LeaseState.LOST
        if record.phase is not Phase.FINISHED:
            self._unindex(record)
            self._drop_cancel(answer_id)
            self._answers[answer_id] = replace(
                record, phase=Phase.FINISHED, outcome=outcome, text=""
            )
        self._tombstones.pop(answer_id, None)
        self._tombstones[answer_id] = now + TOMBSTONE_SECONDS
        return LeaseState.HELD

    async def get(self, answer_id: str) -> AnswerRecord | None:
        return self._live(answer_id)

    def _mark_usage_counted(self, answer_id: str) -> bool:
        record = self._live(answer_id)
        if record is None:
            return True
        if record.usage_counted:
            return False
        self._answers[answer_id] = replace(record, usage_counted=True)
        return True

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        return (
            len(self._by_user.get((team_id, user), ())),
            len(self._by_team.get(team_id, ())),
        )

    async def earlier_in_thread(self, channel: str, thread_ts: str, question_ts: str) -> int:
        order = thread_order(question_ts)
        if order is None:
            return 0
        return sum(
            1
            for answer_id in self._by_thread.get((channel, thread_ts), ())
            if (thread_order(self._answers[answer_id].question_ts) or order) < order
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
        # A take-over changes the owner, the token and the lease only: the indexes stay.
        now = self._clock()
        self._forget_expired_tombstones(now)
        claimed: list[AnswerRecord] = []
        unfinished = (r for r in self._answers.values() if r.phase is not Phase.FINISHED)
        for record in sorted(unfinished, key=lambda r: r.lease_until):
            if len(claimed) >= limit:
                break
            if previous_owner is None:
                wanted = record.lease_until < now
            else:
                wanted = record.owner == previous_owner and record.incarnation != incarnation
            if wanted:
                taken = replace(
                    record,
                    owner=new_owner,
                    incarnation=incarnation,
                    token=f"{incarnation}:{record.answer_id}:{next(self._sequence)}",
                    lease_until=now + lease_seconds,
                )
                self._answers[record.answer_id] = taken
                claimed.append(taken)
        return claimed

    # -- edit budget -----------------------------------------------------------------------------

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
        check_budget(per_minute, burst, reserve)
        now = self._clock()
        bucket = self._buckets.setdefault(team_id, TokenBucket.full(burst, now))
        wait = bucket.take(
            now,
            per_minute=per_minute,
            burst=burst,
            reserve=reserve,
            waiter=answer_id if waits else "",
            waited=waited,
        )
        competitors = self._competitors.setdefault(team_id, OrderedDict())
        if answer_id:
            competitors.pop(answer_id, None)
            competitors[answer_id] = now
        while competitors and next(iter(competitors.values())) < now - COMPETING_WINDOW_SECONDS:
            competitors.popitem(last=False)
        competing = len(competitors)
        if not competitors:
            del self._competitors[team_id]
        if not token:
            return EditGrant(wait, competing)
        state, record = self._held(answer_id, token)
        refused = False
        if state is LeaseState.HELD and record is not None and wait <= 0:
            record, refused = self._apply(record, checkpoint)
            self._answers[answer_id] = record
        return EditGrant(wait, competing, lease=state, text_rejected=refused)

    async def pause_edits(self, team_id: str, seconds: float) -> None:
        now = self._clock()
        # A bucket nobody took from yet is full (as in Redis, where its hash has no tokens).
        bucket = self._buckets.setdefault(team_id, TokenBucket(tokens=float("inf"), last=now))
        bucket.pause(now + seconds)

    # -- housekeeping ----------------------------------------------------------------------------

    async def ping(self) -> None:
        """Always reachable: it lives in this process."""
