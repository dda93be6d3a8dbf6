"""Files benchmark: what attaching files adds to the time from a mention to its first text.

The real bot (signed HTTP events, Bolt, slack-sdk, the Anthropic SDK, the store) answers
mentions on loopback, as in the integration tests, with and without files attached: a 5 MB PDF
(3 pages of photos), a 12-megapixel photo (4,032 × 3,024 JPEG, about 5 MB), both. *First text*
is the time from posting the event to Slack (the simulator) showing the answer's first words,
read from Slack's side. The files' extra time is their first text's p50 over the no-file
p50; the *overhead* is that minus the simulated transfer time (the slowest file's size over
the simulated rate; downloads run in parallel). Target: under 300 ms.

The simulators share the process, and so the two cores, with the bot: the simulated Claude
parses the request and decodes the image to check it, which a real Claude does elsewhere, so
the overhead measured here is an upper bound of the bot's own. The bot's own part, its
`FileReader.read` (download and preparation), is reported beside it, and each preparation step
on its own.

Every file is new to the bot (a new file ID, so not in the store) except in the follow-up
rows: a second question in the same thread, whose files come from the store.

    python -m bench.files              # every condition, 10 runs each (~2 min on 2 cores)
    python -m bench.files --runs 3     # quicker

Results go to `bench/results/`: `files.json` (every run) and `files.md` (the tables).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    bot_code,
    code_text,
    machine,
    machine_text,
    markdown_table,
    percentile,
    write_json,
    write_text,
)
from bench.pacing import redis_server
from bot import attachments as att
from bot import files as files_module
from bot.imaging import prepare_image
from bot.sim import samples
from bot.sim.rig import Harness, running_bot, simulators
from bot.sim.slack import SimMessage, SlackSim
from bot.store import RedisStore

TARGET = 0.3  # seconds of overhead beyond the simulated transfer time
RATES: dict[str, float | None] = {"loopback": None, "50 MB/s": 50e6}
CONDITIONS = ("none", "pdf", "photo", "both")
FOLLOW_UPS = ("none, follow-up", "both, follow-up")
ANSWER_MARK = "You asked"  # the simulated Claude's answers start so
# Production defaults, except a workspace edit budget that never makes a first edit wait: the
# benchmark asks about 150 questions in a few minutes, and waits for edit tokens are not files'.
BOT_SETTINGS: dict[str, Any] = {"workspace_edits_per_minute": 6000, "workspace_edit_burst": 100}


@dataclass
class Sample:
    rate: str
    store: str
    condition: str
    first_text: float
    read_files: float  # the bot's FileReader.read for this answer (0 without files)
    transfer: float  # the simulated transfer time of its files


@dataclass
class Fixtures:
    pdf: bytes
    photo: bytes
    prepare: dict[str, list[float]] = field(default_factory=dict)


def make_fixtures() -> Fixtures:
    pdf = samples.pdf(3, size=5_000_000)
    photo = samples.photo(4032, 3024)
    return Fixtures(pdf, photo)


def time_preparation(fx: Fixtures, runs: int) -> dict[str, list[float]]:
    """Each preparation step alone, in this thread (the bot runs them in a worker thread)."""
    steps: dict[str, list[float]] = {
        "photo: decode, scale, encode": [],
        "pdf: check, count, base64": [],
    }
    for _ in range(runs):
        started = time.perf_counter()
        prepared = prepare_image(fx.photo)
        att.image_block(prepared.media_type, prepared.data)
        steps["photo: decode, scale, encode"].append(time.perf_counter() - started)
        started = time.perf_counter()
        att.pdf_problem(fx.pdf)
        att.pdf_pages(fx.pdf)
        base64.b64encode(fx.pdf)
        steps["pdf: check, count, base64"].append(time.perf_counter() - started)
    return steps


class FirstText:
    """When each answer's message first shows the answer's words, from Slack's side."""

    def __init__(self) -> None:
        self.shown: dict[str, float] = {}  # thread ts of the question -> monotonic time

    def __call__(self, kind: str, message: SimMessage) -> None:
        if message.user != "UBOT" or ANSWER_MARK not in message.visible_text():
            return
        key = f"{message.thread_ts}:{message.ts}"
        self.shown.setdefault(key, time.monotonic())

    def after(self, thread_ts: str, started: float) -> float:
        times = [t for k, t in self.shown.items() if k.startswith(f"{thread_ts}:") and t > started]
        return min(times) - started


