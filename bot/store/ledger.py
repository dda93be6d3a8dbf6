"""The store's records for running the bot for a whole company: usage counters, budgets'
spend, feedback votes and the channel settings admins set from Slack.

Counters are integers only (tokens, answers, cost in micro-dollars), so every replica adds to
them with one atomic increment and no float drifts. They are kept per day and workspace, one
cell per (person, channel, model): the usage report groups those cells any way it likes; the
budgets read small roll-ups (a person's day and month, the workspace's month) kept beside them.
Every counter is written with a time to live the caller gives (the retention), so nothing grows
without end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# The counters of one usage cell, in the report's order.
COUNTERS = (
    "answers",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "server_tool_calls",
    "cost_micros",
    "unpriced_answers",  # answers whose model has no known price (counted at $0)
    "feedback_positive",
    "feedback_negative",
)
FEEDBACK_VALUES = ("positive", "negative")
# The budgets whose spend the store keeps, as named in `Thresholds` and `UsageTotals.crossed`.
BUDGETS = ("user_day_tokens", "user_month_cost", "workspace_month_cost")


@dataclass(frozen=True)
class Spend:
    """What one person or the workspace used in one period."""

    answers: int = 0
    tokens: int = 0  # every input token (cache reads and writes too) and every output token
    cost_micros: int = 0  # estimated cost in millionths of a US dollar

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000


@dataclass(frozen=True)
class SpendView:
    """The spend the budgets are checked against."""

    user_day: Spend = Spend()
    user_month: Spend = Spend()
    workspace_month: Spend = Spend()


@dataclass(frozen=True)
class ChannelOverride:
    """A channel's settings as a workspace admin set them from Slack (empty: not overridden),
    with who set them and when (epoch seconds)."""

    system_prompt: str = ""
    model: str = ""
    by: str = ""
    at: float = 0.0

    def as_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> ChannelOverride | None:
        """None for nothing stored, or for something unreadable (a newer release's record
        that this one cannot read is ignored rather than fatal)."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                system_prompt=str(data.get("system_prompt") or ""),
                model=str(data.get("model") or ""),
                by=str(data.get("by") or ""),
                at=float(data.get("at") or 0.0),
            )
        except (ValueError, TypeError, AttributeError):
            return None


@dataclass(frozen=True)
class AdmissionView:
    """What admitting a question reads from the store, in one round trip: the answers in
    flight (the caps), the spend (the budgets) and the channel's override."""

    mine: int
    workspace: int
    spend: SpendView = SpendView()
    override: ChannelOverride | None = None


@dataclass(frozen=True)
class UsageEntry:
    """What one answer adds to the counters."""

    team_id: str
    user: str
    channel: str
    model: str
    day: str  # YYYY-MM-DD in the usage time zone
    month: str  # YYYY-MM
    input_tokens: int = 0  # uncached input
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    server_tool_calls: int = 0
    cost_micros: int | None = 0  # None: the model's price is unknown
    answer_id: str = ""  # its record is marked counted with it ("": no record to mark)

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.output_tokens
        )

    def counters(self) -> dict[str, int]:
        """The cell's increments (zeros left out)."""
        counts = {
            "answers": 1,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "server_tool_calls": self.server_tool_calls,
            "cost_micros": self.cost_micros or 0,
            "unpriced_answers": 1 if self.cost_micros is None else 0,
        }
        return {name: value for name, value in counts.items() if value}


@dataclass(frozen=True)
class Thresholds:
    """Levels whose crossing an answer's usage should report (0: none), in the counters'
    units: tokens, micro-dollars."""

    user_day_tokens: int = 0
    user_month_cost: int = 0
    workspace_month_cost: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.user_day_tokens, self.user_month_cost, self.workspace_month_cost)


@dataclass(frozen=True)
class UsageKeep:
    """How long counters are kept: seconds from now for a day's counters and for a month's,
    and the oldest day a report may still find (older days are dropped from the index)."""

    day_seconds: float
    month_seconds: float
    oldest_day: str


@dataclass(frozen=True)
class UsageTotals:
    """The spend after an answer was added, and which thresholds this answer crossed (each is
    crossed by exactly one answer however many replicas add at once)."""

    spend: SpendView
    crossed: tuple[str, ...] = ()
    counted: bool = True  # False: the answer's usage was counted before (nothing added now)


@dataclass(frozen=True)
class FeedbackVote:
    """One person's vote on one answer; the answer's day, channel, model and asker say which
    usage cell counts it."""

    answer_id: str
    team_id: str
    voter: str
    value: str  # one of FEEDBACK_VALUES
    day: str
    channel: str
    model: str
    asker: str


@dataclass(frozen=True)
class VoteResult:
    counted: bool  # False: the same vote again (nothing changed)
    previous: str | None = None  # the vote it replaced


@dataclass(frozen=True)
class UsageCell:
    """The counters of one (day, workspace, person, channel, model)."""

    day: str
    team_id: str
    user: str
    channel: str
    model: str
    counts: Mapping[str, int] = field(default_factory=dict)


def cell_field(user: str, channel: str, model: str, counter: str) -> str:
    """A cell's counter as one field of its day's hash (IDs and model names hold no `|`)."""
    return f"{user}|{channel}|{model}|{counter}"


def cells_from_fields(team_id: str, day: str, fields: Mapping[str, Any]) -> list[UsageCell]:
    """A day's hash back into cells; malformed fields are skipped."""
    cells: dict[tuple[str, str, str], dict[str, int]] = {}
    for raw_name, raw_value in fields.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        parts = name.split("|")
        if len(parts) != 4:
            continue
        try:
            value = int(raw_value)
        except (TypeError, ValueError):
            continue
        counts = cells.setdefault((parts[0], parts[1], parts[2]), {})
        counts[parts[3]] = counts.get(parts[3], 0) + value
    return [
        UsageCell(day, team_id, user, channel, model, counts)
        for (user, channel, model), counts in sorted(cells.items())
    ]
