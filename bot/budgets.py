"""Usage periods and budgets: which day and month an answer counts in, how long its counters
are kept, whether a question is over a budget (and the polite line that says so), and the
footer's note when an answer takes someone past 80 % of one.

Pure: the time comes from an injected clock (epoch seconds) read in the usage time zone, so
tests move across a day or a month boundary by moving the clock. The counters themselves are
the store's (`store/ledger.py`): admission reads the spend, an answer adds its usage at its end.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.store.ledger import Spend, SpendView, Thresholds, UsageEntry, UsageKeep
from bot.usage import Usage, estimate_cost

Clock = Callable[[], float]

RETENTION_DAYS = 90  # counters are kept this long after their day (or month) ended
NOTICE_FRACTION = 0.8  # an answer that takes someone past this share of a budget says so


def time_zone(name: str) -> datetime.tzinfo:
    """The zone `name` (IANA, e.g. Europe/London); ValueError in one line when unknown."""
    if name.upper() == "UTC":
        return datetime.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Europe/London)"
        ) from None


@dataclass(frozen=True)
class Period:
    """Where `now` falls: its day and month in the usage time zone, and when they end."""

    now: datetime.datetime  # aware, in the usage time zone

    @property
    def day(self) -> str:
        return self.now.date().isoformat()

    @property
    def month(self) -> str:
        return self.day[:7]

    @property
    def day_ends(self) -> datetime.datetime:
        tomorrow = self.now.date() + datetime.timedelta(days=1)
        return _midnight(tomorrow, self.now.tzinfo)

    @property
    def month_ends(self) -> datetime.datetime:
        today = self.now.date()
        first = (today.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
        return _midnight(first, self.now.tzinfo)

    def keep(self, retention_days: int = RETENTION_DAYS) -> UsageKeep:
        """Counters live until `retention_days` after their day, or month, ended."""
        kept = datetime.timedelta(days=retention_days)
        return UsageKeep(
            day_seconds=max(1.0, (self.day_ends + kept - self.now).total_seconds()),
            month_seconds=max(1.0, (self.month_ends + kept - self.now).total_seconds()),
            oldest_day=(self.now.date() - kept).isoformat(),
        )


def _midnight(day: datetime.date, zone: datetime.tzinfo | None) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(), tzinfo=zone)


@dataclass(frozen=True)
class Calendar:
    """The usage calendar: a wall clock (epoch seconds) read in the usage time zone."""

    zone: datetime.tzinfo = datetime.UTC
    clock: Clock = time.time

    @property
    def zone_name(self) -> str:
        return "UTC" if self.zone is datetime.UTC else str(self.zone)

    def period(self) -> Period:
        return Period(datetime.datetime.fromtimestamp(self.clock(), self.zone))

    def period_at(self, epoch: float) -> Period:
        """The period at `epoch` seconds (a Slack ts: when a question was asked)."""
        return Period(datetime.datetime.fromtimestamp(epoch, self.zone))

    def period_of_day(self, day: str) -> Period:
        """The period at the start of `day` (YYYY-MM-DD)."""
        return Period(_midnight(datetime.date.fromisoformat(day), self.zone))

    def cell_keep_seconds(self, day: str, retention_days: int = RETENTION_DAYS) -> float:
        """How much longer `day`'s counters are kept (0 when they are past retention)."""
        ends = self.period_of_day(day).day_ends + datetime.timedelta(days=retention_days)
        return max(0.0, (ends - self.period().now).total_seconds())


def to_micros(cost_usd: float | None) -> int | None:
    return None if cost_usd is None else round(cost_usd * 1_000_000)


def server_tool_calls(usage: Usage) -> int:
    """Server tool requests (web search, web fetch) an answer made, when its usage says."""
    return int(getattr(usage, "server_tool_calls", 0) or 0)


def usage_entry(
    usage: Usage,
    *,
    model: str,
    team_id: str,
    user: str,
    channel: str,
    period: Period,
    answer_id: str = "",
) -> UsageEntry:
    """What one answer adds to the counters (`answer_id`: the record marked counted with it)."""
    return UsageEntry(
        team_id=team_id,
        user=user,
        channel=channel,
        model=model,
        day=period.day,
        month=period.month,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_write_tokens=usage.cache_creation_input_tokens,
        server_tool_calls=server_tool_calls(usage),
        cost_micros=to_micros(estimate_cost(usage, model)),
        answer_id=answer_id,
    )


@dataclass(frozen=True)
class Refusal:
    budget: str  # one of ledger.BUDGETS: the metric's label
    line: str  # the polite line posted in the thread


