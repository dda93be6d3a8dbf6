"""Pacing benchmark: N concurrent answers streamed through the real bot into a rate-limited Slack.

Everything runs in one asyncio process, over loopback HTTP like the integration tests: signed
events into the bot's `/slack/events`, the real slack-sdk client into `SlackSim` (chat.update
limited to 50 a minute with a burst of 10, 30 ms per call) and the real Anthropic SDK into
`ClaudeSim` (plain-word answers of 2,000-6,000 characters at about 240 characters a second, in
deltas of 3-6 characters, the same answers for every policy). What a reader saw is read back from
the simulators' own records: `ClaudeSim.timelines` (when each delta was streamed) against
`SlackSim`'s message history (when each version was shown), so the bot's own metrics are not
trusted to grade the bot.

    python -m bench.pacing                        # every N and policy (~10 min on 2 cores)
    python -m bench.pacing --n 20 --policy shared # one quick run

Results go to `bench/results/`: `pacing.json`, `pacing-table.md` and two PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): the backend must be chosen first
import redis.asyncio as aioredis

from bench import peers
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
from bot.app import SlackStream
from bot.config import Settings
from bot.pacing import PacingPolicy
from bot.sim.claude import ClaudeSim, Script
from bot.sim.redis import RedisServer, RedisUnavailable
from bot.sim.rig import CHANNEL, running_bot, simulators
from bot.sim.slack import JsonDict, SlackSim

# What Slack allows (emulated by SlackSim) and how Claude streams.
SLACK_UPDATES_PER_MINUTE = 50.0
SLACK_UPDATE_BURST = 10.0
SLACK_LATENCY = 0.03
CHARS_PER_SECOND = 240.0
ANSWER_CHARS = (2_000, 6_000)
DELTA_CHARS = (3, 6)

# Bounds that make every run stop by itself.
STREAMS_DEADLINE = 180.0  # from the mentions until every stream has ended
FINAL_DEADLINE = 120.0  # from a stream's end until its final edit counts as lost
SHUTDOWN_DEADLINE = 30.0
POLL = 0.05  # how often the runner looks at the simulators; measurements use their timestamps
# Runs of one N may share the event loop (each with its own simulators and bot) while no more
# than this many answers stream at once; the loop-lag column shows how much they disturbed it.
MAX_STREAMING = 20

ALL_N = (1, 5, 20, 50)
TAG = re.compile(r"bench question (\d+)")
DEFAULT_SEED = 20_261_125

log = logging.getLogger("bench.pacing")


# --------------------------------------------------------------------------------------------
# What is compared


# The workspace budget the bot ships with (WORKSPACE_EDITS_PER_MINUTE, WORKSPACE_EDIT_BURST).
DEFAULT_EDITS_PER_MINUTE = float(Settings.model_fields["workspace_edits_per_minute"].default)
DEFAULT_EDIT_BURST = float(Settings.model_fields["workspace_edit_burst"].default)


@dataclass(frozen=True)
class Variant:
    """A pacing policy and the workspace budget the bot is told to plan for."""

    key: str  # the --policy name
    policy: Callable[[], PacingPolicy]
    baseline: str = ""  # a peers' policy: what it is called; the shared one is named by budget
    edits_per_minute: float = DEFAULT_EDITS_PER_MINUTE
    edit_burst: float = DEFAULT_EDIT_BURST

    @property
    def shared(self) -> bool:
        return self.policy().shared_budget

    @property
    def label(self) -> str:
        if not self.shared:
            return self.baseline
        return f"shared budget, {self.edits_per_minute:g}/min burst {self.edit_burst:g}"


VARIANTS = {
    v.key: v
    for v in (
        Variant("shared", lambda: PacingPolicy.shared(1.0)),  # the bot as shipped
        Variant(  # the bot told Slack's emulated limits exactly, without a margin
            "shared-50x10",
            lambda: PacingPolicy.shared(1.0),
            edits_per_minute=SLACK_UPDATES_PER_MINUTE,
            edit_burst=SLACK_UPDATE_BURST,
        ),
        Variant("every-20", peers.every_20_deltas, baseline="every 20 chunks"),
        Variant("per-second", peers.one_per_second, baseline="1 per second"),
    )
}


@dataclass(frozen=True)
class Answer:
    """One deterministic answer: plain words only, so the characters shown are a prefix of it."""

    index: int
    text: str
    delta_chars: int

    def script(self) -> Script:
        return Script(
            text=self.text,
            chunk_chars=self.delta_chars,
            chunk_delay=self.delta_chars / CHARS_PER_SECOND,
            input_tokens=120,
        )


_WORDS = (
    "answer",
    "stream",
    "slack",
    "message",
    "edit",
    "budget",
    "minute",
    "reader",
    "token",
    "text",
    "update",
    "pace",
    "share",
    "workspace",
    "thread",
    "reply",
    "model",
    "shown",
    "waiting",
    "fresh",
    "stale",
    "round",
    "turn",
    "every",
    "simple",
    "steady",
    "progress",
    "words",
    "budgeted",
    "careful",
    "quick",
    "slow",
    "final",
    "first",
    "later",
    "while",
    "since",
    "because",
    "which",
    "small",
    "large",
    "clear",
    "plain",
    "often",
    "never",
    "always",
    "each",
    "other",
    "more",
    "less",
    "time",
    "second",
)


_LONGEST_SENTENCE = 16 * (max(map(len, _WORDS)) + 1) + 2  # words, spaces, "." and "\n\n"


def make_answer(seed: int, index: int) -> Answer:
    """Paragraphs of plain-word sentences, within ANSWER_CHARS, the same in every run."""
    rng = random.Random(f"{seed}:{index}")
    target = rng.randint(ANSWER_CHARS[0], ANSWER_CHARS[1] - _LONGEST_SENTENCE)
    text = ""
    in_paragraph, paragraph_size = 0, rng.randint(3, 6)
    while len(text) < target:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
        if in_paragraph == paragraph_size:
            text += "\n\n"
            in_paragraph, paragraph_size = 0, rng.randint(3, 6)
        elif text:
            text += " "
        text += " ".join(words).capitalize() + "."
        in_paragraph += 1
    return Answer(index, text, rng.randint(*DELTA_CHARS))


# --------------------------------------------------------------------------------------------
# One run: N answers, one policy, fresh simulators and bot


@dataclass
class Observed:
    """Raw records of one answer, as the simulators saw it (times on time.monotonic)."""

    answer: Answer
    message_ts: str | None = None
    streamed: list[tuple[float, int]] = field(default_factory=list)
    versions: list[tuple[float, int, bool]] = field(default_factory=list)  # (at, shown, final)
    false_interruption: bool = False  # "[interrupted" was shown, then the full final anyway
    finished: bool = False  # the message ended finished: no Stop button; footer or a note
    update_attempts: int = 0
    updates_rate_limited: int = 0


@dataclass
class Raw:
    """What one run left in the simulators, plus how the event loop kept up."""

    answers: list[Observed]
    update_calls: int
    rate_limited: int
    loop_lag: list[float]
    wall_seconds: float


def _version(entry: JsonDict, text: str) -> tuple[int, bool]:
    """(answer characters shown, is the final message) for one stored message version."""
    blocks = entry.get("blocks") or []
    bodies = [b.get("text", "") for b in blocks if b.get("type") == "markdown"]
    body = bodies[0] if bodies else str(entry.get("markdown_text") or entry.get("text") or "")
    context = " ".join(
        str(e.get("text", ""))
        for b in blocks
        if b.get("type") == "context"
        for e in b.get("elements") or []
    )
    shown = len(body) if body and text.startswith(body) else 0
    return shown, shown == len(text) and "Tokens:" in context


def _question_index(body: JsonDict) -> int | None:
    messages = body.get("messages") or []
    found = TAG.search(json.dumps(messages[-1])) if messages else None
    return int(found[1]) if found else None


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port (never 6379); None without the binary."""
    try:
        server = RedisServer.local()
    except RedisUnavailable:
        yield None
        return
    server.start()
    try:
        yield server.url
    finally:
        server.close()


