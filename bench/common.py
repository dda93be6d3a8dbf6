"""What every benchmark needs: where results go, percentiles, the machine and the bot code they
ran on (and one way to name each in a report), Markdown tables, and writing the results."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PACKAGES = ("anthropic", "slack-sdk", "slack-bolt", "aiohttp", "redis")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values. An infinite value sorts last,
    so it shows when more than 100 - p % of the values are infinite."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def machine(**extra: Any) -> dict[str, Any]:
    """The machine a benchmark ran on (CPUs this process may use, their model, the kernel,
    Python and the packages that matter), plus `extra`."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: version(p) for p in PACKAGES},
        **extra,
    }


def machine_text(m: Mapping[str, Any]) -> str:
    """A `machine()` in one line: "2 × AMD EPYC, Linux …, Python 3.11.7, redis-server 7.0.15;
    anthropic 2.17.0, …" (redis-server and Pillow when the benchmark recorded them)."""
    parts = [f"{m['nproc']} × {m['cpu_model']}", f"Linux {m['kernel']}", f"Python {m['python']}"]
    parts += [f"{name} {m[key]}" for key, name in _EXTRAS if m.get(key)]
    packages = ", ".join(f"{name} {v}" for name, v in m.get("packages", {}).items())
    return ", ".join(parts) + (f"; {packages}" if packages else "")


_EXTRAS = (("redis", "redis-server"), ("pillow", "Pillow"))


def code_text(code: Mapping[str, Any]) -> str:
    """A `bot_code()` in a few words: the commit, and whether bot/ differed from it."""
    return str(code["commit"]) + (
        " with uncommitted changes under bot/" if code["bot_modified"] else ""
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; `align` has a letter a column, "r" to right-align it (numbers), any
    other letter or none to leave it as it is."""
    ruler = "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header)))
    lines = ["| " + " | ".join(header) + " |", "|" + ruler]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path: Path, text: str) -> Path:
    """Write a results file, making its directory if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, document: Any, *, indent: int = 1) -> Path:
    return write_text(path, json.dumps(document, indent=indent) + "\n")


def bot_code() -> dict[str, Any]:
    """Which bot was measured: the commit, and whether `bot/` differed from it."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "bot_modified": bool(git("status", "--porcelain", "--", "bot")),
    }
