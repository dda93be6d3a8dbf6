"""Tools benchmark: the bot's CPU per streamed delta when Claude searches the web and cites
what it found, against the same answer without tools. Target: within 10 %.

The same rig as `bench.overhead` (a real `python -m bot serve` process, the simulators in a
process of their own, a throwaway redis-server): answers of D small deltas at 30 a second,
plain, and after 3 web searches with a cited passage every 10 deltas (a citation, a marker and
its source on every passage: more citations than real answers carry). The bot's CPU time is
read from /proc around each batch; plain and tool-using batches alternate, `--rounds` times,
and the medians are compared (one batch can be 10 % off the next on a shared machine). The
bare loop (the SDK alone, the same streams) is reported beside each, as in `bench.overhead`.

    python -m bench.tools              # 5 rounds (~6 min on 2 cores)
    python -m bench.tools --rounds 1   # quicker

Results go to `bench/results/`: `tools.json` and `tools.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    bot_code,
    code_text,
    machine,
    machine_text,
    markdown_table,
    write_json,
    write_text,
)
from bench.overhead import BOT_LOOP, Rig, Workload, _log, _require_completed, cpu_case

TARGET = 1.10  # the tool-using answer's CPU per delta over the plain one's
ANSWERS = 50
PLAIN = Workload(300, 30)
WITH_TOOLS = Workload(300, 30, searches=3)


async def measure(rounds: int, answers: int) -> list[dict[str, Any]]:
    """`rounds` pairs of batches (plain, then with tools), in one bot process."""
    rig = Rig(0.03)
    await rig.start()
    cases: list[dict[str, Any]] = []
    try:
        await rig.start_bot("bench-tools")
        await rig.reset_counters()
        warmup = 20
        _require_completed(await rig.run(Workload(100, 0), warmup, 60), warmup, "warm-up")
        for n in range(rounds):
            for kind, workload in (("plain", PLAIN), ("tools", WITH_TOOLS)):
                _log(f"round {n + 1}/{rounds}: {answers} answers, {workload.label()}")
                case = await cpu_case(rig, workload, answers, rounds=1)  # the rounds are this loop
                cases.append({"round": n + 1, "kind": kind, **case})
    finally:
        await rig.close()
    return cases


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    def median(kind: str, pick: Any) -> float:
        return float(statistics.median(pick(c) for c in cases if c["kind"] == kind))

    def bot(c: dict[str, Any]) -> float:
        return float(c["bot_us_per_delta"])

    def bare(c: dict[str, Any]) -> float:
        return float(c["bare"][BOT_LOOP]["us_per_delta"])

    plain, tools = median("plain", bot), median("tools", bot)
    return {
        "plain_us_per_delta": round(plain, 1),
        "tools_us_per_delta": round(tools, 1),
        "ratio": round(tools / plain, 3),
        "bare_plain_us_per_delta": round(median("plain", bare), 1),
        "bare_tools_us_per_delta": round(median("tools", bare), 1),
        "met": tools / plain <= TARGET,
    }


def report(meta: dict[str, Any], cases: list[dict[str, Any]], result: dict[str, Any]) -> str:
    rows = [
        [
            c["round"],
            c["workload"],
            f"{c['bot_us_per_delta']:.1f}",
            f"{c['bare'][BOT_LOOP]['us_per_delta']:.1f}",
            f"{c['edits_per_answer']:.1f}",
        ]
        for c in cases
    ]
    table = markdown_table(
        ["round", "answers of", "bot µs/delta", "bare loop µs/delta", "edits/answer"], rows
    )
    verdict = "met" if result["met"] else "NOT met"
    code = code_text(meta["bot_code"])
    return "\n".join(
        [
            "# Tools benchmark: CPU per delta with web search and citations",
            "",
            f"Command: `{meta['command']}` · {meta['date']} · bot at {code}",
            f"Machine: {machine_text(meta['machine'])}",
            "",
            f"Median bot CPU per delta: **{result['plain_us_per_delta']} µs** plain, "
            f"**{result['tools_us_per_delta']} µs** with 3 searches and a citation every "
            f"10 deltas: ratio **{result['ratio']}** (target ≤ {TARGET}: {verdict}).",
            "",
            table,
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tools", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--answers", type=int, default=ANSWERS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m bench.tools", *map(shlex.quote, sys.argv[1:])])
    started = time.monotonic()
    code = bot_code()
    cases = asyncio.run(measure(args.rounds, args.answers))
    result = summarise(cases)
    meta = {
        "command": command,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "bot_code": code,
        "seconds": round(time.monotonic() - started),
        "target": TARGET,
    }
    write_json(args.out / "tools.json", {**meta, "result": result, "cases": cases}, indent=2)
    text = report(meta, cases, result)
    write_text(args.out / "tools.md", text)
    print(text)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