def bot_settings(variant: Variant, redis_url: str | None = None) -> dict[str, Any]:
    """The bot's production pacing knobs; settings not named here keep their defaults (the
    report lists the ones that matter)."""
    return {
        "redis_url": redis_url,
        "edit_interval_seconds": 1.0,
        "workspace_edits_per_minute": variant.edits_per_minute,
        "workspace_edit_burst": variant.edit_burst,
        "shutdown_grace_seconds": 1.0,
        "replica_id": "bench",
    }


def settings_report(variants: Sequence[Variant]) -> dict[str, Any]:
    base = Settings(**bot_settings(variants[0]))
    return {
        "edit_interval_seconds": base.edit_interval_seconds,
        "stream_lease_seconds": base.stream_lease_seconds,
        "stream_idle_timeout_seconds": base.stream_idle_timeout_seconds,
        "max_answers_per_user": base.max_answers_per_user,
        "max_answers_per_workspace": base.max_answers_per_workspace,
        "workspace_budget": {
            v.key: [v.edits_per_minute, v.edit_burst] for v in variants if v.shared
        },
        "store": "MemoryStore, or RedisStore on a throwaway redis-server for [Redis] runs",
    }


async def _watch_loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late the event loop wakes a 50 ms timer: a saturated CPU distorts every timing."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)
        samples.append(max(0.0, loop.time() - before - POLL))


