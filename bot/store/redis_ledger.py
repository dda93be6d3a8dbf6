"""The usage ledger as `RedisStore` keeps it for every replica: usage counters and the
budgets' spend, feedback votes and the channel overrides admins set (records: `ledger.py`;
keys: `keys.LedgerKeys`). Each write that must not interleave with another replica's is one
script (`lua_ledger`: `ADMISSION_VIEW`, `RECORD_USAGE`, `RECORD_FEEDBACK`). A mixin of
`RedisStore` (the package docstring says why)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from bot.store.keys import LedgerKeys
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
from bot.store.redis_base import RedisBase, decoded, to_ms, translated


class RedisLedger(RedisBase):
    """The ledger part of `RedisStore`."""

    @property
    def _ledger(self) -> LedgerKeys:
        return LedgerKeys(self._keys.prefix)

    async def admission_view(
        self, team_id: str, user: str, channel: str, *, day: str, month: str
    ) -> AdmissionView:
        ledger = self._ledger
        reply = await self._run(
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
            override=ChannelOverride.from_json(decoded(reply[11])) if channel else None,
        )

    async def record_usage(
        self, entry: UsageEntry, *, thresholds: Thresholds, keep: UsageKeep
    ) -> UsageTotals:
        ledger = self._ledger
        reply = await self._run(
            "record_usage",
            [
                ledger.usage_day(entry.team_id, entry.day),
                ledger.user_spend(entry.team_id, entry.day, entry.user),
                ledger.user_spend(entry.team_id, entry.month, entry.user),
                ledger.team_spend(entry.team_id, entry.month),
                ledger.usage_days,
                self._keys.answer(entry.answer_id),
            ],
            [
                cell_field(entry.user, entry.channel, entry.model, ""),
                json.dumps(entry.counters()),
                entry.tokens,
                entry.cost_micros or 0,
                to_ms(keep.day_seconds),
                to_ms(keep.month_seconds),
                f"{entry.team_id}|{entry.day}",
                _day_number(entry.day),
                _day_number(keep.oldest_day),
                *thresholds.as_tuple(),
                "1" if entry.answer_id else "",
            ],
        )
        numbers = [int(n) for n in reply]
        crossed = tuple(name for name, hit in zip(BUDGETS, numbers[9:12], strict=True) if hit)
        return UsageTotals(_spend_view(numbers[:9]), crossed, counted=bool(numbers[12]))

    async def usage_spend(self, team_id: str, user: str, *, day: str, month: str) -> SpendView:
        view = await self.admission_view(team_id, user, "", day=day, month=month)
        return view.spend

    async def usage_cells(
        self, *, since: str, until: str, team_id: str | None = None
    ) -> list[UsageCell]:
        ledger = self._ledger
        with translated("usage_cells"):
            members: list[Any] = await self._redis.zrangebyscore(
                ledger.usage_days, _day_number(since), _day_number(until)
            )
            days = sorted(
                (day, team)
                for member in members
                for team, _, day in [decoded(member).partition("|")]
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
        counted, previous = await self._run(
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
                to_ms(keep_seconds),
                to_ms(cell_keep_seconds) if cell_keep_seconds > 0 else 0,
                f"{vote.team_id}|{vote.day}",
                _day_number(vote.day),
            ],
        )
        return VoteResult(bool(int(counted)), decoded(previous) or None)

    async def set_channel_override(
        self, team_id: str, channel: str, override: ChannelOverride | None
    ) -> None:
        key = self._ledger.channels(team_id)
        with translated("set_channel_override"):
            if override is None:
                await self._redis.hdel(key, channel)
            else:
                await self._redis.hset(key, channel, override.as_json())

    async def channel_overrides(self, team_id: str) -> dict[str, ChannelOverride]:
        with translated("channel_overrides"):
            raw = await self._redis.hgetall(self._ledger.channels(team_id))
        overrides = {decoded(k): ChannelOverride.from_json(decoded(v)) for k, v in raw.items()}
        return {channel: o for channel, o in overrides.items() if o is not None}


def _day_number(day: str) -> int:
    """A YYYY-MM-DD day as a number that orders days (its proleptic Gregorian ordinal)."""
    return datetime.date.fromisoformat(day).toordinal()


def _spend_view(numbers: list[int]) -> SpendView:
    """Nine numbers (answers, tokens, cost_micros of each spend) as a SpendView."""
    return SpendView(Spend(*numbers[0:3]), Spend(*numbers[3:6]), Spend(*numbers[6:9]))
