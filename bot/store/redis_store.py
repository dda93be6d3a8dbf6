"""The store replicas share through one Redis. Every step that must not interleave with another
replica's is one Lua script (`lua.py`): atomic, and one round trip. Keys: `keys.py`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from bot.pacing import COMPETING_WINDOW_SECONDS
from bot.retry import Backoff
from bot.store import lua
from bot.store.contract import (
    AnswerRecord,
    Checkpoint,
    EditGrant,
    EventClaim,
    LeaseReport,
    LeaseState,
    Registration,
    StoreError,
    check_budget,
    thread_order,
)
from bot.store.keys import ANSWER, DEFAULT_PREFIX, TEXT, Keys, LedgerKeys
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
    cell_field,
    cells_from_fields,
)

log = logging.getLogger(__name__)

# An idle bucket is deleted this long after it would be full again (and any pause is over):
# a missing bucket reads as full, so the deletion loses nothing.
BUCKET_IDLE_GRACE_SECONDS = 60.0
TOMBSTONE_SECONDS = 6 * 3600.0  # a finished answer is remembered as finished this long
TEXT_KEEP_SECONDS = 6 * 3600.0  # an unfinished answer's text outlives a forgotten record by this
CANCEL_POLL_SECONDS = 1.0  # the Stop listener's read timeout, below the client's socket timeout


def _text(value: str | bytes) -> str:
    """Clients may or may not decode responses; the store works with either."""
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _record(raw: Mapping[Any, Any] | list[Any], text: str | bytes = "") -> AnswerRecord | None:
    """A record from HGETALL's dict or a script's flat [field, value, ...] array."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    if not raw:
        return None
    return AnswerRecord.from_fields({_text(k): _text(v) for k, v in raw.items()}, _text(text))


