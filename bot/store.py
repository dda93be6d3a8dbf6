"""What replicas must agree on: answers in flight, dedupe, cancel requests, the edit budget.

An answer in flight is leased by the replica that streams it. The owner renews the lease with
each heartbeat, which also saves a checkpoint (what Slack shows so far), so that when a replica
dies another one can take the answer over and finish it instead of leaving it stuck.

`MemoryStore` serves a single replica (no `REDIS_URL`). `RedisStore` lets replicas share one
Redis; every step that must not interleave with another replica's (heartbeat, finish, take-over,
the token bucket) is one Lua script, so it is atomic and costs one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, TypeVar

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from bot.pacing import COMPETING_WINDOW_SECONDS, refill

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "slackstream:"
# An idle bucket is deleted this long after it would be full again (and any pause is over):
# a missing bucket reads as full, so the deletion loses nothing.
_BUCKET_IDLE_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class AnswerRecord:
    """One answer in flight, as every replica sees it."""

    answer_id: str
    team_id: str
    channel: str
    thread_ts: str
    message_ts: str
    asker: str
    owner: str
    started_at: float
    heartbeat_at: float
    lease_until: float
    shown_text: str = ""
    model: str = ""
    question_ts: str = ""  # orders answers within a thread (one at a time, in order)


_FLOAT_FIELDS = frozenset({"started_at", "heartbeat_at", "lease_until"})


@dataclass(frozen=True)
class EditGrant:
    """The workspace budget's answer to one request for an edit."""

    wait: float  # 0.0: a token was taken; else seconds until one could be
    competing: int  # answers that asked this workspace's budget lately, the asker included

    @property
    def granted(self) -> bool:
        return self.wait <= 0


def thread_order(ts: str) -> float | None:
    """A Slack ts ("seconds.micros") as a number that sorts as the ts does, or None when `ts`
    is not one. A double keeps every microsecond of a Slack ts distinct until the year 2106."""
    seconds, _, micros = ts.partition(".")
    if not (seconds.isascii() and seconds.isdigit()):
        return None
    if micros and not (micros.isascii() and micros.isdigit() and len(micros) <= 6):
        return None
    return int(seconds) + int(micros or 0) / 1_000_000


class StoreError(Exception):
    """Raised by a store when its backend is unreachable (wraps redis errors)."""


