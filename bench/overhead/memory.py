"""Phase 4, memory per in-flight answer: the bot's RSS with answers held open mid-stream, over
its RSS before them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.overhead.rig import Rig, _require_completed, rss_bytes
from bench.overhead.workload import Workload

HOLD_ARRIVALS = 25.0  # questions a second while answers are being held open (memory phase)


async def memory_phase(rig: Rig, levels: list[int], warmup: int) -> dict[str, Any]:
    """RSS with K answers held open mid-stream (text shown, stream silent), over the RSS of the
    same warmed-up process before them. Questions arrive at HOLD_ARRIVALS a second, so that
    the figure is the answers' own memory rather than the peak of a burst of arrivals; the
    peak (VmHWM) is reported beside it."""
    await rig.start_bot("bench-memory", STREAM_IDLE_TIMEOUT_SECONDS="600")
    await rig.reset_counters()
    stats = await rig.run(Workload(deltas=100, rate=0), warmup, 60)
    _require_completed(stats, warmup, "memory warm-up")
    await asyncio.sleep(1.0)  # the warm-up's last tasks and buffers settle
    base = rss_bytes(rig.bot_pid)
    held_workload = Workload(deltas=1000, rate=0, hold=100)  # 100 deltas shown, then silence
    held, rows = 0, []
    for k in levels:
        batch = await rig.ask(held_workload, k - held)
        for first in range(0, k - held, 10):
            await asyncio.gather(
                *(rig.post(batch, i) for i in range(first, min(first + 10, k - held)))
            )
            await asyncio.sleep(10 / HOLD_ARRIVALS)
        held = k
        deadline = time.monotonic() + 60
        while (await rig.sims.stats())["open_streams"] < k:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {k} answers started streaming")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # two edit intervals: every held answer has shown its text
        rss = rss_bytes(rig.bot_pid)
        rows.append(
            {
                "in_flight": k,
                "rss_mib": round(rss / 2**20, 1),
                "peak_rss_mib": round(rss_bytes(rig.bot_pid, "VmHWM") / 2**20, 1),
                "kib_per_answer": round((rss - base) / k / 1024, 1),
            }
        )
    await rig.stop_bot()
    return {
        "baseline_rss_mib": round(base / 2**20, 1),
        "levels": rows,
        "held_answer": "100 deltas of 4 chars shown, stream open and silent",
    }
