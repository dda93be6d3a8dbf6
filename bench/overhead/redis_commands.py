"""Phase 3, Redis commands per answer: they should follow an answer's duration (heartbeats,
paced edits), not its length; and an idle bot should send only its background sweeps."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.overhead.rig import Rig, _new_errors, _require_completed
from bench.overhead.workload import Workload

IDLE_WINDOW = 8.0  # seconds of an idle bot whose Redis traffic is counted


async def redis_phase(rig: Rig, cases: list[tuple[str, Workload]], answers: int) -> dict[str, Any]:
    """Commands per answer for each case, `answers` at a time. The counts include what the
    process sends in the background meanwhile (a janitor sweep every lease/4 = 3.75 s)."""
    rows = []
    for name, workload in cases:
        await rig.reset_counters()
        before, sent = await rig.errors(), await rig.store_calls()
        stats = await rig.run(workload, answers, workload.seconds + 120)
        _require_completed(stats, answers, f"redis {name}")
        errors = _new_errors(before, await rig.errors())
        calls = await rig.commandstats()
        round_trips = (await rig.store_calls() - sent) / answers
        per = {c: n / answers for c, n in calls.items()}
        rows.append(
            {
                "case": name,
                "workload": workload.label(),
                "answer_chars": workload.deltas * workload.chars,
                "nominal_seconds": round(workload.seconds, 1),
                "commands_per_answer": round(sum(per.values()), 1),
                "round_trips_per_answer": round(round_trips, 1),
                "edits_per_answer": round(stats["calls"].get("chat.update", 0) / answers, 1),
                "by_command": {c: round(n, 1) for c, n in sorted(per.items(), key=lambda x: -x[1])},
                "bot_errors": errors,
            }
        )
    # With no answer in flight, only background work should reach Redis (a janitor sweep every
    # 3.75 s); more means answers that ended left something running (e.g. a heartbeat loop).
    await rig.reset_counters()
    sent = await rig.store_calls()
    await asyncio.sleep(IDLE_WINDOW)
    idle = await rig.commandstats()
    idle_trips = await rig.store_calls() - sent
    return {
        "answers_per_case": answers,
        "cases": rows,
        "idle_round_trips_per_second": round(idle_trips / IDLE_WINDOW, 2),
        "idle_by_command": dict(idle),
    }