class Store(Protocol):
    """The state replicas share. Times passed as `now`/`until` are wall-clock seconds
    (`time.time()`), since several machines compare them."""

    kind: str  # "memory" or "redis", for health reports

    async def claim_event(self, key: str, ttl_seconds: float) -> bool:
        """True for the first claimer of `key` within the ttl: Slack redelivers unacknowledged
        events, and one message may arrive as two event types."""
        ...

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        """A thread's messages as last read from Slack, or None: Slack limits
        `conversations.replies` tightly for some apps, so later reads fetch only what is new."""
        ...

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        """Remember a thread's messages for `ttl_seconds` (then it is read whole again, which
        also picks up edits made to older messages)."""
        ...

    async def register(self, record: AnswerRecord) -> None:
        """Make a new answer visible to every janitor from its first moment."""
        ...

    async def heartbeat(
        self,
        answer_id: str,
        owner: str,
        *,
        now: float,
        lease_seconds: float,
        shown_text: str | None = None,
        message_ts: str | None = None,
    ) -> bool:
        """Renew the lease and save the checkpoint (None leaves a field as it is), in one
        atomic step. False means the answer was taken over or finished: stop editing it."""
        ...

    async def finish(self, answer_id: str, owner: str) -> bool:
        """Remove the answer if `owner` still holds it, so that a replica that lost its lease
        cannot undo a take-over. True if removed."""
        ...

    async def get(self, answer_id: str) -> AnswerRecord | None: ...

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        """(answers in flight for `user` in `team_id`, answers in flight in `team_id`): the caps,
        checked for every question. Counted from indexes kept in the same atomic steps as the
        records (register, finish), so the cost follows one workspace, not the whole roster."""
        ...

    async def earlier_in_thread(self, channel: str, thread_ts: str, question_ts: str) -> int:
        """How many answers in flight in the thread `(channel, thread_ts)` answer a question
        asked before `question_ts` (Slack ts order): a follow-up waits until this is 0. The
        answer to `question_ts` itself never counts; a ts that is not a Slack ts orders
        nothing (0, and such a record is never counted)."""
        ...

    async def claim_lapsed(
        self,
        *,
        now: float,
        new_owner: str,
        lease_seconds: float,
        previous_owner: str | None = None,
        limit: int = 100,
    ) -> list[AnswerRecord]:
        """Take over answers whose lease ran out (lease_until < now), and with `previous_owner`
        also every answer it owns whatever its lease (a replica restarted under the same id
        recovers at once). Each answer goes to exactly one caller however many race; the
        claimed records come back with `new_owner` and a fresh lease."""
        ...

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        """Flag the answer and signal every replica. The flag outlives the signal, so an owner
        that missed the signal still finds it at its next check."""
        ...

    async def cancel_requested(self, answer_id: str) -> str | None:
        """Who asked to stop the answer, or None."""
        ...

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """(answer_id, by_user) as cancels are requested on any replica; best effort (the flag
        is the record). Ends when the store is closed."""
        ...

    async def take_edit_token(
        self,
        team_id: str,
        *,
        now: float,
        per_minute: float,
        burst: float,
        reserve: float = 0.0,
        answer_id: str = "",
    ) -> EditGrant:
        """Take one `chat.update` from the workspace budget that every replica shares (a
        token bucket of capacity `burst`), or learn how long to wait: until a token above
        `reserve` is there, or the pause ends, whichever is later. A reserve keeps tokens for
        callers that must get through (final edits). ValueError unless
        0 <= reserve <= burst - 1.

        The budget also counts who shares it: `answer_id` is counted as competing for
        COMPETING_WINDOW_SECONDS after it last asked; the count comes back in the same round
        trip (pacing uses it to share the budget fairly).
        """
        ...

    async def pause_edits(self, team_id: str, until: float) -> None:
        """Slack answered 429: no replica gets a token before `until` (the later pause wins)."""
        ...

    async def edit_pause_until(self, team_id: str) -> float:
        """When the workspace's pause ends; 0.0 when there is none."""
        ...

    async def ping(self) -> None:
        """Raise StoreError when the backend is unreachable (readiness, `slackstream check`)."""
        ...

    async def close(self) -> None:
        """Release the backend and end every `cancel_signals` iteration."""
        ...


def _check_budget(per_minute: float, burst: float, reserve: float) -> None:
    # A reserve of the whole burst would make every ordinary caller wait forever.
    if per_minute <= 0 or burst < 1 or not 0 <= reserve <= burst - 1:
        raise ValueError(
            f"edit budget needs per_minute > 0 and 0 <= reserve <= burst - 1, "
            f"got per_minute={per_minute}, burst={burst}, reserve={reserve}"
        )


# --------------------------------------------------------------------------------------------
# In-process store
# --------------------------------------------------------------------------------------------

K = TypeVar("K")


def _discard(index: dict[K, set[str]], key: K, answer_id: str) -> None:
    """Remove `answer_id` from the set at `index[key]`, and the key once the set is empty."""
    members = index.get(key)
    if members is not None:
        members.discard(answer_id)
        if not members:
            del index[key]


@dataclass
class _Bucket:
    tokens: float
    last: float