class Streams:
    """Which `ClaudeSim.timelines` entry belongs to which answer; each request is read once."""

    def __init__(self, claude: ClaudeSim) -> None:
        self._claude = claude
        self._seen = 0
        self._by_answer: dict[int, list[tuple[float, int]]] = {}

    def of(self, answer: Answer) -> list[tuple[float, int]]:
        requests, timelines = self._claude.requests, self._claude.timelines
        for j in range(self._seen, len(requests)):
            index = _question_index(requests[j])
            if index is not None:
                self._by_answer[index] = timelines[j]  # an SDK retry replaces a failed attempt
        self._seen = len(requests)
        return self._by_answer.get(answer.index, [])

    def end(self, answer: Answer) -> float | None:
        """When the answer's last delta was streamed; None while it is still streaming."""
        timeline = self.of(answer)
        if timeline and timeline[-1][1] == len(answer.text):
            return timeline[-1][0]
        return None


async def run_once(variant: Variant, n: int, seed: int, redis_url: str | None) -> Raw:
    """N mentions at once into fresh simulators and a fresh bot; the simulators' records back."""
    answers = [make_answer(seed, i) for i in range(n)]

    def script_for(body: JsonDict) -> Script:
        index = _question_index(body)
        return answers[index].script() if index is not None and index < n else Script()

    if redis_url is not None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.flushdb()  # our own throwaway server: a fresh workspace every run
        finally:
            await client.aclose()

    limits = {"chat.update": (SLACK_UPDATES_PER_MINUTE, SLACK_UPDATE_BURST)}
    lag: list[float] = []
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(_watch_loop_lag(lag, stop_watch))
    started = time.monotonic()
    try:
        async with (
            simulators(claude_default=script_for, rate_limits=limits, latency=SLACK_LATENCY) as (
                slack,
                claude,
            ),
            running_bot(
                slack,
                claude,
                policy=variant.policy(),
                fast=False,
                shutdown_timeout=SHUTDOWN_DEADLINE,
                **bot_settings(variant, redis_url),
            ) as harness,
        ):
            users = [f"U0B{i:03d}" for i in range(n)]  # one asker each: no per-user cap applies
            for i, user in enumerate(users):
                slack.add_user(user, f"asker{i}")
            questions = await asyncio.gather(
                *(harness.mention(f"bench question {i}", user=u) for i, u in enumerate(users))
            )
            streams = Streams(claude)
            await _wait_until_settled(harness.bot, streams, answers, started)
            observed = [
                _observe(slack, streams, a, q.ts) for a, q in zip(answers, questions, strict=True)
            ]
            return Raw(
                answers=observed,
                update_calls=len(slack.calls_to("chat.update")),
                rate_limited=sum(1 for c in slack.calls if c.status == 429),
                loop_lag=lag,
                wall_seconds=time.monotonic() - started,
            )
    finally:
        stop_watch.set()
        await watcher


