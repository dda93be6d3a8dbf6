"""Does a change cost CPU? The bot's CPU on `bench.overhead`'s paced workload, this checkout
against another commit, measured in turns on the same machine.

    python -m bench.ab --against 332f206 [--rounds 4] [--budget full|default]

Each round runs the workload once with each code, in a fresh process of each tree (a worktree
of the other commit in a temporary directory), with that tree's own `bench.overhead` rig, so
an older commit is measured by its own harness. Taking turns is the point: on a shared 2-core
machine the CPU per delta of the same code drifts by 20 % between runs minutes apart, and
back-to-back pairs cancel most of that drift; a ratio of two single runs does not.

Prints each round and the medians; writes bench/results/ab.md and ab.json (ab-default.* with
`--budget default`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run by path (`run_in`), this file measures inside another tree: `bench` and `bot` must come
# from that tree (PYTHONPATH), not from the directory this file is in.
MEASURING = __package__ in (None, "")
if MEASURING:
    sys.path[:] = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent

ANSWERS = 100
DELTAS, RATE = 600, 30  # bench.overhead's paced case: 20 s answers, one edit a second each
WARMUP = 20
BUDGETS = {
    # every answer edited at its full per-message pace (bench.overhead's BOT_ENV already says so)
    "full": {},
    # the budget the bot ships with: most intermediate edits skipped
    "default": {"WORKSPACE_EDITS_PER_MINUTE": "45", "WORKSPACE_EDIT_BURST": "10"},
}


# --------------------------------------------------------------------------------------------
# One measurement, inside a tree (this file run by path, that tree first on sys.path)
# --------------------------------------------------------------------------------------------


async def measure(budget: str, runs: int) -> list[float]:
    """The bot's CPU seconds for `runs` batches of the paced workload, after a warm-up. Only
    names every tree's `bench.overhead` has had since the rig was written are used."""
    from bench import overhead  # the tree's own

    rig = overhead.Rig(0.03)
    await rig.start()
    try:
        await rig.start_bot("ab", **BUDGETS[budget])
        await rig.reset_counters()
        await _completed(rig, overhead.Workload(100, 0), WARMUP)
        seconds = []
        for _ in range(runs):
            await rig.reset_counters()
            before = overhead.cpu_seconds(rig.bot_pid)
            await _completed(rig, overhead.Workload(DELTAS, RATE), ANSWERS)
            seconds.append(overhead.cpu_seconds(rig.bot_pid) - before)
        return seconds
    finally:
        await rig.close()


async def _completed(rig: Any, workload: Any, count: int) -> None:
    stats = await rig.run(workload, count, workload.seconds + 120)
    completed = int(stats["outcomes"].get("completed", 0))
    if completed != count:
        raise RuntimeError(f"{completed}/{count} answers completed: {stats['outcomes']}")


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def run_in(tree: Path, budget: str, runs: int) -> list[float]:
    """`measure` in a fresh process of `tree`, with this virtualenv's Python."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", budget, str(runs)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measuring {tree} failed:\n{out.stderr[-2000:]}")
    result: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def worktree(rev: str, where: Path) -> Path:
    path = where / "other"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev],
        check=True,
        capture_output=True,
    )
    return path


def compare(against: str, rounds: int, runs: int, budget: str) -> dict[str, Any]:
    ours: list[float] = []
    theirs: list[float] = []
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        other = worktree(against, Path(tmp))
        try:
            for n in range(1, rounds + 1):
                # Which goes first alternates too, so neither always follows a warm machine.
                order = [(other, theirs), (ROOT, ours)]
                for tree, into in order if n % 2 else order[::-1]:
                    into.extend(run_in(tree, budget, runs))
                rows.append([n, *_fmt(theirs[-runs:]), *_fmt(ours[-runs:])])
                print(f"round {n}: {against} {_fmt(theirs[-runs:])[0]} s · "
                      f"this checkout {_fmt(ours[-runs:])[0]} s", flush=True)  # fmt: skip
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                check=False,
                capture_output=True,
            )
    per_delta = 1e6 / (ANSWERS * DELTAS)
    pairs = [o / t for o, t in zip(ours, theirs, strict=True)]
    return {
        "against": against,
        "budget": budget,
        "rounds": rounds,
        "runs_per_round": runs,
        "answers": ANSWERS,
        "workload": f"{DELTAS} deltas × 4 chars, {RATE}/s",
        "theirs_cpu_seconds": theirs,
        "ours_cpu_seconds": ours,
        "theirs_median_us_per_delta": round(statistics.median(theirs) * per_delta, 1),
        "ours_median_us_per_delta": round(statistics.median(ours) * per_delta, 1),
        # Each round's runs against the other code's in the same round: drift cancels.
        "change": round(statistics.median(pairs) - 1, 3),
        "change_range": [round(min(pairs) - 1, 3), round(max(pairs) - 1, 3)],
        "rows": rows,
    }


def _fmt(seconds: list[float]) -> list[str]:
    return [" ".join(f"{s:.2f}" for s in seconds)]


def render(r: dict[str, Any]) -> str:
    from bench.common import code_text, machine_text, markdown_table

    ours = code_text(r["bot_code"])
    low, high = r["change_range"]
    return "\n".join(
        [
            "# This checkout against another commit: the bot's CPU (`bench/ab.py`)",
            "",
            f"Measured {r['date']} on {machine_text(r['machine'])}.",
            "",
            f"Command: `{r['command']}` (total {r['elapsed_seconds']} s).",
            "",
            f"Workload: {r['answers']} answers of {r['workload']} (`bench.overhead`'s paced "
            f"case), edit budget `{r['budget']}`; bot CPU seconds per batch, this checkout "
            f"({ours}) and {r['against']} in turns, each in a fresh process of its own tree.",
            "",
            markdown_table(["round", f"{r['against']} (s)", "this checkout (s)"], r["rows"]),
            "",
            f"Median µs per delta: {r['against']} {r['theirs_median_us_per_delta']}, this "
            f"checkout {r['ours_median_us_per_delta']}. This checkout's CPU against "
            f"{r['against']}'s in the same round, median over the rounds: "
            f"**{r['change']:+.1%}** (from {low:+.1%} to {high:+.1%}).",
            "",
        ]
    )


def main() -> None:
    from bench.common import RESULTS, bot_code, machine, write_json, write_text

    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--against", required=True, help="a commit to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="batches per turn")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    args = parser.parse_args()
    started = time.monotonic()
    results = compare(args.against, args.rounds, args.runs, args.budget)
    results.update(
        date=time.strftime("%Y-%m-%d %H:%M"),
        elapsed_seconds=round(time.monotonic() - started),
        command="python -m bench.ab " + " ".join(sys.argv[1:]),
        machine=machine(),
        bot_code=bot_code(),
    )
    text = render(results)
    print(text)
    name = "ab" if args.budget == "full" else f"ab-{args.budget}"
    write_json(RESULTS / f"{name}.json", results, indent=2)
    write_text(RESULTS / f"{name}.md", text)


if __name__ == "__main__":
    if MEASURING:
        if sys.argv[1:2] != ["--measure"]:
            sys.exit("run as `python -m bench.ab`; the file is run by path only to measure")
        print(json.dumps(asyncio.run(measure(sys.argv[2], int(sys.argv[3])))))
    else:
        main()