class MemoryStore:
    """The store of a lone replica: same contract as RedisStore, nothing survives a restart.

    Each method runs without awaiting, so on one event loop every step is atomic. `clock`
    times the expiry of dedupe keys and cancel flags (tests inject a manual one); leases and
    the edit budget use the `now` their callers pass.
    """

    kind = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._answers: dict[str, AnswerRecord] = {}
        # Indexes of _answers, kept by _index/_unindex only (register, finish).
        self._by_team: dict[str, set[str]] = {}
        self._by_user: dict[tuple[str, str], set[str]] = {}
        self._by_thread: dict[tuple[str, str], set[str]] = {}  # answers with a question_ts
        self._events: dict[str, float] = {}
        self._event_expiries: list[tuple[float, str]] = []
        self._cancels: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, _Bucket] = {}
        # team -> answer_id -> when it last asked, oldest first (so expiry pops from the front)
        self._competitors: dict[str, OrderedDict[str, float]] = {}
        self._pauses: dict[str, float] = {}
        self._threads: dict[str, tuple[float, str]] = {}  # key -> (expires, JSON messages)
        self._listeners: set[asyncio.Queue[tuple[str, str] | None]] = set()
        self._closed = False

    async def claim_event(self, key: str, ttl_seconds: float) -> bool:
        now = self._clock()
        self._forget_expired_events(now)
        if key in self._events:
            return False
        expires = now + ttl_seconds
        self._events[key] = expires
        heapq.heappush(self._event_expiries, (expires, key))
        return True

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
        self._threads = {k: v for k, v in self._threads.items() if v[0] > now}
        self._threads[key] = (now + ttl_seconds, json.dumps(messages))

    def _forget_expired_events(self, now: float) -> None:
        # A heap keeps the cleanup cheap however many events go by.
        while self._event_expiries and self._event_expiries[0][0] <= now:
            expires, key = heapq.heappop(self._event_expiries)
            if self._events.get(key) == expires:
                del self._events[key]

    async def register(self, record: AnswerRecord) -> None:
        previous = self._answers.get(record.answer_id)
        if previous is not None:
            self._unindex(previous)
        self._answers[record.answer_id] = record
        self._index(record)

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

    async def heartbeat(
        self,
        answer_id: str,
        owner: str,
        *,
        now: float,
        lease_seconds: float,
        shown_text: str | None = None,
        message_ts: str | None = None,
    ) -> bool:
        record = self._answers.get(answer_id)
        if record is None or record.owner != owner:
            return False
        record = replace(record, heartbeat_at=now, lease_until=now + lease_seconds)
        if shown_text is not None:
            record = replace(record, shown_text=shown_text)
        if message_ts is not None:
            record = replace(record, message_ts=message_ts)
        self._answers[answer_id] = record
        return True

    async def finish(self, answer_id: str, owner: str) -> bool:
        record = self._answers.get(answer_id)
        if record is None or record.owner != owner:
            return False
        del self._answers[answer_id]
        self._unindex(record)
        self._cancels.pop(answer_id, None)
        return True

    async def get(self, answer_id: str) -> AnswerRecord | None:
        return self._answers.get(answer_id)

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
        now: float,
        new_owner: str,
        lease_seconds: float,
        previous_owner: str | None = None,
        limit: int = 100,
    ) -> list[AnswerRecord]:
        # A take-over changes the owner and the lease only, so the indexes stay as they are.
        claimed: list[AnswerRecord] = []
        for record in sorted(self._answers.values(), key=lambda r: r.lease_until):
            if len(claimed) >= limit:
                break
            if record.lease_until < now or record.owner == previous_owner:
                taken = replace(
                    record, owner=new_owner, heartbeat_at=now, lease_until=now + lease_seconds
                )
                self._answers[record.answer_id] = taken
                claimed.append(taken)
        return claimed

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        self._cancels[answer_id] = (by_user, self._clock() + ttl_seconds)
        for queue in self._listeners:
            queue.put_nowait((answer_id, by_user))

    async def cancel_requested(self, answer_id: str) -> str | None:
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

    async def take_edit_token(
        self,
        team_id: str,
        *,
        now: float,
        per_minute: float,
        burst: float,
        reserve: float = 0.0,
        answer_id: str = "",
    ) -> EditGrant:
        # Mirrored by _TAKE_TOKEN_LUA in RedisStore: change both together.
        _check_budget(per_minute, burst, reserve)
        bucket = self._buckets.setdefault(team_id, _Bucket(tokens=burst, last=now))
        tokens = refill(bucket.tokens, bucket.last, now, per_minute, burst)
        bucket.last = max(bucket.last, now)
        pause_until = self._pauses.get(team_id, 0.0)
        wait = 0.0
        if pause_until <= now and tokens - 1 >= reserve:
            tokens -= 1
        else:
            wait = max((reserve + 1 - tokens) * 60.0 / per_minute, pause_until - now)
        bucket.tokens = tokens
        competitors = self._competitors.setdefault(team_id, OrderedDict())
        if answer_id:
            competitors.pop(answer_id, None)
            competitors[answer_id] = now
        while competitors and next(iter(competitors.values())) < now - COMPETING_WINDOW_SECONDS:
            competitors.popitem(last=False)
        if not competitors:
            del self._competitors[team_id]
        return EditGrant(wait, len(competitors))

    async def pause_edits(self, team_id: str, until: float) -> None:
        self._pauses[team_id] = max(self._pauses.get(team_id, 0.0), until)

    async def edit_pause_until(self, team_id: str) -> float:
        return self._pauses.get(team_id, 0.0)

    async def ping(self) -> None:
        """Always reachable: it lives in this process."""

    async def close(self) -> None:
        self._closed = True
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()