async def _wait_until_settled(
    bot: SlackStream, streams: Streams, answers: Sequence[Answer], started: float
) -> None:
    """Until every stream has ended and the bot has no answer left in flight (every final sent
    or given up), or a deadline passes: each run stops by itself."""
    while True:
        ends = [streams.end(a) for a in answers]
        now = time.monotonic()
        if all(end is not None for end in ends):
            last_end = max(end for end in ends if end is not None)
            if not bot.replier.running or now > last_end + FINAL_DEADLINE:
                return
        elif now > started + STREAMS_DEADLINE:
            log.error("not every stream ended within %.0f s", STREAMS_DEADLINE)
            return
        await asyncio.sleep(POLL)


def _observe(slack: SlackSim, streams: Streams, answer: Answer, thread_ts: str) -> Observed:
    o = Observed(answer, streamed=list(streams.of(answer)))
    replies = slack.bot_replies(CHANNEL, thread_ts)
    if not replies:
        return o
    message = replies[0]  # every answer fits one message (under render.BODY_LIMIT)
    o.message_ts = message.ts
    o.versions = [(float(entry["at"]), *_version(entry, answer.text)) for entry in message.history]
    interrupted = [i for i, entry in enumerate(message.history) if "[interrupted" in str(entry)]
    finals = [i for i, (_, _, is_final) in enumerate(o.versions) if is_final]
    o.false_interruption = bool(interrupted and finals and interrupted[0] < finals[0])
    last = message.history[-1]
    blocks = last.get("blocks") or []
    o.finished = not any(b.get("type") == "actions" for b in blocks) and any(
        mark in str(last) for mark in ("Tokens:", "[interrupted", ":warning:")
    )
    calls = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == message.ts]
    o.update_attempts = len(calls)
    o.updates_rate_limited = sum(1 for c in calls if c.status == 429)
    return o


# --------------------------------------------------------------------------------------------
# Measures


NEVER = math.inf


@dataclass
class Measured:
    """One answer's measures in seconds; NEVER when the text or the final was never shown."""

    index: int
    chars: int
    deltas: int
    stream_seconds: float
    first_text: float
    final: float
    edits: int
    edit_attempts: int
    rate_limited: int
    never_shown_chars: int
    finished: bool
    false_interruption: bool
    staleness: list[float] = field(repr=False)


def measure(o: Observed) -> Measured:
    """Compare what was streamed with what Slack showed, delta by delta."""
    streamed, versions = o.streamed, o.versions
    t0 = streamed[0][0] if streamed else NEVER
    complete = bool(streamed) and streamed[-1][1] == len(o.answer.text)
    end = streamed[-1][0] if complete else NEVER
    first = next((at for at, shown, _ in versions[1:] if shown > 0), NEVER)
    final = next((at for at, _, is_final in versions if is_final), NEVER)
    staleness: list[float] = []
    v = 0
    for at, chars in streamed:
        # The first version at or after the delta that shows it. Both sequences only grow, so
        # a version that fails one delta fails every later one: one pass over each.
        while v < len(versions) and (versions[v][0] < at or versions[v][1] < chars):
            v += 1
        staleness.append(versions[v][0] - at if v < len(versions) else NEVER)
    shown = max((s for _, s, _ in versions), default=0)
    final_latency = final - end if final - end <= FINAL_DEADLINE else NEVER
    return Measured(
        index=o.answer.index,
        chars=len(o.answer.text),
        deltas=len(streamed),
        stream_seconds=end - t0 if complete else NEVER,
        first_text=first - t0,
        final=final_latency,
        edits=max(0, len(versions) - 1),
        edit_attempts=o.update_attempts,
        rate_limited=o.updates_rate_limited,
        never_shown_chars=len(o.answer.text) - shown,
        finished=o.finished,
        false_interruption=o.false_interruption,
        staleness=staleness,
    )


@dataclass
class Summary:
    variant: str
    label: str
    store: str
    n: int
    bot_edits_per_minute: float
    bot_edit_burst: float
    finished: int
    finals_lost: int
    false_interruptions: int
    first_text_p50: float
    first_text_p99: float
    final_p50: float
    final_p99: float
    staleness_p50: float
    staleness_p99: float
    staleness_max: float
    never_shown_pct: float
    edits_per_answer: float
    edit_attempts_per_answer: float
    rate_limited: int
    update_calls: int
    rate_limited_pct: float
    stream_chars_per_second: float
    loop_lag_p99: float
    loop_lag_max: float
    wall_seconds: float
    side_by_side: int = 1  # runs sharing the event loop with this one, itself included

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.store}"

    @property
    def name(self) -> str:
        return self.label + (" [Redis]" if self.store == "redis" else "")


