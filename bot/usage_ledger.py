"""Each answer's usage, added to the shared counters at its end, in one store round trip.

The answer calls `UsageLedger.record` once, just before its final edit: one Lua script
(`RECORD_USAGE`) adds the usage to the cell of its day, person, channel and model, and to the
spend the budgets read, and says whether this answer took someone past 80 % of a budget, which
the footer then says (exactly one answer crosses each level, whatever the replicas do).
Prometheus gets the same totals by model and outcome only.

An answer whose replica died is counted by the janitor that finishes it (`record_recovered`),
from the usage its checkpoints carried to its record (`usage.cut_short` estimates the output
Claude had not reported yet). The same step marks the answer's record counted, and a record
marked already adds nothing: the owner (which may have counted just before dying) and the
janitor never both count an answer.

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
from bot.slackts import as_number
from bot.store import AnswerRecord, Store, StoreError, Thresholds, UsageEntry, UsageTotals
from bot.usage import Usage, cut_short

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
            answer_id=q.answer_id,
        )
        try:
            totals = await self.store.record_usage(
                entry, thresholds=self.budgets.thresholds(), keep=profile.period.keep()
            )
        except StoreError as e:
            self._count(entry, outcome, usage)
            _not_recorded(entry, e)
            return None
        if not totals.counted:  # a janitor that took the answer over counted it
            return None
        self._count(entry, outcome, usage)
        return self.budgets.notice(totals.crossed, totals.spend)

    async def record_recovered(self, record: AnswerRecord, *, outcome: str) -> UsageTotals | None:
        """Count the usage of an answer a janitor finished, as its record carries it. None when
        there is nothing to count or the store failed (logged with the counts); `counted` is
        False when it was counted already (by its owner, or by an earlier janitor)."""
        if record.usage == Usage():  # Claude had not started: nothing was billed
            return None
        usage = cut_short(record.usage, record.text)
        asked = as_number(record.question_ts)
        period = self.calendar.period() if asked is None else self.calendar.period_at(asked)
        entry = usage_entry(
            usage,
            model=record.model,
            team_id=record.team_id,
            user=record.asker,
            channel=record.channel,
            period=period,
            answer_id=record.answer_id,
        )
        try:
            # No thresholds: nobody's footer could say this answer crossed one.
            totals = await self.store.record_usage(
                entry, thresholds=Thresholds(), keep=period.keep()
            )
        except StoreError as e:
            _not_recorded(entry, e)
            return None
        if totals.counted:
            self._count(entry, outcome, usage)
        return totals

    def _count(self, entry: UsageEntry, outcome: str, usage: Usage) -> None:
        m, model = self.metrics, entry.model
        m.usage_answers.labels(model, outcome).inc()
        for kind, tokens in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ):
            m.usage_tokens.labels(model, outcome, kind).inc(tokens)
        if entry.cost_micros:
            m.usage_cost.labels(model, outcome).inc(entry.cost_micros / 1_000_000)
        if entry.server_tool_calls:
            m.server_tool_calls.labels(model).inc(entry.server_tool_calls)


def _not_recorded(entry: UsageEntry, error: StoreError) -> None:
    """A store failure loses one answer's counts: the log keeps them."""
    log.warning(
        "usage not recorded",
        extra={
            "error": str(error),
            "user": entry.user,
            "channel": entry.channel,
            "model": entry.model,
            "day": entry.day,
            "tokens": entry.tokens,
            "cost_micros": entry.cost_micros,
        },
    )
