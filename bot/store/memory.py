"""The store of a lone replica (no `REDIS_URL`): the same contract as `RedisStore`, nothing
survives a restart.

Each method runs without awaiting, so on one event loop every step is atomic. `clock` is the
store's clock (leases, buckets, expiries); tests inject a manual one. Everything it keeps is
bounded: dedupe claims and cancel flags expire, and at most `max_events` claims are kept (the
oldest go first), so a fallback store that takes every event during a Redis outage cannot grow
without end.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
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
from bot.store.ledger import (
    BUDGETS,
    AdmissionView,
    ChannelOverride,
    FeedbackVote,
    Spend,
    SpendView,
    Thresholds,
    UsageCell,
    UsageEntry,
    UsageKeep,
    UsageTotals,
    VoteResult,
)

K = TypeVar("K")

MAX_EVENTS = 100_000  # dedupe claims kept at most (about 10 MB); the oldest are dropped first
MAX_THREADS = 1_000  # cached threads kept at most
MAX_FILES = 1_000  # prepared files kept at most (the least recently used go first)
MAX_FILE_CHARS = 100_000_000  # and at most this much of them (about 100 MB)
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


class MemoryStore:
    """See the module docstring."""

    kind = "memory"

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_events: int = MAX_EVENTS
    ) -> None:
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
        self._cancels: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        # team -> answer_id -> when it last asked, oldest first (so expiry pops from the front)
        self._competitors: dict[str, OrderedDict[str, float]] = {}
        self._threads: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (expiry, JSON)
        self._listeners: set[asyncio.Queue[tuple[str, str] | None]] = set()
        self._closed = False
        self._files: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (expiry, JSON)
        self._file_chars = 0

    # -- dedupe and threads ----------------------------------------------------------------------

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

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        entry = self._threads.get(key)
        if entry is None or entry[0] <= self._clock():
            self._threads.pop(key, None)
            return None
        return json.loads(entry[1])  # type: ignore[no-any-return]

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        # Stored as JSON, like Redis does, so callers can't mutate the cached copy.
        now = self._clock()
        current = self._threads.get(key)
        expires = current[0] if current is not None and current[0] > now else now + ttl_seconds
        self._threads[key] = (expires, json.dumps(messages))
        self._threads.move_to_end(key)
        while len(self._threads) > MAX_THREADS:
            self._threads.popitem(last=False)

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
        stored = replace(record, lease_until=now + lease_seconds, started_at=started)
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
            for name in ("message_ts", "part", "offset", "phase", "footer", "notes")
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
            self._cancels.pop(answer_id, None)
            self._answers[answer_id] = replace(
                record, phase=Phase.FINISHED, outcome=outcome, text=""
            )
        self._tombstones.pop(answer_id, None)
        self._tombstones[answer_id] = now + TOMBSTONE_SECONDS
        return LeaseState.HELD

    async def get(self, answer_id: str) -> AnswerRecord | None:
        return self._live(answer_id)

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

    # -- cancel ----------------------------------------------------------------------------------

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        now = self._clock()
        self._cancels = {k: v for k, v in self._cancels.items() if v[1] > now}  # expired go
        self._cancels[answer_id] = (by_user, now + ttl_seconds)
        for queue in self._listeners:
            queue.put_nowait((answer_id, by_user))

    def _cancel_flag(self, answer_id: str) -> str | None:
        flag = self._cancels.get(answer_id)
        if flag is None:
            return None
        by_user, expires = flag
        if expires <= self._clock():
            del self._cancels[answer_id]
            return None
        return by_user

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """Listening starts at this call, not at the first iteration."""
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        else:
            self._listeners.add(queue)
        return self._drain(queue)

    async def _drain(
        self, queue: asyncio.Queue[tuple[str, str] | None]
    ) -> AsyncIterator[tuple[str, str]]:
        try:
            while (signal := await queue.get()) is not None:
                yield signal
        finally:
            self._listeners.discard(queue)

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
    ) -> EditGrant:
        check_budget(per_minute, burst, reserve)
        now = self._clock()
        bucket = self._buckets.setdefault(team_id, TokenBucket.full(burst, now))
        wait = bucket.take(now, per_minute=per_minute, burst=burst, reserve=reserve)
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

    async def close(self) -> None:
        self._closed = True
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()

    # -- files in threads -----------------------------------------------------------

    async def get_file(self, key: str) -> dict[str, Any] | None:
        entry = self._files.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop_file(key)
            return None
        self._files.move_to_end(key)
        return json.loads(entry[1])  # type: ignore[no-any-return]

    async def put_file(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        # JSON, like Redis, so callers can't mutate the cached copy; bounded in count and size.
        encoded = json.dumps(value)
        self._drop_file(key)
        if len(encoded) > MAX_FILE_CHARS:
            return
        self._files[key] = (self._clock() + ttl_seconds, encoded)
        self._file_chars += len(encoded)
        while len(self._files) > MAX_FILES or self._file_chars > MAX_FILE_CHARS:
            self._drop_file(next(iter(self._files)))

    def _drop_file(self, key: str) -> None:
        entry = self._files.pop(key, None)
        if entry is not None:
            self._file_chars -= len(entry[1])

    # -- running for a company: usage, budgets, feedback, channel overrides (`ledger.py`) ------
    # Each entry carries its expiry on the store's clock; expired ones go at the next write.

    @property
    def _ledger(self) -> _Ledger:
        ledger: _Ledger = self.__dict__.setdefault("_ledger_state", _Ledger())
        return ledger

    def _spend(self, key: tuple[str, str, str]) -> Spend:
        entry = self._ledger.spend.get(key)
        return entry[0] if entry is not None and entry[1] > self._clock() else Spend()

    async def admission_view(
        self, team_id: str, user: str, channel: str, *, day: str, month: str
    ) -> AdmissionView:
        mine, workspace = await self.count_in_flight(team_id, user)
        override = self._ledger.overrides.get(team_id, {}).get(channel) if channel else None
        spend = await self.usage_spend(team_id, user, day=day, month=month)
        return AdmissionView(mine, workspace, spend, override)

    async def record_usage(
        self, entry: UsageEntry, *, thresholds: Thresholds, keep: UsageKeep
    ) -> UsageTotals:
        ledger, now = self._ledger, self._clock()
        ledger.forget_expired(now)
        cells = ledger.live(ledger.cells, (entry.team_id, entry.day), now) or {}
        ledger.cells[(entry.team_id, entry.day)] = (cells, now + keep.day_seconds)
        counts = cells.setdefault((entry.user, entry.channel, entry.model), {})
        for name, value in entry.counters().items():
            counts[name] = counts.get(name, 0) + value
        rollups = (
            ((entry.team_id, entry.day, entry.user), keep.day_seconds),
            ((entry.team_id, entry.month, entry.user), keep.month_seconds),
            ((entry.team_id, entry.month, ""), keep.month_seconds),
        )
        before = [self._spend(key) for key, _ in rollups]
        after = [
            Spend(b.answers + 1, b.tokens + entry.tokens, b.cost_micros + (entry.cost_micros or 0))
            for b in before
        ]
        for (key, seconds), spend in zip(rollups, after, strict=True):
            ledger.spend[key] = (spend, now + seconds)
        levels = zip(
            BUDGETS,
            thresholds.as_tuple(),
            (before[0].tokens, before[1].cost_micros, before[2].cost_micros),
            (after[0].tokens, after[1].cost_micros, after[2].cost_micros),
            strict=True,
        )
        crossed = tuple(name for name, limit, was, is_ in levels if was < limit <= is_)
        return UsageTotals(SpendView(*after), crossed)

    async def usage_spend(self, team_id: str, user: str, *, day: str, month: str) -> SpendView:
        return SpendView(
            self._spend((team_id, day, user)),
            self._spend((team_id, month, user)),
            self._spend((team_id, month, "")),
        )

    async def usage_cells(
        self, *, since: str, until: str, team_id: str | None = None
    ) -> list[UsageCell]:
        now = self._clock()
        found: list[UsageCell] = []
        for (team, day), (cells, expires) in sorted(
            self._ledger.cells.items(), key=lambda item: (item[0][1], item[0][0])
        ):
            if expires <= now or not since <= day <= until or team_id not in (None, team):
                continue
            found += [
                UsageCell(day, team, user, channel, model, dict(counts))
                for (user, channel, model), counts in sorted(cells.items())
            ]
        return found

    async def record_feedback(
        self, vote: FeedbackVote, *, keep_seconds: float, cell_keep_seconds: float
    ) -> VoteResult:
        ledger, now = self._ledger, self._clock()
        ledger.forget_expired(now)
        votes = ledger.live(ledger.votes, vote.answer_id, now) or {}
        previous = votes.get(vote.voter)
        if previous == vote.value:
            return VoteResult(False, previous)
        votes[vote.voter] = vote.value
        ledger.votes[vote.answer_id] = (votes, now + keep_seconds)
        if cell_keep_seconds > 0:
            key = (vote.team_id, vote.day)
            cells = ledger.live(ledger.cells, key, now) or {}
            expires = max(ledger.cells.get(key, (cells, 0.0))[1], now + cell_keep_seconds)
            ledger.cells[key] = (cells, expires)
            counts = cells.setdefault((vote.asker, vote.channel, vote.model), {})
            counts[f"feedback_{vote.value}"] = counts.get(f"feedback_{vote.value}", 0) + 1
            if previous is not None:
                counts[f"feedback_{previous}"] = counts.get(f"feedback_{previous}", 0) - 1
        return VoteResult(True, previous)

    async def set_channel_override(
        self, team_id: str, channel: str, override: ChannelOverride | None
    ) -> None:
        overrides = self._ledger.overrides.setdefault(team_id, {})
        if override is None:
            overrides.pop(channel, None)
        else:
            overrides[channel] = override

    async def channel_overrides(self, team_id: str) -> dict[str, ChannelOverride]:
        return dict(self._ledger.overrides.get(team_id, {}))


LEDGER_PRUNE_SECONDS = 60.0
V = TypeVar("V")


@dataclass
class _Ledger:
    """What a MemoryStore keeps for `ledger.py`, each entry with its expiry."""

    # (team, day) -> ({(user, channel, model): {counter: n}}, expiry)
    cells: dict[tuple[str, str], tuple[dict[tuple[str, str, str], dict[str, int]], float]] = field(
        default_factory=dict
    )
    # (team, day or month, user or "" for the workspace) -> (spend, expiry)
    spend: dict[tuple[str, str, str], tuple[Spend, float]] = field(default_factory=dict)
    # answer id -> ({voter: value}, expiry)
    votes: dict[str, tuple[dict[str, str], float]] = field(default_factory=dict)
    overrides: dict[str, dict[str, ChannelOverride]] = field(default_factory=dict)
    pruned_at: float = -math.inf

    @staticmethod
    def live(table: dict[K, tuple[V, float]], key: K, now: float) -> V | None:
        """The entry at `key` unless it expired."""
        entry = table.get(key)
        return entry[0] if entry is not None and entry[1] > now else None

    def forget_expired(self, now: float) -> None:
        """Drop what expired; at most once a minute, since it looks at every entry."""
        if now - self.pruned_at < LEDGER_PRUNE_SECONDS:
            return
        self.pruned_at = now
        _prune(self.cells, now)
        _prune(self.spend, now)
        _prune(self.votes, now)


def _prune(table: dict[K, tuple[V, float]], now: float) -> None:
    for key in [k for k, (_, expires) in table.items() if expires <= now]:
        del table[key]
