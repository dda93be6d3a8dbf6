"""`python -m bench.overhead`: the command line, and the helper processes (`--sims`, `--bare`)
the rig starts by re-invoking this package."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench import overhead
from bench.common import RESULTS, write_json, write_text
from bench.overhead.bare import BARE_LOOPS, bare_loop
from bench.overhead.report import render_markdown, report_sections, summary
from bench.overhead.rig import _log
from bench.overhead.run import FULL, PHASES, QUICK, benchmark
from bench.overhead.sims import SimsServer


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead", description=overhead.__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about 1.5 minutes)")
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases among {', '.join(PHASES)}"
    )
    parser.add_argument("--levels", help="concurrency levels, e.g. 100,200,300")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write overhead.md/.json (default: "
        "bench/results for a full run of every phase, nowhere otherwise)",
    )
    parser.add_argument("--slack-latency", type=float, default=0.03)
    parser.add_argument(
        "--keep-profiles",
        type=Path,
        metavar="DIR",
        help="also save py-spy's collapsed stacks in DIR (for flamegraph tools)",
    )
    # Internal: this package re-invoked as the simulators' process or as the bare loop.
    parser.add_argument("--sims", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", choices=sorted(BARE_LOOPS), help=argparse.SUPPRESS)
    parser.add_argument("--claude-url", help=argparse.SUPPRESS)
    parser.add_argument("--question", help=argparse.SUPPRESS)
    parser.add_argument("--answers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sims:
        asyncio.run(SimsServer.run(args.slack_latency))
        return
    if args.bare:
        result = asyncio.run(bare_loop(args.claude_url, args.question, args.answers, args.bare))
        print(json.dumps(result))
        return
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    if args.levels:
        levels = tuple(int(x) for x in args.levels.split(","))
        plan = replace(plan, concurrency_levels=levels)
    command = "python -m bench.overhead " + " ".join(sys.argv[1:])
    started = time.monotonic()
    results = asyncio.run(benchmark(plan, phases, args.slack_latency, args.keep_profiles))
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    results["elapsed_seconds"] = round(time.monotonic() - started)
    results["command"] = command.strip()
    print("\n".join(summary(results) + report_sections(results)))
    out = args.out or (RESULTS if not args.quick and set(phases) == set(PHASES) else None)
    if out is not None:
        write_json(out / "overhead.json", results, indent=2)
        write_text(out / "overhead.md", render_markdown(results, results["command"]))
        _log(f"wrote {out / 'overhead.md'} and {out / 'overhead.json'}")


if __name__ == "__main__":
    main()