class ReadTimer:
    """How long each answer's `FileReader.read` took (download and preparation)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._original = files_module.FileReader.read

    def __enter__(self) -> ReadTimer:
        original = self._original
        durations = self.durations

        async def timed(reader: Any, thread: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(reader, thread, **kw)
            finally:
                durations.append(time.perf_counter() - started)

        files_module.FileReader.read = timed  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        files_module.FileReader.read = self._original  # type: ignore[method-assign]


def attach(slack: SlackSim, fx: Fixtures, condition: str) -> tuple[list[dict[str, Any]], float]:
    """New uploads for a condition, and their simulated transfer time."""
    chosen = []
    if condition.startswith(("pdf", "both")):
        chosen.append(slack.files.upload("report.pdf", fx.pdf, mimetype="application/pdf"))
    if condition.startswith(("photo", "both")):
        chosen.append(slack.files.upload("IMG_0001.JPG", fx.photo, mimetype="image/jpeg"))
    rate = slack.files.transfer_bytes_per_second
    transfer = max((f["size"] / rate for f in chosen), default=0.0) if rate else 0.0
    return chosen, transfer


async def ask(
    h: Harness,
    seen: FirstText,
    timer: ReadTimer,
    files: list[dict[str, Any]],
    thread_ts: str | None,
) -> tuple[SimMessage, float, float]:
    reads_before = len(timer.durations)
    started = time.monotonic()
    asked = await h.mention("what do these show?", files=files, thread_ts=thread_ts)
    root = thread_ts or asked.ts
    await h.slack.wait_for(
        lambda: any(k.startswith(f"{root}:") and t > started for k, t in seen.shown.items()),
        timeout=60,
    )
    first = seen.after(root, started)
    await h.slack.wait_for(lambda: len(timer.durations) > reads_before, timeout=60)
    read = sum(timer.durations[reads_before:])
    await h.finished(asked, timeout=60)
    return asked, first, read


async def run_rate(rate_name: str, runs: int, fx: Fixtures, redis_url: str | None) -> list[Sample]:
    samples_out: list[Sample] = []
    stores = ["memory"] + (["redis"] if redis_url and rate_name == "loopback" else [])
    for store_name in stores:
        store = (
            RedisStore.from_url(redis_url, prefix="bench-files:")
            if store_name == "redis" and redis_url
            else None
        )
        async with simulators() as (slack, claude):
            slack.files.transfer_bytes_per_second = RATES[rate_name]
            seen = FirstText()
            slack.on_change.append(seen)
            async with running_bot(
                slack, claude, store=store, fast=False, log_level="ERROR", **BOT_SETTINGS
            ) as h:
                with ReadTimer() as timer:
                    # One answer first, so connections and code paths are warm.
                    await ask(h, seen, timer, attach(slack, fx, "both")[0], None)
                    for run in range(runs):
                        for condition in CONDITIONS:
                            files, transfer = attach(slack, fx, condition)
                            asked, first, read = await ask(h, seen, timer, files, None)
                            samples_out.append(
                                Sample(rate_name, store_name, condition, first, read, transfer)
                            )
                            if condition in ("none", "both"):
                                # A follow-up in the same thread: its files come from the store.
                                _, first, read = await ask(h, seen, timer, [], asked.ts)
                                samples_out.append(
                                    Sample(
                                        rate_name,
                                        store_name,
                                        f"{condition}, follow-up",
                                        first,
                                        read,
                                        0.0,
                                    )
                                )
                        print(f"  {rate_name} / {store_name}: run {run + 1}/{runs}", flush=True)
    return samples_out


def summarise(all_samples: list[Sample]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    rows: list[list[Any]] = []
    summary: list[dict[str, Any]] = []
    groups = sorted(
        {(s.rate, s.store) for s in all_samples}, key=lambda g: (list(RATES).index(g[0]), g[1])
    )
    by: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in all_samples:
        by.setdefault((sample.rate, sample.store, sample.condition), []).append(sample)
    for rate, store in groups:

        def of(condition: str, rate: str = rate, store: str = store) -> list[Sample]:
            return by.get((rate, store, condition), [])

        base = percentile([s.first_text for s in of("none")], 50)
        base_follow = percentile([s.first_text for s in of("none, follow-up")], 50)
        for condition in (*CONDITIONS, *FOLLOW_UPS):
            runs = of(condition)
            if not runs:
                continue
            p50 = percentile([s.first_text for s in runs], 50)
            p90 = percentile([s.first_text for s in runs], 90)
            transfer = percentile([s.transfer for s in runs], 50)
            baseline = base_follow if condition.endswith("follow-up") else base
            extra = p50 - baseline
            overhead = extra - transfer
            read = percentile([s.read_files for s in runs], 50)
            measured = condition not in ("none", "none, follow-up")
            entry = {
                "rate": rate,
                "store": store,
                "condition": condition,
                "runs": len(runs),
                "first_text_p50": round(p50, 4),
                "first_text_p90": round(p90, 4),
                "extra_p50": round(extra, 4) if measured else None,
                "transfer": round(transfer, 4),
                "overhead_p50": round(overhead, 4) if measured else None,
                "read_files_p50": round(read, 4),
                "met": (overhead < TARGET) if measured else None,
            }
            summary.append(entry)
            rows.append(
                [
                    rate,
                    store,
                    condition,
                    f"{p50 * 1000:.0f} / {p90 * 1000:.0f}",
                    f"{extra * 1000:.0f}" if measured else "—",
                    f"{transfer * 1000:.0f}",
                    f"{overhead * 1000:.0f}" if measured else "—",
                    f"{read * 1000:.0f}" if read else "—",
                    ("yes" if overhead < TARGET else "NO") if measured else "",
                ]
            )
    return summary, rows


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.files", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=10, help="questions per condition (default 10)")
    parser.add_argument(
        "--redis", choices=("on", "off"), default="on", help="also with a Redis store"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


async def _run_all(args: argparse.Namespace, fx: Fixtures, redis_url: str | None) -> list[Sample]:
    out: list[Sample] = []
    for rate in RATES:
        out += await run_rate(rate, args.runs, fx, redis_url)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.ERROR)
    command = " ".join(["python -m bench.files", *map(shlex.quote, sys.argv[1:])])
    code = bot_code()
    started = time.monotonic()
    fx = make_fixtures()
    steps = time_preparation(fx, max(args.runs, 5))
    with redis_server() if args.redis == "on" else contextlib.nullcontext() as redis_url:
        all_samples = asyncio.run(_run_all(args, fx, redis_url))
    summary, rows = summarise(all_samples)
    step_rows = [
        [name, f"{percentile(t, 50) * 1000:.0f}", f"{percentile(t, 90) * 1000:.0f}"]
        for name, t in steps.items()
    ]
    meta: dict[str, Any] = {
        "command": command,
        "machine": machine(pillow=version("pillow")),
        "bot_code": code,
        "total_seconds": round(time.monotonic() - started, 1),
        "files": {
            "pdf_bytes": len(fx.pdf),
            "pdf_pages": att.pdf_pages(fx.pdf),
            "photo_bytes": len(fx.photo),
            "photo_pixels": "4032x3024",
        },
        "target_seconds": TARGET,
    }
    write_json(
        args.out / "files.json",
        {
            "meta": meta,
            "summary": summary,
            "preparation": {k: [round(x, 5) for x in v] for k, v in steps.items()},
            "samples": [vars(s) for s in all_samples],
        },
    )
    table = markdown_table(
        [
            "rate",
            "store",
            "attached",
            "first text p50 / p90 (ms)",
            "extra p50 (ms)",
            "transfer (ms)",
            "overhead p50 (ms)",
            "bot's file reading p50 (ms)",
            f"< {TARGET * 1000:.0f} ms",
        ],
        rows,
        "lllrrrrrl",
    )
    prep = markdown_table(["step (one thread)", "p50 (ms)", "p90 (ms)"], step_rows, "lrr")
    text = (
        f"# Files benchmark\n\n`{command}` — bot {code_text(code)}, {meta['total_seconds']} s, "
        f"{machine_text(meta['machine'])}.\n\n"
        f"Files: a {len(fx.pdf) / 1e6:.2f} MB PDF ({meta['files']['pdf_pages']} pages), a "
        f"{len(fx.photo) / 1e6:.2f} MB 12-megapixel JPEG (4032 × 3024). {args.runs} questions "
        "per row.\n\n" + table + "\n\n" + prep + "\n"
    )
    write_text(args.out / "files.md", text)
    print(text)
    return 0 if all(e["met"] is not False for e in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