def _lease_report(reply: list[Any]) -> LeaseReport:
    state = LeaseState(_text(reply[0]))
    if state is LeaseState.HELD:
        stop_by = _text(reply[1]) or None
        return LeaseReport(state, stop_by=stop_by, text_rejected=bool(int(reply[2])))
    if state is LeaseState.LOST:
        return LeaseReport(state, holder=_record(reply[1], reply[2]))
    return LeaseReport(state)


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
    """See the module docstring. The store owns the client: `close()` closes it.

    `clock` replaces Redis `TIME` in the scripts (tests only: it makes leases and buckets
    deterministic); by default every time is the Redis server's.
    """

    kind = "redis"

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = client
        self._keys = Keys(prefix)
        self._clock = clock
        self._closed = asyncio.Event()
        scripts = {
            "claim_event": lua.CLAIM_EVENT,
            "register": lua.REGISTER,
            "renew": lua.RENEW,
            "finish": lua.FINISH,
            "claim_lapsed": lua.CLAIM_LAPSED,
            "count": lua.COUNT,
            "earlier": lua.EARLIER,
            "take_edit_token": lua.TAKE_EDIT_TOKEN,
            "pause": lua.PAUSE,
            "put_thread": lua.PUT_THREAD,
        }
        self._scripts = {name: client.register_script(body) for name, body in scripts.items()}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
        **kw: Any,
    ) -> RedisStore:
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
        return cls(redis.asyncio.Redis.from_url(url, **options), prefix=prefix, clock=clock)

    def _now(self) -> str:
        """The `now` argument of a script: empty for the server's clock."""
        return "" if self._clock is None else f"{self._clock():.17g}"

    async def _run(self, name: str, keys: list[str], args: list[EncodableT]) -> Any:
        with _translated(name):
            return await self._scripts[name](keys=keys, args=args)

    # -- dedupe and threads ----------------------------------------------------------------------

    async def claim_event(self, key: str, ttl_seconds: float, token: str) -> EventClaim:
        first, age = await self._run(
            "claim_event",
            [self._keys.event(key), self._keys.epoch],
            [token, _ms(ttl_seconds), self._now()],
        )
        return EventClaim(first=bool(int(first)), data_age=float(_text(age)))

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        with _translated("get_thread"):
            raw = await self._redis.get(self._keys.thread(key))
        if raw is None:
            return None
        messages = json.loads(raw)
        return messages if isinstance(messages, list) else None

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        await self._run(
            "put_thread", [self._keys.thread(key)], [json.dumps(messages), _ms(ttl_seconds)]
        )

    # -- answers ---------------------------------------------------------------------------------

    def _answer_keys(self, answer_id: str) -> list[str]:
        """The keys every lease script of one answer touches, in the scripts' order."""
        return [
            self._keys.answer(answer_id),
            self._keys.text(answer_id),
            self._keys.inflight,
            self._keys.cancel(answer_id),
        ]

    async def register(
        self,
        record: AnswerRecord,
        *,
        lease_seconds: float,
        take_back: bool = False,
        dedupe_ttl_seconds: float,
    ) -> Registration:
        fields = record.fields()
        fields["started_at"] = fields["started_at"] if record.started_at else ""
        order = thread_order(record.question_ts)
        reply = await self._run(
            "register",
            self._answer_keys(record.answer_id)[:3],
            [
                json.dumps(fields, ensure_ascii=False),
                record.text,
                lease_seconds,
                "1" if take_back else "0",
                self._now(),
                self._keys.prefix,
                _ms(dedupe_ttl_seconds),
                "" if order is None else f"{order:.17g}",
                _ms(TEXT_KEEP_SECONDS),
            ],
        )
        if int(reply[0]):
            return Registration(True)
        return Registration(False, _record(reply[1], reply[2]))

    async def renew(
        self,
        answer_id: str,
        token: str,
        *,
        lease_seconds: float,
        checkpoint: Checkpoint | None = None,
    ) -> LeaseReport:
        reply = await self._run(
            "renew",
            self._answer_keys(answer_id),
            [
                token,
                lease_seconds,
                checkpoint.as_json() if checkpoint else "",
                self._now(),
                _ms(TEXT_KEEP_SECONDS),
            ],
        )
        return _lease_report(reply)

    async def finish(self, answer_id: str, token: str, *, outcome: str) -> LeaseState:
        state = await self._run(
            "finish",
            self._answer_keys(answer_id),
            [token, outcome, _ms(TOMBSTONE_SECONDS), self._keys.prefix],
        )
        return LeaseState(_text(state))

    async def get(self, answer_id: str) -> AnswerRecord | None:
        with _translated("get"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._keys.answer(answer_id))
                pipe.get(self._keys.text(answer_id))
                raw, text = await pipe.execute()
        return _record(raw, text or "")

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        keys = [self._keys.user_index(team_id, user), self._keys.team_index(team_id)]
        for_user, for_team = await self._run("count", keys, [self._keys.answer("")])
        return int(for_user), int(for_team)

    async def earlier_in_thread(self, channel: str, thread_ts: str, question_ts: str) -> int:
        order = thread_order(question_ts)
        if order is None:
            return 0
        key = self._keys.thread_index(channel, thread_ts)
        return int(await self._run("earlier", [key], [self._keys.answer(""), f"{order:.17g}"]))

    async def claim_lapsed(
        self,
        *,
        new_owner: str,
        incarnation: str,
        lease_seconds: float,
        previous_owner: str | None = None,
        limit: int = 100,
    ) -> list[AnswerRecord]:
        # Each claim's tokens are new: a retried claim never reuses another claim's token.
        token_prefix = f"{incarnation}:{uuid.uuid4().hex[:8]}:"
        rows = await self._run(
            "claim_lapsed",
            [self._keys.inflight],
            [
                self._keys.prefix + ANSWER,
                self._keys.prefix + TEXT,
                new_owner,
                incarnation,
                token_prefix,
                lease_seconds,
                previous_owner or "",
                limit,
                self._now(),
            ],
        )
        return [record for raw, text in rows if (record := _record(raw, text)) is not None]

    # -- cancel ----------------------------------------------------------------------------------

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        message = json.dumps({"answer_id": answer_id, "by_user": by_user})
        with _translated("request_cancel"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._keys.cancel(answer_id), by_user, px=_ms(ttl_seconds))
                pipe.publish(self._keys.cancel_channel, message)
                await pipe.execute()

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """Listening starts at the first iteration. A Redis outage does not end the
        iteration: it resubscribes with a backoff; signals published meanwhile are lost, the
        flags are not (`renew` reports them)."""
        return self._listen()

    async def _listen(self) -> AsyncIterator[tuple[str, str]]:
        backoff = Backoff(first=0.1, cap=5.0)
        while not self._closed.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._keys.cancel_channel)
                backoff.reset()
                while not self._closed.is_set():
                    # A read timeout below the client's socket timeout: an idle subscription
                    # returns None here instead of failing and resubscribing every 2 s.
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=CANCEL_POLL_SECONDS
                    )
                    signal = self._parse_signal(message)
                    if signal is not None:
                        yield signal
            except RedisError as e:
                log.warning("cancel signals: Redis unavailable (%s); resubscribing", e)
            finally:
                with contextlib.suppress(RedisError):
                    closer: Any = pubsub.aclose  # typed only from redis 8.2
                    await closer()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.delay()):
                    await self._closed.wait()

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
        keys = [
            self._keys.bucket(team_id),
            self._keys.competing(team_id),
            self._keys.answer(answer_id),
            self._keys.text(answer_id),
        ]
        wait, competing, lease, refused = await self._run(
            "take_edit_token",
            keys,
            [
                per_minute,
                burst,
                reserve,
                BUCKET_IDLE_GRACE_SECONDS,
                answer_id,
                COMPETING_WINDOW_SECONDS,
                token,
                checkpoint.as_json() if checkpoint and token else "",
                self._now(),
                _ms(TEXT_KEEP_SECONDS),
            ],
        )
        return EditGrant(
            float(_text(wait)),
            int(competing),
            lease=LeaseState(_text(lease)) if _text(lease) else None,
            text_rejected=bool(int(refused)),
        )

    async def pause_edits(self, team_id: str, seconds: float) -> None:
        await self._run(
            "pause",
            [self._keys.bucket(team_id)],
            [seconds, BUCKET_IDLE_GRACE_SECONDS, self._now()],
        )

    # -- housekeeping ----------------------------------------------------------------------------

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

    # -- files in threads -----------------------------------------------------------

    async def get_file(self, key: str) -> dict[str, Any] | None:
        with _translated("get_file"):
            raw = await self._redis.get(self._keys.file(key))
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    async def put_file(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        with _translated("put_file"):
            await self._redis.set(self._keys.file(key), json.dumps(value), px=_ms(ttl_seconds))

    # -- running for a company: usage, budgets, feedback, channel overrides (`ledger.py`) ------

    @property
    def _ledger(self) -> LedgerKeys:
        return LedgerKeys(self._keys.prefix)

    async def _run_ledger(self, name: str, keys: list[str], args: list[EncodableT]) -> Any:
        """Run one of the ledger's scripts (registered on first use, like the others)."""
        scripts: dict[str, Any] = self.__dict__.setdefault("_ledger_scripts", {})
        if name not in scripts:
            scripts[name] = self._redis.register_script(_LEDGER_SCRIPTS[name])
        with _translated(name):
            return await scripts[name](keys=keys, args=args)

    async def admission_view(
        self, team_id: str, user: str, channel: str, *, day: str, month: str
    ) -> AdmissionView:
        ledger = self._ledger
        reply = await self._run_ledger(
            "admission_view",
            [
                self._keys.user_index(team_id, user),
                self._keys.team_index(team_id),
                ledger.user_spend(team_id, day, user),
                ledger.user_spend(team_id, month, user),
                ledger.team_spend(team_id, month),
                ledger.channels(team_id),
            ],
            [self._keys.answer(""), channel],
        )
        numbers = [int(n) for n in reply[:11]]
        return AdmissionView(
            mine=numbers[0],
            workspace=numbers[1],
            spend=_spend_view(numbers[2:11]),
            override=ChannelOverride.from_json(_text(reply[11])) if channel else None,
        )

    async def record_usage(
        self, entry: UsageEntry, *, thresholds: Thresholds, keep: UsageKeep
    ) -> UsageTotals:
        ledger = self._ledger
        reply = await self._run_ledger(
            "record_usage",
            [
                ledger.usage_day(entry.team_id, entry.day),
                ledger.user_spend(entry.team_id, entry.day, entry.user),
                ledger.user_spend(entry.team_id, entry.month, entry.user),
                ledger.team_spend(entry.team_id, entry.month),
                ledger.usage_days,
            ],
            [
                cell_field(entry.user, entry.channel, entry.model, ""),
                json.dumps(entry.counters()),
                entry.tokens,
                entry.cost_micros or 0,
                _ms(keep.day_seconds),
                _ms(keep.month_seconds),
                f"{entry.team_id}|{entry.day}",
                _day_number(entry.day),
                _day_number(keep.oldest_day),
                *thresholds.as_tuple(),
            ],
        )
        numbers = [int(n) for n in reply]
        crossed = tuple(name for name, hit in zip(BUDGETS, numbers[9:12], strict=True) if hit)
        return UsageTotals(_spend_view(numbers[:9]), crossed)

    async def usage_spend(self, team_id: str, user: str, *, day: str, month: str) -> SpendView:
        view = await self.admission_view(team_id, user, "", day=day, month=month)
        return view.spend

    async def usage_cells(
        self, *, since: str, until: str, team_id: str | None = None
    ) -> list[UsageCell]:
        ledger = self._ledger
        with _translated("usage_cells"):
            members: list[Any] = await self._redis.zrangebyscore(
                ledger.usage_days, _day_number(since), _day_number(until)
            )
            days = sorted(
                (day, team)
                for member in members
                for team, _, day in [_text(member).partition("|")]
                if team_id is None or team == team_id
            )
            async with self._redis.pipeline(transaction=False) as pipe:
                for day, team in days:
                    pipe.hgetall(ledger.usage_day(team, day))
                hashes = await pipe.execute()
        return [
            cell
            for (day, team), fields in zip(days, hashes, strict=True)
            for cell in cells_from_fields(team, day, fields)
        ]

    async def record_feedback(
        self, vote: FeedbackVote, *, keep_seconds: float, cell_keep_seconds: float
    ) -> VoteResult:
        ledger = self._ledger
        counted, previous = await self._run_ledger(
            "record_feedback",
            [
                ledger.feedback(vote.answer_id),
                ledger.usage_day(vote.team_id, vote.day),
                ledger.usage_days,
            ],
            [
                vote.voter,
                vote.value,
                cell_field(vote.asker, vote.channel, vote.model, ""),
                _ms(keep_seconds),
                _ms(cell_keep_seconds) if cell_keep_seconds > 0 else 0,
                f"{vote.team_id}|{vote.day}",
                _day_number(vote.day),
            ],
        )
        return VoteResult(bool(int(counted)), _text(previous) or None)

    async def set_channel_override(
        self, team_id: str, channel: str, override: ChannelOverride | None
    ) -> None:
        key = self._ledger.channels(team_id)
        with _translated("set_channel_override"):
            if override is None:
                await self._redis.hdel(key, channel)
            else:
                await self._redis.hset(key, channel, override.as_json())

    async def channel_overrides(self, team_id: str) -> dict[str, ChannelOverride]:
        with _translated("channel_overrides"):
            raw = await self._redis.hgetall(self._ledger.channels(team_id))
        overrides = {_text(k): ChannelOverride.from_json(_text(v)) for k, v in raw.items()}
        return {channel: o for channel, o in overrides.items() if o is not None}


_LEDGER_SCRIPTS = {
    "admission_view": lua.ADMISSION_VIEW,
    "record_usage": lua.RECORD_USAGE,
    "record_feedback": lua.RECORD_FEEDBACK,
}


def _day_number(day: str) -> int:
    """A YYYY-MM-DD day as a number that orders days (its proleptic Gregorian ordinal)."""
    return datetime.date.fromisoformat(day).toordinal()


def _spend_view(numbers: list[int]) -> SpendView:
    """Nine numbers (answers, tokens, cost_micros of each spend) as a SpendView."""
    return SpendView(Spend(*numbers[0:3]), Spend(*numbers[3:6]), Spend(*numbers[6:9]))
