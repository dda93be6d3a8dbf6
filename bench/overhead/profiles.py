"""Phase 2, where the bot's CPU goes: py-spy records the bot under a workload, and its collapsed
stacks are reduced to the top frames and the packages that asked for the CPU."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import write_text
from bench.overhead.concurrency import DELTA_RATE, concurrency_level
from bench.overhead.rig import Rig, _require_completed
from bench.overhead.workload import Workload

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_LOOP_RUNNER = re.compile(r"bot/(cli|__main__)\.py$")
_LOOP_RUNNER_LABEL = re.compile(r"\(bot/(cli|__main__)\.py\)$")
_STDLIB = re.compile(r"(^|/)python3\.\d+/(?!site-packages)")


def _component(path: str) -> str | None:
    """Which package a frame's file belongs to; None for the standard library.

    py-spy prints paths relative to their sys.path entry ("anthropic/_models.py").
    """
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif _STDLIB.search(path) or path.startswith("<"):
        return None
    top = path.split("/", 1)[0].removesuffix(".py")
    return None if top in sys.stdlib_module_names or not top else top


def summarize_profile(raw: str, top: int = 15) -> dict[str, Any]:
    """Top frames of py-spy's collapsed stacks: self time, inclusive time, and per component.

    A sample is charged to the innermost frame of a third-party package or of the bot ("who
    asked for this CPU"); samples with only standard-library frames (and the bot's entry point,
    which runs the loop) are the event loop's own. Idle thread-pool workers, which py-spy
    samples as running while they wait on their queue, are dropped.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames: list[tuple[str, str]] = []
        for text in stack.split(";"):
            m = _FRAME.match(text.strip())
            if m is not None:
                frames.append((m["name"], m["file"]))
        if not frames or frames[-1][0] == "_worker":
            continue
        total += count
        label = [f"{name} ({_short(file)})" for name, file in frames]
        own[label[-1]] += count
        for seen in set(label):
            inclusive[seen] += count
        owner = next(
            (
                c
                for _, f in reversed(frames)
                if (c := _component(f)) is not None and not _LOOP_RUNNER.search(f)
            ),
            "event loop / stdlib",
        )
        components[owner] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    bot_frames = Counter(
        {k: n for k, n in inclusive.items() if "(bot/" in k and not _LOOP_RUNNER_LABEL.search(k)}
    )
    return {
        "samples": total,
        "components_percent": share(components),
        "self_percent": share(own),
        "inclusive_percent": share(inclusive),
        "bot_inclusive_percent": share(bot_frames),
    }


def _short(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/bot/" in path or path.startswith("bot/"):
        return "bot/" + path.split("bot/", 1)[1]
    return re.sub(r"^.*/python3\.\d+/", "", path)


def _find_py_spy() -> str | None:
    found = shutil.which("py-spy")
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when it is not on PATH
    return found or (str(beside) if beside.exists() else None)


def _read_optional(path: str) -> str | None:
    file = Path(path)
    return file.read_text() if file.exists() else None


async def profiled(
    rig: Rig, work: Callable[[], Awaitable[Any]], keep: Path | None
) -> dict[str, Any]:
    """Record the bot with py-spy (on-CPU samples only) while `work()` runs."""
    spy = _find_py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        out = os.path.join(tmp, "profile.txt")
        recorder = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(rig.bot_pid), "--rate", "200", "--format", "raw",
            "--output", out, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # py-spy attaches before the workload starts
        await work()
        recorder.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(recorder.communicate(), 30)
        raw = _read_optional(out)
        if raw is None:
            return {"skipped": f"py-spy wrote no profile: {err.decode().strip()[-300:]}"}
        if keep is not None:
            write_text(keep, raw)
        return summarize_profile(raw)


async def profile_phase(
    rig: Rig, paced: tuple[int, Workload], in_flight: int, seconds: float, keep: Path | None
) -> dict[str, Any]:
    """Two profiles: the delta-heavy workload, then about `in_flight` answers arriving steadily
    (the concurrency target), where per-answer costs weigh more."""
    answers, workload = paced

    async def delta_heavy() -> None:
        await rig.reset_counters()
        stats = await rig.run(workload, answers, workload.seconds + 120)
        _require_completed(stats, answers, "profile")

    async def concurrent() -> None:
        await concurrency_level(rig, in_flight, seconds)

    def kept(name: str) -> Path | None:
        return None if keep is None else keep / name

    return {
        "delta_heavy": {
            "title": f"{answers} answers of {workload.label()}",
            **await profiled(rig, delta_heavy, kept("delta-heavy.txt")),
        },
        "concurrency": {
            "title": f"about {in_flight} answers in flight ({seconds:g} s each at "
            f"{DELTA_RATE:g} deltas/s, {in_flight / seconds:g} new a second)",
            **await profiled(rig, concurrent, kept(f"in-flight-{in_flight}.txt")),
        },
    }