def _money(micros: float) -> str:
    """Dollars with cents, or with four decimals for amounts that cents would round away."""
    dollars = micros / 1_000_000
    if dollars == 0 or round(dollars, 2) == round(dollars, 4):
        return f"${dollars:,.2f}"
    return f"${dollars:,.4f}"


def _day_name(moment: datetime.datetime) -> str:
    return f"{moment.day} {moment:%B}"


def _in(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class Budgets:
    """The operator's budgets, each optional (None: no limit)."""

    user_day_tokens: int | None = None
    user_month_cost_usd: float | None = None
    workspace_month_cost_usd: float | None = None

    @property
    def any(self) -> bool:
        return any(
            limit is not None
            for limit in (
                self.user_day_tokens,
                self.user_month_cost_usd,
                self.workspace_month_cost_usd,
            )
        )

    def _limits(self) -> tuple[float, float, float]:
        """The limits in the counters' units (tokens, micro-dollars); 0 for none."""
        return (
            float(self.user_day_tokens or 0),
            (self.user_month_cost_usd or 0) * 1_000_000,
            (self.workspace_month_cost_usd or 0) * 1_000_000,
        )

    def refusal(self, spend: SpendView, period: Period, zone_name: str) -> Refusal | None:
        """The first budget the spend has reached, with a line saying when it resets."""
        day_limit, month_limit, workspace_limit = self._limits()
        next_month = f"{_day_name(period.month_ends)} ({zone_name})"
        if workspace_limit and spend.workspace_month.cost_micros >= workspace_limit:
            return Refusal(
                "workspace_month_cost",
                f"This workspace has used its Claude budget for this month "
                f"({_money(workspace_limit)}), so I can't answer for now. "
                f"It resets on {next_month}.",
            )
        if month_limit and spend.user_month.cost_micros >= month_limit:
            return Refusal(
                "user_month_cost",
                f"You've used your Claude budget for this month ({_money(month_limit)}), "
                f"so I can't answer this one. It resets on {next_month}.",
            )
        if day_limit and spend.user_day.tokens >= day_limit:
            left = (period.day_ends - period.now).total_seconds()
            return Refusal(
                "user_day_tokens",
                f"You've used today's allowance of {int(day_limit):,} tokens, so I can't "
                f"answer this one. It resets at midnight {zone_name}, in {_in(left)}.",
            )
        return None

    def thresholds(self) -> Thresholds:
        """The levels at which an answer's footer says a budget is nearly used."""
        day, month, workspace = (math.ceil(limit * NOTICE_FRACTION) for limit in self._limits())
        return Thresholds(day, month, workspace)

    def notice(self, crossed: tuple[str, ...], spend: SpendView) -> str | None:
        """The footer's note for the thresholds this answer crossed (the first that applies)."""
        day_limit, month_limit, workspace_limit = self._limits()
        notes = {
            "user_day_tokens": (spend.user_day.tokens, day_limit, "your daily token allowance"),
            "user_month_cost": (
                spend.user_month.cost_micros,
                month_limit,
                "your monthly budget",
            ),
            "workspace_month_cost": (
                spend.workspace_month.cost_micros,
                workspace_limit,
                "the workspace's monthly budget",
            ),
        }
        for name in ("workspace_month_cost", "user_month_cost", "user_day_tokens"):
            if name in crossed and notes[name][1]:
                used, limit, what = notes[name]
                return f"{math.floor(100 * used / limit)}% of {what} used"
        return None

    def status(self, spend: SpendView) -> list[str]:
        """One line per budget set, for the Home tab."""
        day_limit, month_limit, workspace_limit = self._limits()
        lines = []
        if day_limit:
            lines.append(_share("Today's tokens", spend.user_day.tokens, day_limit, "{:,.0f}"))
        if month_limit:
            lines.append(_share("Your month", spend.user_month.cost_micros, month_limit, None))
        if workspace_limit:
            lines.append(
                _share("Workspace month", spend.workspace_month.cost_micros, workspace_limit, None)
            )
        return lines


def _share(label: str, used: float, limit: float, form: str | None) -> str:
    show = (lambda n: form.format(n)) if form else _money
    return f"{label}: {show(used)} of {show(limit)} ({math.floor(100 * used / limit)}%)"


def spent_line(spend: Spend) -> str:
    """`3 answers · 12,345 tokens · $0.12`"""
    plural = "" if spend.answers == 1 else "s"
    return (
        f"{spend.answers:,} answer{plural} · {spend.tokens:,} tokens · {_money(spend.cost_micros)}"
    )
