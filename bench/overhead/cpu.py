"""Phase 1, CPU per delta: the bot against the bare loops on the same streams, in rounds back to
back, since a shared machine drifts more between runs than the difference being measured."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.overhead.bare import BARE_LOOPS, BOT_LOOP, run_bare
from bench.overhead.rig import TEAM_SIZE, Rig, _new_errors, _require_completed, cpu_seconds
from bench.overhead.workload import Workload
from bot.config import Settings

RATIO_TARGET = 1.3

# The bot's shipped workspace budget, for the CPU case that runs with it.
_DEFAULTS = Settings.model_fields
DEFAULT_BUDGET_ENV = {
    "WORKSPACE_EDITS_PER_MINUTE": f"{_DEFAULTS['workspace_edits_per_minute'].default:g}",
    "WORKSPACE_EDIT_BURST": f"{_DEFAULTS['workspace_edit_burst'].default:g}",
}
DEFAULT_BUDGET_LABEL = (
    f"default budget ({DEFAULT_BUDGET_ENV['WORKSPACE_EDITS_PER_MINUTE']}/min per workspace "
    f"of {TEAM_SIZE} answers)"
)


async def cpu_case(
    rig: Rig, workload: Workload, answers: int, rounds: int, budget: str = ""
) -> dict[str, Any]:
    """The bot's CPU per delta for `answers` of `workload`, and the bare loops' for the same
    streams; `budget` names the edit budget the bot runs with, when it is not BOT_ENV's.

    A shared 2-core machine moves CPU per delta by 20 % or more between two runs of the same
    code, so each round measures the bot and then the bare loops back to back, and the figures
    are the medians over `rounds` (the ratio is the median of the rounds' ratios, with its
    range)."""
    deltas = answers * workload.deltas
    before = await rig.errors()
    bot_runs: list[tuple[float, float, dict[str, Any]]] = []  # (cpu s, wall s, stats)
    bare_runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in BARE_LOOPS}
    for _ in range(rounds):
        await rig.reset_counters()
        pid = rig.bot_pid
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        stats = await rig.run(workload, answers, workload.seconds + 120)
        bot_runs.append((cpu_seconds(pid) - cpu0, time.monotonic() - wall0, stats))
        _require_completed(stats, answers, "cpu")
        for kind in BARE_LOOPS:
            bare_runs[kind].append(await run_bare(rig.sims.claude_url, workload, answers, kind))
    errors = _new_errors(before, await rig.errors())
    bot_cpu = statistics.median(cpu for cpu, _, _ in bot_runs)
    bot_us = bot_cpu / deltas * 1e6
    bare: dict[str, dict[str, Any]] = {}
    for kind, runs in bare_runs.items():
        ratios = [bot / run["cpu_seconds"] for (bot, _, _), run in zip(bot_runs, runs, strict=True)]
        bare_cpu = statistics.median(run["cpu_seconds"] for run in runs)
        bare[kind] = {
            "cpu_seconds": round(bare_cpu, 3),
            "wall_seconds": round(statistics.median(run["wall_seconds"] for run in runs), 2),
            "us_per_delta": round(bare_cpu / deltas * 1e6, 1),
            "ratio": round(statistics.median(ratios), 2),
            "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
        }
    stats = bot_runs[-1][2]
    slack_calls = sum(stats["calls"].values())
    extra = bot_cpu - bare[BOT_LOOP]["cpu_seconds"]
    return {
        "workload": workload.label() + (f"; {budget}" if budget else ""),
        "answers": answers,
        "deltas": deltas,
        "rounds": rounds,
        "bot_cpu_seconds": round(bot_cpu, 3),
        "bot_cpu_seconds_each": [round(cpu, 3) for cpu, _, _ in bot_runs],
        # What the bot adds to the bare loop with its request, per Slack call it makes: the
        # work the bare loop never does (edits, Redis steps, rendering, events), made visible.
        "extra_ms_per_slack_call": round(extra / slack_calls * 1000, 2) if slack_calls else None,
        "bot_wall_seconds": round(statistics.median(wall for _, wall, _ in bot_runs), 2),
        "bot_us_per_delta": round(bot_us, 1),
        "bare": bare,
        "edits_per_answer": round(stats["calls"].get("chat.update", 0) / answers, 1),
        "slack_calls_per_answer": round(sum(stats["calls"].values()) / answers, 1),
        "bot_errors": errors,
    }