# --------------------------------------------------------------------------------------------
# Redis store
# --------------------------------------------------------------------------------------------

# KEYS: answer hash, inflight zset.
# ARGV: answer_id, owner, now, lease_until, has_text, shown_text, has_message_ts, message_ts.
_HEARTBEAT_LUA = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[3], 'lease_until', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'shown_text', ARGV[6]) end
if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'message_ts', ARGV[8]) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# The indexes of answers in flight (RedisStore's docstring lists their keys) are written only
# by these two scripts, in the same step as the record, so a count never sees one without the
# other. Redis drops a set once its last member is removed: no index outlives its answers.
_INDEX_LUA = """
local function index_keys(prefix, team, asker, channel, thread_ts)
  return prefix .. 'inflight:team:' .. team,
    prefix .. 'inflight:user:' .. team .. ':' .. asker,
    prefix .. 'inflight:thread:' .. channel .. ':' .. thread_ts
end
local function unindex(prefix, key, id)
  local old = redis.call('HMGET', key, 'team_id', 'asker', 'channel', 'thread_ts')
  if old[1] then
    local team, user, thread = index_keys(prefix, old[1], old[2] or '', old[3] or '',
      old[4] or '')
    redis.call('SREM', team, id)
    redis.call('SREM', user, id)
    redis.call('ZREM', thread, id)
  end
end
"""

# KEYS: answer hash, inflight zset. ARGV: index key prefix, answer_id, lease_until, thread order
# ('' for none), then the record as field, value pairs (team_id, asker, channel, thread_ts first).
_REGISTER_LUA = (
    _INDEX_LUA
    + """
local prefix, id = ARGV[1], ARGV[2]
unindex(prefix, KEYS[1], id) -- registered again (its record was lost): the old entries go
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[3], id)
local team, user, thread = index_keys(prefix, ARGV[6], ARGV[8], ARGV[10], ARGV[12])
redis.call('SADD', team, id)
redis.call('SADD', user, id)
if ARGV[4] ~= '' then redis.call('ZADD', thread, ARGV[4], id) end
return 1
"""
)

