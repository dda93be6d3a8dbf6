"""`slackstream usage`: the usage report, from the counters every replica adds to in Redis.

One row per day and group (person, channel or model, or several of them: `--by
channel,model`), with answers, tokens of each kind, server tool calls, the estimated cost and
the feedback votes. `table` is for people (with a total line), `csv` for spreadsheets, `json`
(a list of rows) for scripts. Days are those of USAGE_TIMEZONE; counters are kept 90 days.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from bot.budgets import RETENTION_DAYS, Calendar
from bot.store import Store, UsageCell
from bot.store.ledger import COUNTERS

GROUPS = ("user", "channel", "model")
FORMATS = ("table", "csv", "json")
# The report's numeric columns, in order (cost in dollars instead of micro-dollars).
COLUMNS = (
    "answers",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "server_tool_calls",
    "cost_usd",
    "unpriced_answers",
    "feedback_positive",
    "feedback_negative",
)
assert set(COLUMNS) - {"cost_usd"} == set(COUNTERS) - {"cost_micros"}


def parse_groups(text: str) -> tuple[str, ...]:
    """`user`, `channel`, `model` or several of them, comma-separated; ValueError otherwise."""
    groups = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if not groups or unknown:
        raise ValueError(f"--by takes {', '.join(GROUPS)} (or several, comma-separated)")
    return tuple(dict.fromkeys(groups))


def parse_day(text: str, flag: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"{flag} must be a date like 2026-05-01, got {text!r}") from None


def rows(cells: Iterable[UsageCell], by: Sequence[str]) -> list[dict[str, Any]]:
    """One row per day, workspace and group, ordered by day then cost (highest first)."""
    grouped: dict[tuple[str, ...], dict[str, int]] = {}
    for cell in cells:
        key = (cell.day, cell.team_id, *(getattr(cell, g) for g in by))
        totals = grouped.setdefault(key, dict.fromkeys(COUNTERS, 0))
        for name, value in cell.counts.items():
            if name in totals:
                totals[name] += value
    out = []
    for key, totals in grouped.items():
        row: dict[str, Any] = {"day": key[0], "team_id": key[1]}
        row.update(zip(by, key[2:], strict=True))
        for column in COLUMNS:
            if column == "cost_usd":
                row[column] = round(totals["cost_micros"] / 1_000_000, 6)
            else:
                row[column] = totals[column]
        out.append(row)
    out.sort(key=lambda r: (r["day"], r["team_id"], -r["cost_usd"], *(r[g] for g in by)))
    return out


def as_json(report: list[dict[str, Any]]) -> str:
    return json.dumps(report, indent=2) + "\n"


def as_csv(report: list[dict[str, Any]], by: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["day", "team_id", *by, *COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(report)
    return out.getvalue()


def as_table(report: list[dict[str, Any]], by: Sequence[str]) -> str:
    """Aligned columns and a total line; team shown only when there are several."""
    teams = {r["team_id"] for r in report}
    keys = ["day", *(["team_id"] if len(teams) > 1 else []), *by]
    shown = (
        "answers",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "server_tool_calls",
        "cost_usd",
        "feedback_positive",
        "feedback_negative",
    )
    titles = {
        "team_id": "team",
        "input_tokens": "input",
        "output_tokens": "output",
        "cache_read_tokens": "cache read",
        "cache_write_tokens": "cache write",
        "server_tool_calls": "tool calls",
        "cost_usd": "cost",
        "feedback_positive": "liked",
        "feedback_negative": "disliked",
    }

    def cell(row: dict[str, Any], column: str) -> str:
        value = row[column]
        if column == "cost_usd":
            return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    total: dict[str, Any] = {k: "" for k in keys}
    total[keys[0]] = "total"
    for column in shown:
        total[column] = sum(r[column] for r in report)
    lines = [[titles.get(c, c) for c in (*keys, *shown)]]
    lines += [[cell(r, c) for c in (*keys, *shown)] for r in report]
    lines.append([cell(total, c) if c in shown else str(total[c]) for c in (*keys, *shown)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    numeric = [False] * len(keys) + [True] * len(shown)

    def fmt(line: list[str]) -> str:
        return "  ".join(
            text.rjust(w) if right else text.ljust(w)
            for text, w, right in zip(line, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [fmt(line) for line in lines[1:-1]] or ["(no usage in this period)"]
    unpriced = sum(r["unpriced_answers"] for r in report)
    footnote = (
        [f"{unpriced:,} answer(s) used a model without a known price: counted at $0."]
        if unpriced
        else []
    )
    return "\n".join([fmt(lines[0]), rule, *body, rule, fmt(lines[-1]), *footnote]) + "\n"


def render(report: list[dict[str, Any]], by: Sequence[str], form: str) -> str:
    if form == "json":
        return as_json(report)
    if form == "csv":
        return as_csv(report, by)
    return as_table(report, by)


async def usage_report(
    store: Store,
    calendar: Calendar,
    *,
    since: str | None = None,
    until: str | None = None,
    by: Sequence[str] = ("user",),
    team_id: str | None = None,
) -> list[dict[str, Any]]:
    """The report's rows: from `since` (default: the first of this month) to `until`
    (default: today), in the usage time zone."""
    today = calendar.period().day
    start = since or today[:8] + "01"
    cells = await store.usage_cells(since=start, until=until or today, team_id=team_id)
    return rows(cells, by)


def retention_warning(since: str | None, calendar: Calendar) -> str | None:
    """A note when `since` reaches further back than the counters are kept."""
    if since is None:
        return None
    oldest = datetime.date.fromisoformat(calendar.period().day) - datetime.timedelta(
        days=RETENTION_DAYS
    )
    if datetime.date.fromisoformat(since) < oldest:
        return f"note: usage is kept {RETENTION_DAYS} days; nothing before {oldest} is left\n"
    return None