def summarise(variant: Variant, store: str, n: int, raw: Raw) -> tuple[Summary, list[Measured]]:
    ms = [measure(o) for o in raw.answers]
    staleness = [s for m in ms for s in m.staleness]
    lost = sum(1 for m in ms if m.final == NEVER)
    rates = [m.chars / m.stream_seconds for m in ms if 0 < m.stream_seconds < NEVER]
    total_chars = sum(m.chars for m in ms)
    summary = Summary(
        variant=variant.key,
        label=variant.label,
        store=store,
        n=n,
        bot_edits_per_minute=variant.edits_per_minute,
        bot_edit_burst=variant.edit_burst,
        finished=sum(1 for m in ms if m.finished),
        finals_lost=lost,
        false_interruptions=sum(1 for m in ms if m.false_interruption),
        first_text_p50=percentile([m.first_text for m in ms], 50),
        first_text_p99=percentile([m.first_text for m in ms], 99),
        final_p50=percentile([m.final for m in ms], 50),
        final_p99=percentile([m.final for m in ms], 99),
        staleness_p50=percentile(staleness, 50),
        staleness_p99=percentile(staleness, 99),
        staleness_max=max(staleness, default=math.nan),
        never_shown_pct=100 * sum(m.never_shown_chars for m in ms) / max(1, total_chars),
        edits_per_answer=sum(m.edits for m in ms) / n,
        edit_attempts_per_answer=sum(m.edit_attempts for m in ms) / n,
        rate_limited=raw.rate_limited,
        update_calls=raw.update_calls,
        rate_limited_pct=100 * raw.rate_limited / max(1, raw.update_calls),
        stream_chars_per_second=percentile(rates, 50),
        loop_lag_p99=percentile(raw.loop_lag, 99),
        loop_lag_max=max(raw.loop_lag, default=math.nan),
        wall_seconds=raw.wall_seconds,
    )
    return summary, ms


@dataclass(frozen=True)
class Check:
    n: int
    run: str
    target: str
    measured: float
    limit: float
    unit: str = "s"

    @property
    def ok(self) -> bool:
        return self.measured <= self.limit


def checks(s: Summary) -> list[Check]:
    """The issue's targets: at N = 20 and at N = 1 (the baselines are graded the same way)."""
    out: list[Check] = []
    if s.n == 20:
        fair = 60 * s.n / SLACK_UPDATES_PER_MINUTE
        out += [
            Check(s.n, s.name, "answers not finished", s.n - s.finished, 0, ""),
            Check(s.n, s.name, "final edits lost", s.finals_lost, 0, ""),
            Check(s.n, s.name, "429s, % of chat.update calls", s.rate_limited_pct, 1.0, "%"),
            Check(s.n, s.name, "first text p50", s.first_text_p50, 1.0),
            Check(s.n, s.name, "staleness p99 (1.2 x 60*N/B, B = 50)", s.staleness_p99, 1.2 * fair),
        ]
    if s.n == 1:
        limit = SLACK_LATENCY + 0.05
        out += [
            Check(s.n, s.name, "first text (round trip + 50 ms)", s.first_text_p50, limit),
            Check(s.n, s.name, "final (round trip + 50 ms)", s.final_p50, limit),
        ]
    return out


# --------------------------------------------------------------------------------------------
# Reporting


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "–"
    if value == NEVER:
        return "never"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(summaries: Sequence[Summary]) -> str:
    header = [
        "N",
        "policy",
        "finished",
        "first text p50 / p99 (s)",
        "final p50 / p99 (s)",
        "staleness p50 / p99 / max (s)",
        "edits per answer (tried)",
        "429s (% of updates)",
        "finals lost",
        "false [interrupted]",
    ]
    rows = [
        [
            s.n,
            s.name,
            f"{s.finished}/{s.n}",
            f"{_seconds(s.first_text_p50)} / {_seconds(s.first_text_p99)}",
            f"{_seconds(s.final_p50)} / {_seconds(s.final_p99)}",
            " / ".join(map(_seconds, (s.staleness_p50, s.staleness_p99, s.staleness_max))),
            f"{s.edits_per_answer:.1f} ({s.edit_attempts_per_answer:.1f})",
            f"{s.rate_limited} ({s.rate_limited_pct:.1f} %)",
            s.finals_lost,
            s.false_interruptions,
        ]
        for s in summaries
    ]
    return markdown_table(header, rows, "rlrrrrrrrr")


