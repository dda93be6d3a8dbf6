"""Phase 5, the concurrency ramp: answers arrive steadily so that about N are in flight, and the
acknowledgement time of each event POST is measured while they stream (Slack retries a slow
one)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from bench.common import percentile
from bench.overhead.rig import Rig, _new_errors, _require_completed, cpu_seconds
from bench.overhead.workload import Workload

ACK_TARGET = 0.25  # seconds, event acknowledgement p99
CONCURRENCY_TARGET = 300
DELTA_RATE = 30.0  # deltas per second of each answer in the concurrency ramp


@dataclass
class Marks:
    at: float
    cpu: dict[str, float]


def _marks(pids: dict[str, int]) -> Marks:
    return Marks(time.monotonic(), {name: cpu_seconds(pid) for name, pid in pids.items()})


async def concurrency_level(rig: Rig, n: int, seconds: float) -> dict[str, Any]:
    """About `n` answers in flight: answers of `seconds` at 30 deltas/s arrive every
    seconds/n; the events posted in the second half (when n are in flight) are measured."""
    workload = Workload(deltas=round(DELTA_RATE * seconds), rate=DELTA_RATE)
    total = 2 * n
    await rig.reset_counters()
    sent = await rig.store_calls()
    errors = await rig.errors()
    batch = await rig.ask(workload, total)
    pids = {
        "bot": rig.bot_pid,
        "simulators": rig.sims.pid,
        "redis": rig.redis_pid,
        "driver": os.getpid(),
    }
    loop = asyncio.get_running_loop()
    start, interval = loop.time(), seconds / n
    posts: list[asyncio.Task[None]] = []
    window_start = _marks(pids)
    for k in range(total):
        if k == n:
            window_start = _marks(pids)
        await asyncio.sleep(max(0.0, start + k * interval - loop.time()))
        posts.append(asyncio.create_task(rig.post(batch, k)))
    window_end = _marks(pids)
    await asyncio.gather(*posts)
    stats = await rig.wait_done(batch, seconds + 180)
    calls = await rig.commandstats()
    round_trips = await rig.store_calls() - sent
    new_errors = _new_errors(errors, await rig.errors())
    measured = [ts for ts, _ in batch.questions[n:]]
    acks = [batch.acks[ts] * 1000 for ts in measured]
    late = [
        stats["finals_at"][ts] - batch.post_at[ts] - workload.seconds
        for ts in measured
        if ts in stats["finals_at"]
    ]
    span = window_end.at - window_start.at
    completed = int(stats["outcomes"].get("completed", 0))
    p99 = percentile(acks, 99)
    return {
        "in_flight": n,
        "events_per_second": round(n / seconds, 1),
        "deltas_per_second": round(n * DELTA_RATE),
        "ack_p50_ms": round(percentile(acks, 50), 1),
        "ack_p99_ms": round(p99, 1),
        "ack_max_ms": round(max(acks), 1),
        "late_p50_s": round(percentile(late, 50), 2),
        "late_p99_s": round(percentile(late, 99), 2),
        "completed": completed,
        "answers": total,
        "outcomes": stats["outcomes"],
        "cpu_percent": {
            name: round(100 * (window_end.cpu[name] - window_start.cpu[name]) / span)
            for name in pids
        },
        "redis_commands_per_answer": round(sum(calls.values()) / total, 1),
        "redis_round_trips_per_answer": round(round_trips / total, 1),
        "edits_per_answer": round(stats["calls"].get("chat.update", 0) / total, 1),
        "bot_errors": new_errors,
        "sustained": p99 < ACK_TARGET * 1000 and completed == total and not new_errors,
    }


async def concurrency_phase(
    rig: Rig, levels: list[int], seconds: float, warmup: int
) -> dict[str, Any]:
    await rig.start_bot("bench-concurrency")
    await rig.reset_counters()
    stats = await rig.run(Workload(deltas=100, rate=0), warmup, 60)
    _require_completed(stats, warmup, "concurrency warm-up")
    rows = []
    for n in levels:
        row = await concurrency_level(rig, n, seconds)
        rows.append(row)
        print(
            f"  concurrency {n}: ack p50 {row['ack_p50_ms']} ms, p99 {row['ack_p99_ms']} ms, "
            f"late p99 {row['late_p99_s']} s, cpu {row['cpu_percent']}",
            flush=True,
        )
        if not row["sustained"]:
            break
    await rig.stop_bot()
    passing = [r["in_flight"] for r in rows if r["sustained"]]
    return {
        "answer_seconds": seconds,
        "deltas_per_second_each": DELTA_RATE,
        "levels": rows,
        "largest_sustained": max(passing) if passing else 0,
    }
