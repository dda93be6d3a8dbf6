"""The usage ledger as `MemoryStore` keeps it: usage counters and the budgets' spend, feedback
votes and the channel overrides admins set (records: `ledger.py`). Each entry carries its
expiry on the store's clock; expired ones go at the next write. A mixin of `MemoryStore` (the
package docstring says why)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

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
V = TypeVar("V")

LEDGER_PRUNE_SECONDS = 60.0


class MemoryLedger:
    """The ledger part of `MemoryStore`."""

    _clock: Callable[[], float]  # the store's clock, set by MemoryStore

    def __init__(self) -> None:
        super().__init__()
        self._ledger = _Ledger()

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        """The answers' part counts them (`MemoryStore`); admission reads them with the spend."""
        raise NotImplementedError

    def _mark_usage_counted(self, answer_id: str) -> bool:
        """Mark the answer's record counted (the answers' part keeps records: `MemoryStore`);
        False when it was already. An answer without a record is counted each time."""
        raise NotImplementedError

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
        if entry.answer_id and not self._mark_usage_counted(entry.answer_id):
            view = await self.usage_spend(
                entry.team_id, entry.user, day=entry.day, month=entry.month
            )
            return UsageTotals(view, counted=False)
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