def conditions_table(summaries: Sequence[Summary]) -> str:
    """How the run itself went: a saturated event loop or a slow stream would skew the rest."""
    header = [
        "N",
        "policy",
        "bot budget (/min, burst)",
        "stream chars/s (p50)",
        "text never shown",
        "loop lag p99 / max (ms)",
        "runs at once",
        "run (s)",
    ]
    rows = [
        [
            s.n,
            s.name,
            (
                f"{s.bot_edits_per_minute:g}, {s.bot_edit_burst:g}"
                if VARIANTS[s.variant].shared
                else "none"
            ),
            f"{s.stream_chars_per_second:.0f}",
            f"{s.never_shown_pct:.1f} %",
            f"{1000 * s.loop_lag_p99:.0f} / {1000 * s.loop_lag_max:.0f}",
            s.side_by_side,
            f"{s.wall_seconds:.0f}",
        ]
        for s in summaries
    ]
    return markdown_table(header, rows, "rlrrrrrr")


def checks_table(all_checks: Sequence[Check]) -> str:
    rows = []
    for c in all_checks:
        shown, limit = (
            (_seconds(c.measured), _seconds(c.limit))
            if c.unit == "s"
            else (f"{c.measured:.1f} %", f"{c.limit:g} %")
            if c.unit == "%"
            else (f"{c.measured:g}", f"{c.limit:g}")
        )
        rows.append([c.n, c.run, c.target, shown, limit, "yes" if c.ok else "**no**"])
    return markdown_table(["N", "policy", "target", "measured", "limit", "met"], rows, "rllrrl")


def _relative(points: Sequence[tuple[float, int]], t0: float) -> list[list[float]]:
    return [[round(t - t0, 4), c] for t, c in points]


