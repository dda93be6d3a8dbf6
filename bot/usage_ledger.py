"""Each answer's usage, added to the shared counters at its end, in one store round trip.

The answer calls `UsageLedger.record` once, just before its final edit: one Lua script
(`RECORD_USAGE`) adds the usage to the cell of its day, person, channel and model, and to the
spend the budgets read, and says whether this answer took someone past 80 % of a budget, which
the footer then says (exactly one answer crosses each level, whatever the replicas do).
Prometheus gets the same totals by model and outcome only.

What an answer is given is decided at admission (`AnswerProfile`): its channel's settings and
the day and month it counts in (the day it was asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.budgets import Budgets, Calendar, Period, usage_entry
from bot.channels import ChannelSettings
from bot.metrics import Metrics
from bot.question import Question
from bot.store import Store, StoreError
from bot.usage import Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerProfile:
    """What one answer is given at admission: its channel's settings and its usage period."""

    channel: ChannelSettings
    period: Period


class UsageLedger:
    """See the module docstring."""

    def __init__(
        self, *, store: Store, metrics: Metrics, budgets: Budgets, calendar: Calendar
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.budgets = budgets
        self.calendar = calendar

    async def record(
        self, q: Question, profile: AnswerProfile, usage: Usage, *, model: str, outcome: str
    ) -> str | None:
        """Count one answer's usage; the footer's budget note, if this answer crossed 80 % of
        a budget. A store failure loses this answer's counts (logged with them), never the
        answer."""
        entry = usage_entry(
            usage,
            model=model,
            team_id=q.team_id,
            user=q.user,
            channel=q.channel,
            period=profile.period,
        )
        self._count(entry.model, outcome, usage, entry.cost_micros, entry.server_tool_calls)
        try:
            totals = await self.store.record_usage(
                entry, thresholds=self.budgets.thresholds(), keep=profile.period.keep()
            )
        except StoreError as e:
            log.warning(
                "usage not recorded",
                extra={
                    "error": str(e),
                    "user": q.user,
                    "channel": q.channel,
                    "model": entry.model,
                    "day": entry.day,
                    "tokens": entry.tokens,
                    "cost_micros": entry.cost_micros,
                },
            )
            return None
        return self.budgets.notice(totals.crossed, totals.spend)

    def _count(
        self, model: str, outcome: str, usage: Usage, cost_micros: int | None, tool_calls: int
    ) -> None:
        m = self.metrics
        m.usage_answers.labels(model, outcome).inc()
        for kind, tokens in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ):
            m.usage_tokens.labels(model, outcome, kind).inc(tokens)
        if cost_micros:
            m.usage_cost.labels(model, outcome).inc(cost_micros / 1_000_000)
        if tool_calls:
            m.server_tool_calls.labels(model).inc(tool_calls)
