"""Workloads: a question's text tells the simulated Claude how to answer it, so the driver, the
simulators' process and the bare loops agree on every stream without sharing any state."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bot.sim.claude import Script
from bot.sim.claude_scripts import Lookup, Say
from bot.sim.rig import BOT_USER

DELTA_CHARS = 4  # characters per delta: small, so that per-delta costs dominate


_BENCH_DIRECTIVE = re.compile(r"\[bench (\d+) ([\d.]+) (\d+) (\d+)(?: (\d+))?\]")
_PROSE = (
    "the answer streams into one message while new words arrive from the model and each "
    "edit carries the newest text so nobody waits for the end"
)


@dataclass(frozen=True)
class Workload:
    """`deltas` text deltas of `chars` characters at `rate` a second (0: as fast as possible);
    with `hold`, the stream goes silent after that many deltas (an answer held mid-stream)."""

    deltas: int
    rate: float
    chars: int = DELTA_CHARS
    hold: int = 0
    searches: int = 0  # web searches before the text, which then cites them (bench/tools.py)

    def question(self) -> str:
        tools = f" {self.searches}" if self.searches else ""
        return f"<@{BOT_USER}> [bench {self.deltas} {self.rate:g} {self.chars} {self.hold}{tools}]"

    @property
    def seconds(self) -> float:
        return self.deltas / self.rate if self.rate > 0 else 0.0

    def label(self) -> str:
        rate = f"{self.rate:g}/s" if self.rate > 0 else "flat out"
        tools = ""
        if self.searches:
            tools = f", {self.searches} searches, cited every {CITED_EVERY} deltas"
        return f"{self.deltas} deltas × {self.chars} chars, {rate}{tools}"


def _prose(chars: int) -> str:
    """Deterministic plain prose of exactly `chars` characters, in paragraphs."""
    words = _PROSE.split()
    out: list[str] = []
    size, i = 0, 0
    while size < chars:
        word = words[i % len(words)]
        sep = "\n\n" if i and i % 60 == 0 else " " if i else ""
        out.append(sep + word)
        size += len(sep) + len(word)
        i += 1
    return "".join(out)[:chars]


def bench_script(body: dict[str, Any]) -> Script:
    """The simulated Claude's answer to a benchmark question (the last directive in the turns)."""
    found = _BENCH_DIRECTIVE.findall(json.dumps(body.get("messages")))
    if not found:
        return Script()
    deltas, rate, chars, hold, searches = found[-1]
    n, c, r, h = int(deltas), int(chars), float(rate), int(hold)
    return Script(
        text=_prose(n * c),
        steps=_tool_steps(_prose(n * c), c, int(searches or 0)) if searches else None,
        chunk_chars=c,
        chunk_delay=1.0 / r if r > 0 else 0.0,
        silence_after=h or None,
        silence_seconds=3600.0,
    )


CITED_EVERY = 10  # deltas per cited passage of a tool-using answer
_RESULTS_PER_SEARCH = 3


def _tool_steps(text: str, chars: int, searches: int) -> list[Say | Lookup]:
    """`searches` web searches, then `text` in passages of CITED_EVERY deltas, each citing one
    result: a tool-using answer with as many citations as a real one has, or more."""
    steps: list[Say | Lookup] = [
        Lookup(
            "web_search",
            {"query": f"benchmark question {i}"},
            results=[
                (f"https://docs.example.org/{i}/{j}", f"Result {i}.{j}")
                for j in range(_RESULTS_PER_SEARCH)
            ],
        )
        for i in range(searches)
    ]
    size = CITED_EVERY * chars
    cited = searches * _RESULTS_PER_SEARCH
    for k, start in enumerate(range(0, len(text), size)):
        steps.append(Say(text[start : start + size], cites=[k % cited]))
    return steps
