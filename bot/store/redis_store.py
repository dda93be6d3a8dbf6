"""The answers' life as replicas share it through one Redis: event claims, leases with their
checkpoints and tombstones, the indexes of answers in flight, and the workspace edit budget.
Every step that must not interleave with another replica's is one Lua script (`lua.py`):
atomic, and one round trip. Keys: `keys.py`. `RedisStore` mixes in the other parts
(`redis_cancels`, `redis_caches`, `redis_ledger`) over the client they share (`redis_base`);
the package docstring says why mixins.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from bot.pacing import COMPETING_WINDOW_SECONDS, LINE_GRACE_SECONDS
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
from bot.store.keys import ANSWER, TEXT
from bot.store.redis_base import decoded, to_ms, translated
from bot.store.redis_caches import RedisCaches
from bot.store.redis_cancels import RedisCancels
from bot.store.redis_ledger import RedisLedger

# An idle bucket is deleted this long after it would be full again (and any pause is over):
# a missing bucket reads as full, so the deletion loses nothing.
BUCKET_IDLE_GRACE_SECONDS = 60.0
TOMBSTONE_SECONDS = 6 * 3600.0  # a finished answer is remembered as finished this long
TEXT_KEEP_SECONDS = 6 * 3600.0  # an unfinished answer's text outlives a forgotten record by this


def _record(raw: Mapping[Any, Any] | list[Any], text: str | bytes = "") -> AnswerRecord | None:
    """A record from HGETALL's dict or a script's flat [field, value, ...] array."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    if not raw:
        return None
    return AnswerRecord.from_fields({decoded(k): decoded(v) for k, v in raw.items()}, decoded(text))


def _lease_report(reply: list[Any]) -> LeaseReport:
    state = LeaseState(decoded(reply[0]))
    if state is LeaseState.HELD:
        stop_by = decoded(reply[1]) or None
        return LeaseReport(state, stop_by=stop_by, text_rejected=bool(int(reply[2])))
    if state is LeaseState.LOST:
        return LeaseReport(state, holder=_record(reply[1], reply[2]))
    return LeaseReport(state)


class RedisStore(RedisCancels, RedisCaches, RedisLedger):
    """See the module docstring; `RedisBase` says how it is made (`from_url`) and closed."""

    kind = "redis"

    # -- dedupe ----------------------------------------------------------------------------------

    async def claim_event(self, key: str, ttl_seconds: float, token: str) -> EventClaim:
        first, age = await self._run(
            "claim_event",
            [self._keys.event(key), self._keys.epoch],
            [token, to_ms(ttl_seconds), self._now()],
        )
        return EventClaim(first=bool(int(first)), data_age=float(decoded(age)))

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
                to_ms(dedupe_ttl_seconds),
                "" if order is None else f"{order:.17g}",
                to_ms(TEXT_KEEP_SECONDS),
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
                to_ms(TEXT_KEEP_SECONDS),
            ],
        )
        return _lease_report(reply)

    async def finish(self, answer_id: str, token: str, *, outcome: str) -> LeaseState:
        state = await self._run(
            "finish",
            self._answer_keys(answer_id),
            [token, outcome, to_ms(TOMBSTONE_SECONDS), self._keys.prefix],
        )
        return LeaseState(decoded(state))

    async def get(self, answer_id: str) -> AnswerRecord | None:
        with translated("get"):
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
        keys = [
            self._keys.bucket(team_id),
            self._keys.competing(team_id),
            self._keys.answer(answer_id),
            self._keys.text(answer_id),
            self._keys.line(team_id),
            self._keys.line_lapses(team_id),
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
                to_ms(TEXT_KEEP_SECONDS),
                answer_id if waits else "",
                waited,
                LINE_GRACE_SECONDS,
            ],
        )
        return EditGrant(
            float(decoded(wait)),
            int(competing),
            lease=LeaseState(decoded(lease)) if decoded(lease) else None,
            text_rejected=bool(int(refused)),
        )

    async def pause_edits(self, team_id: str, seconds: float) -> None:
        await self._run(
            "pause",
            [self._keys.bucket(team_id)],
            [seconds, BUCKET_IDLE_GRACE_SECONDS, self._now()],
        )