def sample_series(o: Observed) -> dict[str, list[list[float]]]:
    """One answer's streamed and shown characters over time, from its first delta."""
    if not o.streamed:
        return {"streamed": [], "shown": []}
    t0 = o.streamed[0][0]
    step = max(1, len(o.streamed) // 200)
    streamed = o.streamed[::step] + o.streamed[-1:]
    shown = [(at, chars) for at, chars, _ in o.versions]
    return {"streamed": _relative(streamed, t0), "shown": _relative(shown, t0)}


def _grid(count: int) -> tuple[Any, list[Any]]:
    cols = min(2, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 5.0 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _colours(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """One colour per policy and store, the same in every panel."""
    names = list(dict.fromkeys(r.summary.name for r in runs))
    cycle = plt.get_cmap("tab10")
    return {name: cycle(i % 10) for i, name in enumerate(names)}


def plot_timelines(runs: Sequence[RunRecord], path: Path) -> None:
    ns = sorted({r.summary.n for r in runs})
    colour = _colours(runs)
    fig, axes = _grid(len(ns))
    for ax, n in zip(axes, ns, strict=True):
        group = [r for r in runs if r.summary.n == n]
        streamed = group[0].sample["streamed"]
        end = max(
            max((p[0] for p in r.sample["streamed"] + r.sample["shown"]), default=0.0)
            for r in group
        )
        ax.plot(
            [p[0] for p in streamed],
            [p[1] for p in streamed],
            color="black",
            linestyle="--",
            linewidth=1.2,
            label="streamed by Claude",
        )
        for r in group:
            shown = r.sample["shown"]
            if not shown:
                continue
            xs = [p[0] for p in shown] + [end]
            ys = [p[1] for p in shown] + [shown[-1][1]]
            ax.step(
                xs, ys, where="post", color=colour[r.summary.name], label=f"shown: {r.summary.name}"
            )
        chars = int(streamed[-1][1]) if streamed else 0
        ax.set_title(f"N = {n}: answer 0 ({chars:,} chars), streamed vs shown in Slack")
        ax.set_xlabel("seconds since the answer's first streamed text")
        ax.set_ylabel("characters")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_staleness(runs: Sequence[RunRecord], path: Path) -> None:
    ns = sorted({r.summary.n for r in runs})
    colour = _colours(runs)
    fig, axes = _grid(len(ns))
    for ax, n in zip(axes, ns, strict=True):
        for r in (r for r in runs if r.summary.n == n):
            samples = sorted(s for m in r.measured for s in m.staleness)
            if not samples:
                continue
            finite = [max(s, 1e-3) for s in samples if s < NEVER]
            ys = [(i + 1) / len(samples) for i in range(len(finite))]
            never = 100 * (len(samples) - len(finite)) / len(samples)
            label = r.summary.name + (f" ({never:.0f} % never shown)" if never >= 0.5 else "")
            ax.step(finite, ys, where="post", color=colour[r.summary.name], label=label)
        if n > 1:
            ax.axvline(
                1.2 * 60 * n / SLACK_UPDATES_PER_MINUTE,
                color="grey",
                linestyle=":",
                label="1.2 x 60*N/50 s (the target's formula at this N)",
            )
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"N = {n}: staleness of streamed text (CDF over deltas)")
        ax.set_xlabel("seconds from streamed by Claude to shown in Slack")
        ax.set_ylabel("fraction of deltas")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class RunRecord:
    summary: Summary
    measured: list[Measured]
    sample: dict[str, list[list[float]]]


def _json_number(value: Any) -> Any:
    """JSON has no infinity: NEVER (not shown within the deadline) is written as null."""
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else round(value, 4)
    return value


def write_results_json(
    runs: Sequence[RunRecord], all_checks: Sequence[Check], meta: dict[str, Any], path: Path
) -> None:
    def clean(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in obj.items()}

    document = {
        **meta,
        "null_means": "never shown (or the final not shown within final_deadline_seconds)",
        "runs": [
            {
                **clean(asdict(r.summary)),
                "answers": [
                    clean({k: v for k, v in asdict(m).items() if k != "staleness"})
                    for m in r.measured
                ],
                "sample_answer_0": r.sample,
            }
            for r in runs
        ],
        "targets": [{**clean(asdict(c)), "met": c.ok} for c in all_checks],
    }
    write_json(path, document)


def report(summaries: Sequence[Summary], all_checks: Sequence[Check], meta: dict[str, Any]) -> str:
    m = {**meta["machine"], "redis": meta.get("redis_server")}
    return "\n".join(
        [
            "# Pacing benchmark: results",
            "",
            f"Command: `{meta['command']}` (seed {meta['seed']}). "
            f"Machine: {machine_text(m)}. Bot: commit {code_text(meta['bot_code'])}.",
            f"Slack emulated: chat.update {SLACK_UPDATES_PER_MINUTE:g}/min, burst "
            f"{SLACK_UPDATE_BURST:g}, {1000 * SLACK_LATENCY:g} ms per call. Claude: "
            f"{CHARS_PER_SECOND:g} chars/s in {DELTA_CHARS[0]}-{DELTA_CHARS[1]}-char deltas, "
            f"{ANSWER_CHARS[0]:,}-{ANSWER_CHARS[1]:,} chars per answer. Times in seconds; "
            '"never" = not shown within the deadline.',
            "",
            table(summaries),
            "",
            "## Targets",
            "",
            checks_table(all_checks),
            "",
            "## Run conditions",
            "",
            conditions_table(summaries),
            "",
        ]
    )


# --------------------------------------------------------------------------------------------
# Command line


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pacing", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=list(ALL_N),
        help="concurrent answers per run (default: 1 5 20 50)",
    )
    parser.add_argument(
        "--policy",
        nargs="+",
        choices=sorted(VARIANTS),
        default=list(VARIANTS),
        help="pacing policies to run (default: all)",
    )
    parser.add_argument(
        "--redis",
        choices=("auto", "off", "only"),
        default="auto",
        help="shared-budget policies on a throwaway redis-server too (auto: if "
        "the binary exists), not at all, or only there",
    )
    parser.add_argument(
        "--redis-n",
        type=int,
        nargs="*",
        default=[20],
        help="the N at which the Redis runs are made (default: 20)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace, redis_url: str | None) -> list[tuple[int, Variant, str]]:
    plan: list[tuple[int, Variant, str]] = []
    for n in args.n:
        for key in args.policy:
            variant = VARIANTS[key]
            if args.redis != "only":
                plan.append((n, variant, "memory"))
            redis_wanted = args.redis == "only" or (args.redis == "auto" and n in args.redis_n)
            if redis_url is not None and variant.shared and redis_wanted:
                plan.append((n, variant, "redis"))
    return plan


def _batches(plan: Sequence[tuple[int, Variant, str]]) -> list[list[tuple[int, Variant, str]]]:
    """Runs of the same N side by side up to MAX_STREAMING answers; Redis runs alone (each
    starts by emptying the one Redis)."""
    batches: list[list[tuple[int, Variant, str]]] = []
    for item in plan:
        n, _, store = item
        last = batches[-1] if batches else None
        fits = (
            last is not None
            and store == "memory"
            and all(other[0] == n and other[2] == "memory" for other in last)
            and n * (len(last) + 1) <= MAX_STREAMING
        )
        if last is not None and fits:
            last.append(item)
        else:
            batches.append([item])
    return batches


async def _run_all(args: argparse.Namespace, redis_url: str | None) -> list[RunRecord]:
    runs: list[RunRecord] = []
    for batch in _batches(_plan(args, redis_url)):
        raws = await asyncio.gather(
            *(
                run_once(variant, n, args.seed, redis_url if store == "redis" else None)
                for n, variant, store in batch
            )
        )
        for (n, variant, store), raw in zip(batch, raws, strict=True):
            summary, measured = summarise(variant, store, n, raw)
            summary.side_by_side = len(batch)
            runs.append(RunRecord(summary, measured, sample_series(raw.answers[0])))
            print(
                f"N={n:<3} {summary.name:<45} finished {summary.finished}/{n}, "
                f"{summary.rate_limited} 429s, {summary.wall_seconds:.0f} s"
                + (f" (side by side with {len(batch) - 1} other runs)" if len(batch) > 1 else ""),
                file=sys.stderr,
            )
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=args.out / "pacing.log",
        filemode="w",
        level=logging.ERROR,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    command = " ".join(["python -m bench.pacing", *map(shlex.quote, sys.argv[1:])])
    code = bot_code()  # bot/ was imported with this module: this is the code that runs
    started = time.monotonic()
    want_redis = args.redis != "off" and any(VARIANTS[k].shared for k in args.policy)
    with redis_server() if want_redis else contextlib.nullcontext() as redis_url:
        if args.redis == "only" and redis_url is None:
            print("--redis only: no redis-server binary on PATH", file=sys.stderr)
            return 2
        runs = asyncio.run(_run_all(args, redis_url))
        redis_version = _redis_version() if redis_url else None
    summaries = [r.summary for r in runs]
    all_checks = [c for s in summaries for c in checks(s)]
    meta = {
        "command": command,
        "seed": args.seed,
        "machine": machine(),
        "bot_code": code,
        "redis_server": redis_version,
        "total_seconds": round(time.monotonic() - started, 1),
        "slack": {
            "chat_update_per_minute": SLACK_UPDATES_PER_MINUTE,
            "chat_update_burst": SLACK_UPDATE_BURST,
            "latency_seconds": SLACK_LATENCY,
        },
        "claude": {
            "chars_per_second": CHARS_PER_SECOND,
            "delta_chars": DELTA_CHARS,
            "answer_chars": ANSWER_CHARS,
        },
        "bot": settings_report([VARIANTS[k] for k in args.policy]),
        "final_deadline_seconds": FINAL_DEADLINE,
    }
    text = report(summaries, all_checks, meta)
    write_text(args.out / "pacing-table.md", text)
    write_results_json(runs, all_checks, meta, args.out / "pacing.json")
    plot_timelines(runs, args.out / "pacing-timeline.png")
    plot_staleness(runs, args.out / "pacing-staleness.png")
    print(text)
    print(f"results in {args.out} ({meta['total_seconds']:.0f} s)", file=sys.stderr)
    return 0


def _redis_version() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"v=(\S+)", out.stdout)
    return found[1] if found else None


if __name__ == "__main__":
    sys.exit(main())