# KEYS: answer hash, inflight zset, cancel flag. ARGV: answer_id, owner, index key prefix.
_FINISH_LUA = (
    _INDEX_LUA
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then
  return 0
end
unindex(ARGV[3], KEYS[1], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: user set, team set. ARGV: answer key prefix. An id whose record is gone without
# finish() (deleted by hand, evicted) is dropped rather than counted, so counts stay exact.
_COUNT_LUA = """
local function live(set)
  local n = 0
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', ARGV[1] .. id) == 1 then
      n = n + 1
    else
      redis.call('SREM', set, id)
    end
  end
  return n
end
return {live(KEYS[1]), live(KEYS[2])}
"""

# KEYS: thread zset. ARGV: answer key prefix, thread order of the question. Strictly earlier
# questions only, so the asking answer never counts itself; ids without a record are dropped.
_EARLIER_LUA = """
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    n = n + 1
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return n
"""

# KEYS: inflight zset. ARGV: answer key prefix, now, new_owner, lease_until,
# previous_owner ('' for none), limit. Returns the claimed answers as HGETALL arrays.
# The whole scan-and-rewrite runs as one script, so two replicas never claim the same answer.
_CLAIM_LUA = """
local inflight, prefix = KEYS[1], ARGV[1]
local now, new_owner, lease_until = ARGV[2], ARGV[3], ARGV[4]
local previous, limit = ARGV[5], tonumber(ARGV[6])
local candidates
if previous == '' then
  candidates = redis.call('ZRANGEBYSCORE', inflight, '-inf', '(' .. now, 'LIMIT', 0, limit)
else
  candidates = redis.call('ZRANGE', inflight, 0, -1)
end
local claimed = {}
for _, id in ipairs(candidates) do
  if #claimed >= limit then break end
  local key = prefix .. id
  local owner = redis.call('HGET', key, 'owner')
  if not owner then
    redis.call('ZREM', inflight, id) -- no record left to finish: forget the id
  elseif tonumber(redis.call('ZSCORE', inflight, id)) < tonumber(now) or owner == previous then
    redis.call('HSET', key, 'owner', new_owner, 'heartbeat_at', now, 'lease_until', lease_until)
    redis.call('ZADD', inflight, lease_until, id)
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end
return claimed
"""

# KEYS: bucket hash, competitors zset (answer id -> when it last asked).
# ARGV: now, per_minute, burst, reserve, idle grace seconds, answer_id ('' for none),
# competing window seconds. Returns {wait, competing}.
# Mirrors `refill` and MemoryStore.take_edit_token: change them together.
# Numbers are written with %.17g because Lua's tostring keeps only 14 digits.
_TAKE_TOKEN_LUA = """
local now, per_minute = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, reserve, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local id, window = ARGV[6], tonumber(ARGV[7])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last', 'pause_until')
local tokens = state[1] and tonumber(state[1]) or burst
local last = state[2] and tonumber(state[2]) or now
local pause_until = state[3] and tonumber(state[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - last) * per_minute / 60)
last = math.max(last, now)
local wait = 0
if pause_until <= now and tokens - 1 >= reserve then
  tokens = tokens - 1
else
  wait = math.max((reserve + 1 - tokens) * 60 / per_minute, pause_until - now)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'last', string.format('%.17g', last))
local idle = burst * 60 / per_minute + math.max(0, pause_until - now) + grace
redis.call('PEXPIRE', KEYS[1], math.ceil(idle * 1000))
if id ~= '' then
  redis.call('ZADD', KEYS[2], string.format('%.17g', now), id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.17g', now - window))
local competing = redis.call('ZCARD', KEYS[2])
if competing > 0 then
  redis.call('PEXPIRE', KEYS[2], math.ceil((window + grace) * 1000))
end
return {string.format('%.17g', wait), competing}
"""

# KEYS: bucket hash. ARGV: until, ttl_ms. Keeps the later pause and never shortens the expiry,
# which take_edit_token set from the refill time this script does not know.
_PAUSE_LUA = """
local current = redis.call('HGET', KEYS[1], 'pause_until')
if not current or tonumber(ARGV[1]) > tonumber(current) then
  redis.call('HSET', KEYS[1], 'pause_until', ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


def _text(value: str | bytes) -> str:
    """Clients may or may not decode responses; the store works with either."""
    return value.decode() if isinstance(value, bytes) else value


def _encode(record: AnswerRecord) -> dict[str, EncodableT]:
    return {name: value for name, value in asdict(record).items()}


def _number(value: float) -> str:
    """Every digit of a double (Lua's tostring and str() of some values would keep fewer)."""
    return f"{value:.17g}"


def _decode(raw: Mapping[Any, Any] | list[Any]) -> AnswerRecord | None:
    """A record from HGETALL's dict or a script's flat [field, value, ...] array."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    if not raw:
        return None
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = _text(name)
        values[key] = float(_text(value)) if key in _FLOAT_FIELDS else _text(value)
    return AnswerRecord(**values)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Callers handle one exception type, whatever redis-py raised."""
    try:
        yield
    except RedisError as e:
        unreachable = isinstance(e, RedisConnectionError | RedisTimeoutError)
        reason = "unreachable" if unreachable else "error"
        raise StoreError(f"Redis {reason} during {action}: {e}") from e


class RedisStore:
    """The store shared by replicas through one Redis.

    Keys, all under `prefix`:
      answer:{id}    hash of an AnswerRecord's fields
      inflight       sorted set of answer ids scored by lease_until (the janitor's scan)
      inflight:team:{team}, inflight:user:{team}:{user}
                     sets of answer ids in flight per workspace and per asker (the caps)
      inflight:thread:{channel}:{thread_ts}
                     sorted set of answer ids in a thread, scored by question ts (thread order)
      event:{key}    dedupe marker, SET NX PX
      cancel:{id}    who asked to stop the answer, SET EX; also published on the `cancel` channel
      bucket:{team}  the workspace's edit budget (tokens, last, pause_until), expires when idle
      bucket:{team}:competing  sorted set of the answers sharing that budget, by when they asked
    The store owns the client: `close()` closes it.
    """

    kind = "redis"

    def __init__(self, redis: redis.asyncio.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._inflight = f"{prefix}inflight"
        self._cancel_channel = f"{prefix}cancel"
        self._closed = asyncio.Event()
        self._register = redis.register_script(_REGISTER_LUA)
        self._heartbeat = redis.register_script(_HEARTBEAT_LUA)
        self._count = redis.register_script(_COUNT_LUA)
        self._earlier = redis.register_script(_EARLIER_LUA)
        self._finish = redis.register_script(_FINISH_LUA)
        self._claim = redis.register_script(_CLAIM_LUA)
        self._take_token = redis.register_script(_TAKE_TOKEN_LUA)
        self._pause = redis.register_script(_PAUSE_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, **kw: Any) -> RedisStore:
        """A client that rides out a Redis blip (about 1.4 s of retries) yet reports a Redis
        that is down within about 2 s, so replies degrade instead of hanging. `kw` overrides
        the client options."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 2.0,
            "health_check_interval": 15,
            # redis-py's async pool refuses connection 101 by default: hundreds of answers in
            # flight each hold one briefly, and a refused finish() later looks like an orphan.
            "max_connections": 1000,
            "retry": Retry(ExponentialBackoff(cap=0.8, base=0.1), retries=3),
            "decode_responses": True,
        }
        options.update(kw)
        return cls(redis.asyncio.Redis.from_url(url, **options), prefix=prefix)

    def _answer_key(self, answer_id: str) -> str:
        return f"{self._prefix}answer:{answer_id}"

    def _cancel_key(self, answer_id: str) -> str:
        return f"{self._prefix}cancel:{answer_id}"

    def _bucket_key(self, team_id: str) -> str:
        return f"{self._prefix}bucket:{team_id}"

    async def claim_event(self, key: str, ttl_seconds: float) -> bool:
        with _translated("claim_event"):
            created = await self._redis.set(
                f"{self._prefix}event:{key}", "1", nx=True, px=max(1, round(ttl_seconds * 1000))
            )
        return bool(created)

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        with _translated("get_thread"):
            raw = await self._redis.get(f"{self._prefix}thread:{key}")
        if raw is None:
            return None
        messages = json.loads(raw)
        return messages if isinstance(messages, list) else None

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        with _translated("put_thread"):
            await self._redis.set(
                f"{self._prefix}thread:{key}",
                json.dumps(messages),
                px=max(1, round(ttl_seconds * 1000)),
            )

    async def register(self, record: AnswerRecord) -> None:
        order = thread_order(record.question_ts)
        fields = _encode(record)
        # The script reads the index fields at fixed positions: put them first.
        head = ("team_id", "asker", "channel", "thread_ts")
        pairs: list[EncodableT] = []
        for name in (*head, *(f for f in fields if f not in head)):
            pairs += [name, fields[name]]
        args: list[EncodableT] = [
            self._prefix,
            record.answer_id,
            record.lease_until,
            "" if order is None else _number(order),
            *pairs,
        ]
        with _translated("register"):
            await self._register(
                keys=[self._answer_key(record.answer_id), self._inflight], args=args
            )

    async def heartbeat(
        self,
        answer_id: str,
        owner: str,
        *,
        now: float,
        lease_seconds: float,
        shown_text: str | None = None,
        message_ts: str | None = None,
    ) -> bool:
        args: list[EncodableT] = [
            answer_id,
            owner,
            now,
            now + lease_seconds,
            "0" if shown_text is None else "1",
            shown_text or "",
            "0" if message_ts is None else "1",
            message_ts or "",
        ]
        with _translated("heartbeat"):
            renewed = await self._heartbeat(
                keys=[self._answer_key(answer_id), self._inflight], args=args
            )
        return bool(renewed)

    async def finish(self, answer_id: str, owner: str) -> bool:
        keys = [self._answer_key(answer_id), self._inflight, self._cancel_key(answer_id)]
        with _translated("finish"):
            removed = await self._finish(keys=keys, args=[answer_id, owner, self._prefix])
        return bool(removed)

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        keys = [
            f"{self._prefix}inflight:user:{team_id}:{user}",
            f"{self._prefix}inflight:team:{team_id}",
        ]
        with _translated("count_in_flight"):
            for_user, for_team = await self._count(keys=keys, args=[self._answer_key("")])
        return int(for_user), int(for_team)

    async def earlier_in_thread(self, channel: str, thread_ts: str, question_ts: str) -> int:
        order = thread_order(question_ts)
        if order is None:
            return 0
        key = f"{self._prefix}inflight:thread:{channel}:{thread_ts}"
        with _translated("earlier_in_thread"):
            earlier = await self._earlier(keys=[key], args=[self._answer_key(""), _number(order)])
        return int(earlier)

    async def get(self, answer_id: str) -> AnswerRecord | None:
        with _translated("get"):
            raw = await self._redis.hgetall(self._answer_key(answer_id))
        return _decode(raw)

    async def claim_lapsed(
        self,
        *,
        now: float,
        new_owner: str,
        lease_seconds: float,
        previous_owner: str | None = None,
        limit: int = 100,
    ) -> list[AnswerRecord]:
        args: list[EncodableT] = [
            self._answer_key(""),
            now,
            new_owner,
            now + lease_seconds,
            previous_owner or "",
            limit,
        ]
        with _translated("claim_lapsed"):
            rows = await self._claim(keys=[self._inflight], args=args)
        return [record for row in rows if (record := _decode(row)) is not None]

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        message = json.dumps({"answer_id": answer_id, "by_user": by_user})
        with _translated("request_cancel"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._cancel_key(answer_id), by_user, px=max(1, round(ttl_seconds * 1000)))
                pipe.publish(self._cancel_channel, message)
                await pipe.execute()

    async def cancel_requested(self, answer_id: str) -> str | None:
        with _translated("cancel_requested"):
            by_user = await self._redis.get(self._cancel_key(answer_id))
        return None if by_user is None else _text(by_user)

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """Listening starts at the first iteration. A Redis outage does not end the
        iteration: it resubscribes with a backoff; signals published meanwhile are lost, the
        flags are not."""
        return self._listen()

    async def _listen(self) -> AsyncIterator[tuple[str, str]]:
        closed = asyncio.ensure_future(self._closed.wait())
        backoff = 0.1
        try:
            while not closed.done():
                pubsub = self._redis.pubsub()
                receive: asyncio.Future[Any] | None = None
                try:
                    await pubsub.subscribe(self._cancel_channel)
                    backoff = 0.1
                    while True:
                        receive = asyncio.ensure_future(
                            pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                        )
                        await asyncio.wait({receive, closed}, return_when=asyncio.FIRST_COMPLETED)
                        if closed.done():
                            return
                        signal = self._parse_signal(receive.result())
                        if signal is not None:
                            yield signal
                except RedisError as e:
                    log.warning("cancel signals: Redis unavailable (%s); resubscribing", e)
                finally:
                    if receive is not None and not receive.done():
                        receive.cancel()
                        with contextlib.suppress(asyncio.CancelledError, RedisError):
                            await receive
                    with contextlib.suppress(RedisError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
                await asyncio.wait({closed}, timeout=backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            closed.cancel()

    @staticmethod
    def _parse_signal(message: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if message is None or message.get("type") != "message":
            return None
        try:
            payload = json.loads(_text(message["data"]))
            return str(payload["answer_id"]), str(payload["by_user"])
        except (ValueError, KeyError, TypeError):
            log.warning("cancel signals: ignoring malformed message %r", message.get("data"))
            return None

    async def take_edit_token(
        self,
        team_id: str,
        *,
        now: float,
        per_minute: float,
        burst: float,
        reserve: float = 0.0,
        answer_id: str = "",
    ) -> EditGrant:
        _check_budget(per_minute, burst, reserve)
        args: list[EncodableT] = [
            now,
            per_minute,
            burst,
            reserve,
            _BUCKET_IDLE_GRACE_SECONDS,
            answer_id,
            COMPETING_WINDOW_SECONDS,
        ]
        keys = [self._bucket_key(team_id), self._bucket_key(team_id) + ":competing"]
        with _translated("take_edit_token"):
            wait, competing = await self._take_token(keys=keys, args=args)
        return EditGrant(float(_text(wait)), int(competing))

    async def pause_edits(self, team_id: str, until: float) -> None:
        ttl_seconds = max(0.0, until - time.time()) + _BUCKET_IDLE_GRACE_SECONDS
        with _translated("pause_edits"):
            await self._pause(
                keys=[self._bucket_key(team_id)], args=[until, math.ceil(ttl_seconds * 1000)]
            )

    async def edit_pause_until(self, team_id: str) -> float:
        with _translated("edit_pause_until"):
            until = await self._redis.hget(self._bucket_key(team_id), "pause_until")
        return 0.0 if until is None else float(_text(until))

    async def ping(self) -> None:
        with _translated("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        """Also closes the client, which the store owns."""
        if self._closed.is_set():
            return
        self._closed.set()
        with _translated("close"):
            await self._redis.aclose()
