"""A run: the sizes of every phase (a full and a quick plan), and the phases run in order on one
rig, sharing bot processes where a phase allows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.overhead.concurrency import CONCURRENCY_TARGET, concurrency_phase
from bench.overhead.cpu import DEFAULT_BUDGET_ENV, DEFAULT_BUDGET_LABEL, cpu_case
from bench.overhead.memory import memory_phase
from bench.overhead.profiles import profile_phase
from bench.overhead.redis_commands import redis_phase
from bench.overhead.rig import BOT_ENV, Rig, _log, _require_completed
from bench.overhead.workload import Workload


@dataclass(frozen=True)
class Plan:
    """Sizes of every phase; `FULL` takes about 14 minutes on 2 cores, `QUICK` about 1.5."""

    paced: tuple[int, Workload]  # (answers, workload): realistic pace, per-answer costs included
    flat_out: tuple[int, Workload]  # deltas as fast as they come: the marginal per-delta cost
    profile_in_flight: int  # the second profile: this many answers in flight
    redis_cases: tuple[tuple[str, Workload], ...]
    redis_answers: int
    memory_levels: tuple[int, ...]
    concurrency_levels: tuple[int, ...]
    concurrency_seconds: float
    warmup: int
    cpu_rounds: int  # each CPU case: bot and bare loops back to back, this many times


FULL = Plan(
    paced=(100, Workload(600, 30)),
    flat_out=(10, Workload(2500, 0)),
    profile_in_flight=CONCURRENCY_TARGET,
    redis_cases=(
        ("A short", Workload(30, 30)),
        ("B 10× longer, same rate", Workload(300, 30)),
        ("C as A, 10× slower", Workload(30, 3)),
        ("D 10× B's length, same duration", Workload(3000, 300, chars=3)),
    ),
    redis_answers=5,
    memory_levels=(50, 200),
    concurrency_levels=(100, 200, 300, 400, 500),
    concurrency_seconds=10.0,
    warmup=20,
    cpu_rounds=3,
)
QUICK = Plan(
    paced=(20, Workload(150, 30)),
    flat_out=(4, Workload(1000, 0)),
    profile_in_flight=50,
    redis_cases=(
        ("A short", Workload(15, 30)),
        ("B 10× longer, same rate", Workload(150, 30)),
        ("C as A, 10× slower", Workload(15, 3)),
        ("D 10× B's length, same duration", Workload(1500, 300, chars=3)),
    ),
    redis_answers=3,
    memory_levels=(20, 50),
    concurrency_levels=(25, 50),
    concurrency_seconds=5.0,
    warmup=5,
    cpu_rounds=1,
)
PHASES = ("cpu", "profile", "redis", "memory", "concurrency")


async def benchmark(
    plan: Plan, phases: list[str], slack_latency: float, keep_profile: Path | None = None
) -> dict[str, Any]:
    rig = Rig(slack_latency)
    await rig.start()
    results: dict[str, Any] = {
        "machine": machine(redis=rig.redis_version),
        "bot_settings": BOT_ENV,
        "slack_latency_seconds": slack_latency,
        "plan": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(plan).items()},
    }
    try:
        if {"cpu", "profile", "redis"} & set(phases):
            await rig.start_bot("bench-cpu")
            await rig.reset_counters()
            _require_completed(
                await rig.run(Workload(100, 0), plan.warmup, 60), plan.warmup, "warm-up"
            )
            if "cpu" in phases:
                results["cpu"] = []
                for answers, workload in (plan.paced, plan.flat_out):
                    _log(f"cpu: {answers} answers of {workload.label()}")
                    results["cpu"].append(await cpu_case(rig, workload, answers, plan.cpu_rounds))
            if "profile" in phases:
                _log("profile: py-spy on the bot")
                results["profile"] = await profile_phase(
                    rig, plan.paced, plan.profile_in_flight, plan.concurrency_seconds, keep_profile
                )
            if "redis" in phases:
                _log("redis: commands per answer")
                results["redis"] = await redis_phase(
                    rig, list(plan.redis_cases), plan.redis_answers
                )
            if "cpu" in phases:
                # The same paced answers under the edit budget the bot ships with: in a busy
                # workspace the budget, not EDIT_INTERVAL_SECONDS, sets how often each is edited.
                answers, workload = plan.paced
                _log(f"cpu: {answers} answers of {workload.label()}, default edit budget")
                await rig.start_bot("bench-cpu-default-budget", **DEFAULT_BUDGET_ENV)
                await rig.reset_counters()
                _require_completed(
                    await rig.run(Workload(100, 0), plan.warmup, 60), plan.warmup, "warm-up"
                )
                results["cpu"].append(
                    await cpu_case(
                        rig, workload, answers, plan.cpu_rounds, budget=DEFAULT_BUDGET_LABEL
                    )
                )
        if "memory" in phases:
            _log("memory: answers held mid-stream")
            results["memory"] = await memory_phase(rig, list(plan.memory_levels), plan.warmup)
        if "concurrency" in phases:
            _log("concurrency: ramp")
            results["concurrency"] = await concurrency_phase(
                rig, list(plan.concurrency_levels), plan.concurrency_seconds, plan.warmup
            )
    finally:
        await rig.close()
    return results
