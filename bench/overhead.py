"""What running the bot costs: CPU per streamed delta, Redis commands, memory, concurrency.

Every figure is taken from a real `python -m bot serve` process (started as the fault tests start
theirs), talking over loopback to the simulated Slack and Claude and to a throwaway redis-server:

- CPU per delta: the bot's CPU time (utime + stime from /proc) for M answers of D small deltas,
  against *bare loop* processes that stream the same scripts through the SDK and do nothing
  else. The ratio that counts (target at most 1.3) is against the bare loop making the bot's
  own request: raw events from `messages.create(stream=True)` over the SDK's aiohttp transport,
  the client `bot.app.build_claude` makes. A second bare loop, the SDK's `messages.stream()`
  helper over its default httpx2 transport, is kept as a reference column.
- Redis commands per answer, from INFO commandstats, for answers of different lengths and rates:
  they should follow an answer's duration (heartbeats, paced edits), not its length.
- Memory per in-flight answer: the bot's RSS with K answers held open mid-stream, over its RSS
  before them, divided by K.
- Concurrency: answers streaming at 30 deltas a second arrive at a steady rate so that about N are
  in flight; the acknowledgement time of each event POST is measured while they stream. The
  largest N with p99 under 250 ms is reported (target at least 300).
- py-spy profiles of the bot under the delta-heavy workload and at the concurrency target,
  reduced to their top frames.

The simulators run in a helper process of their own (`--sims`) so that their CPU is not counted
as the bot's, and the bare loop in another (`--bare`). Both are this module, re-invoked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio
from aiohttp import web

from bench.common import (
    RESULTS,
    ROOT,
    machine,
    machine_text,
    markdown_table,
    percentile,
    write_json,
    write_text,
)
from bot.config import DEFAULT_SYSTEM_PROMPT, Settings
from bot.render import STOP_ACTION_ID
from bot.sim.claude import ClaudeSim, Script
from bot.sim.claude_scripts import Lookup, Say
from bot.sim.events import EventPoster, mention_envelope
from bot.sim.redis import RedisServer, RedisUnavailable
from bot.sim.replica import Replica
from bot.sim.rig import BOT_USER, CHANNEL, event_poster, simulators
from bot.sim.slack import SimMessage, SlackSim

TEAM_SIZE = 50  # answers per simulated workspace: the bot's default cap per workspace
ACK_TARGET = 0.25  # seconds, event acknowledgement p99
RATIO_TARGET = 1.3
CONCURRENCY_TARGET = 300
DELTA_RATE = 30.0  # deltas per second of each answer in the concurrency ramp
DELTA_CHARS = 4  # characters per delta: small, so that per-delta costs dominate
HOLD_ARRIVALS = 25.0  # questions a second while answers are being held open (memory phase)
IDLE_WINDOW = 8.0  # seconds of an idle bot whose Redis traffic is counted
BENCH_COMMANDS = frozenset({"info", "config|resetstat", "config", "flushall"})
# The bot's settings for every run: production defaults, except a workspace edit budget large
# enough that every answer is edited at the full per-message pace (1 edit/s), the bot's worst case.
BOT_ENV = {
    "EDIT_INTERVAL_SECONDS": "1.0",
    "STREAM_LEASE_SECONDS": "15",
    "STREAM_IDLE_TIMEOUT_SECONDS": "60",
    "SHUTDOWN_GRACE_SECONDS": "20",
    "WORKSPACE_EDITS_PER_MINUTE": "6000",
    "WORKSPACE_EDIT_BURST": "100",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",
}


# The bot's shipped workspace budget, for the CPU case that runs with it.
_DEFAULTS = Settings.model_fields
DEFAULT_BUDGET_ENV = {
    "WORKSPACE_EDITS_PER_MINUTE": f"{_DEFAULTS['workspace_edits_per_minute'].default:g}",
    "WORKSPACE_EDIT_BURST": f"{_DEFAULTS['workspace_edit_burst'].default:g}",
}
DEFAULT_BUDGET_LABEL = (
    f"default budget ({DEFAULT_BUDGET_ENV['WORKSPACE_EDITS_PER_MINUTE']}/min per workspace "
    f"of {TEAM_SIZE} answers)"
)


# --------------------------------------------------------------------------------------------
# Workloads: a question's text tells the simulated Claude how to answer it
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# The simulators' process (`--sims`)
# --------------------------------------------------------------------------------------------


def _outcome(kind: str, text: str) -> str:
    """How an answer ended, from the bot's last message without a Stop button."""
    if kind == "posted":
        return "refused"  # a refusal is posted, never edited into a placeholder
    if "[interrupted" in text:
        return "interrupted"
    return "failed" if text.startswith(":warning:") else "completed"


class SimsServer:
    """SlackSim and ClaudeSim plus a small control API for the benchmark driver."""

    def __init__(self, slack: SlackSim, claude: ClaudeSim) -> None:
        self.slack = slack
        self.claude = claude
        self.outcomes: dict[str, str] = {}  # question ts -> how its answer ended
        self.finals_at: dict[str, float] = {}  # question ts -> when its answer first ended
        self.serial = 0
        self.slack.on_change.append(self._changed)

    def _changed(self, kind: str, message: SimMessage) -> None:
        message.history.clear()  # the benchmark never reads old versions; keep memory flat
        if message.user != self.slack.bot_user_id or message.has_button(STOP_ACTION_ID):
            return
        question = message.thread_ts or ""
        self.outcomes[question] = _outcome(kind, message.visible_text())
        self.finals_at.setdefault(question, time.monotonic())

    async def questions(self, request: web.Request) -> web.Response:
        """Create `count` top-level questions, each from a new user: [[ts, user], ...]."""
        body = await request.json()
        made: list[list[str]] = []
        for _ in range(int(body["count"])):
            self.serial += 1
            user = f"U{self.serial:07d}"
            self.slack.add_user(user, f"user{self.serial}")
            asked = self.slack.post_user_message(CHANNEL, str(body["text"]), user=user)
            made.append([asked.ts, user])
        return web.json_response(made)

    async def stats(self, request: web.Request) -> web.Response:
        calls = Counter(c.method for c in self.slack.calls)
        return web.json_response(
            {
                "open_streams": self.claude.open_streams,
                "outcomes": dict(Counter(self.outcomes.values())),
                "finals_at": self.finals_at,
                "calls": dict(calls),
                "claude_requests": len(self.claude.requests),
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.slack.calls.clear()
        self.claude.requests.clear()
        self.outcomes.clear()
        self.finals_at.clear()
        return web.json_response({})

    @classmethod
    async def run(cls, slack_latency: float) -> None:
        """Serve the simulators and the control API until SIGTERM or SIGINT."""
        async with simulators(claude_default=bench_script, latency=slack_latency) as sims:
            await cls(*sims).serve()

    async def serve(self) -> None:
        app = web.Application()
        app.router.add_post("/questions", self.questions)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/reset", self.reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        control = f"http://127.0.0.1:{runner.addresses[0][1]}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        urls = {"slack": self.slack.api_url, "claude": self.claude.base_url, "control": control}
        print(json.dumps(urls), flush=True)
        await stop.wait()
        await runner.cleanup()


class Sims:
    """The driver's handle on the simulators' process."""

    def __init__(self, slack_latency: float) -> None:
        self.slack_latency = slack_latency
        self.process: asyncio.subprocess.Process | None = None
        self.slack_url = self.claude_url = self.control = ""
        self._session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.overhead",
            "--sims",
            "--slack-latency",
            str(self.slack_latency),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the simulators' process exited before it was ready")
        urls = json.loads(line)
        self.slack_url, self.claude_url, self.control = (
            urls["slack"],
            urls["claude"],
            urls["control"],
        )
        self._session = aiohttp.ClientSession()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None
        async with self._session.request(method, self.control + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def questions(self, count: int, text: str) -> list[tuple[str, str]]:
        made = await self._call("POST", "/questions", {"count": count, "text": text})
        return [(ts, user) for ts, user in made]

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# --------------------------------------------------------------------------------------------
# The bare loop's process (`--bare`): the same streams through the SDK, nothing else
# --------------------------------------------------------------------------------------------


BARE_LOOPS = {
    # The bot's own request (bot.reply.stream_answer): raw events over the SDK's aiohttp
    # transport, with the client bot.app.build_claude makes. The ratio against it is the target.
    "raw": "messages.create(stream=True), aiohttp",
    # Reference: the SDK's streaming helper over its default httpx2 transport (the bot's request
    # before it moved to raw events; it rebuilds the message on every delta).
    "stream": "messages.stream(), httpx2",
}
BOT_LOOP = "raw"  # the bare loop whose request is the bot's: its ratio is the one that counts


async def bare_loop(claude_url: str, question: str, answers: int, kind: str) -> dict[str, float]:
    """Stream `answers` copies of `question` concurrently, iterating every event and nothing
    else, and count only the CPU of the streaming (after a warm-up, like the bot's)."""
    import anthropic
    import httpx2

    from bot.app import build_claude
    from bot.config import Settings

    if kind == "raw":  # exactly the bot's client
        settings = Settings(anthropic_api_key="sk-sim", anthropic_base_url=claude_url)
        client = build_claude(settings)
    else:
        client = anthropic.AsyncAnthropic(api_key="sk-sim", base_url=claude_url, max_retries=2)
    request: dict[str, Any] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": DEFAULT_SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
        ],
        "timeout": httpx2.Timeout(60.0, connect=10.0),
    }

    async def one(text: str) -> int:
        events = 0
        messages: Any = [{"role": "user", "content": text}]
        if kind == "raw":
            raw = await client.messages.create(messages=messages, stream=True, **request)
            async for _ in raw:
                events += 1
            return events
        async with client.messages.stream(messages=messages, **request) as stream:
            async for _ in stream:
                events += 1
        return events

    warm = Workload(deltas=20, rate=0).question()
    await asyncio.gather(*(one(warm) for _ in range(5)))
    cpu0, wall0 = time.process_time(), time.monotonic()
    events = await asyncio.gather(*(one(question) for _ in range(answers)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await client.close()
    return {"cpu_seconds": cpu, "wall_seconds": wall, "sdk_events": float(sum(events))}


async def run_bare(
    claude_url: str, workload: Workload, answers: int, kind: str
) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.overhead",
        "--bare",
        kind,
        "--claude-url",
        claude_url,
        "--question",
        workload.question(),
        "--answers",
        str(answers),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the bare loop failed (exit {process.returncode})")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------------------------
# Process measurements from /proc
# --------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds (resolution 1/CLK_TCK)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process (VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


# --------------------------------------------------------------------------------------------
# The rig: redis, simulators, one bot at a time, and a Slack-like event poster
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Questions asked together; `post_at` are monotonic times, `acks` seconds per event POST."""

    text: str
    questions: list[tuple[str, str]]  # (ts, user)
    post_at: dict[str, float] = field(default_factory=dict)
    acks: dict[str, float] = field(default_factory=dict)


class Rig:
    """Redis, the simulators, one bot process at a time, and a Slack-like event poster."""

    def __init__(self, slack_latency: float) -> None:
        try:
            self.redis_server = RedisServer.local()  # a free port, never 6379
        except RedisUnavailable as e:
            raise SystemExit(f"{e}: the benchmark needs a throwaway Redis") from None
        self.sims = Sims(slack_latency)
        self._redis: redis.asyncio.Redis | None = None
        self.redis_pid = 0
        self.redis_version = ""
        self.bot: Replica | None = None
        # Signed event delivery to the bot; no connection cap: a queue in the poster would be
        # counted as the bot's latency.
        self.poster: EventPoster | None = None
        self._session: aiohttp.ClientSession | None = None  # the bot's /metrics
        self.serial = 0  # questions posted so far: picks each one's workspace

    @property
    def redis(self) -> redis.asyncio.Redis:
        assert self._redis is not None
        return self._redis

    async def start(self) -> None:
        self.redis_server.start()
        self._redis = redis.asyncio.Redis.from_url(self.redis_server.url, decode_responses=True)
        info = await self.redis.info("server")
        self.redis_pid, self.redis_version = int(info["process_id"]), str(info["redis_version"])
        await self.sims.start()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.stop_bot()
        if self._session is not None:
            await self._session.close()
        await self.sims.close()
        if self._redis is not None:
            await self._redis.aclose()
        self.redis_server.close()

    @property
    def bot_pid(self) -> int:
        assert self.bot is not None and self.bot.process is not None
        return self.bot.process.pid

    async def start_bot(self, name: str, **env: str) -> None:
        """A fresh bot process on an empty Redis (answers held by a previous one are gone)."""
        await self.stop_bot()
        await self.redis.flushall()
        self.bot = Replica(
            name,
            slack_url=self.sims.slack_url,
            claude_url=self.sims.claude_url,
            redis_url=self.redis_server.url,
            **{**BOT_ENV, **env},
        )
        await self.bot.start()
        self.poster = event_poster(self.bot.url, connection_limit=0)

    async def stop_bot(self) -> None:
        if self.poster is not None:
            await self.poster.close()
            self.poster = None
        if self.bot is not None:
            await self.bot.close()
            self.bot = None

    async def ask(self, workload: Workload, count: int) -> Batch:
        text = workload.question()
        return Batch(text, await self.sims.questions(count, text))

    async def post(self, batch: Batch, index: int) -> None:
        """Deliver one question's `app_mention` as Slack would; record the acknowledgement time."""
        assert self.poster is not None
        ts, user = batch.questions[index]
        team = f"T{self.serial // TEAM_SIZE:05d}"
        self.serial += 1
        envelope = mention_envelope(
            team_id=team, channel=CHANNEL, user=user, text=batch.text, ts=ts, bot_user_id=BOT_USER
        )
        started = time.monotonic()
        batch.post_at[ts] = started
        status, _ = await self.poster.post_event(envelope)
        if status != 200:
            raise RuntimeError(f"event refused: HTTP {status}")
        batch.acks[ts] = time.monotonic() - started

    async def post_all(self, batch: Batch) -> None:
        await asyncio.gather(*(self.post(batch, i) for i in range(len(batch.questions))))

    async def run(self, workload: Workload, count: int, limit: float) -> dict[str, Any]:
        """Ask `count` questions at once and wait (at most `limit` s) for every answer to end."""
        batch = await self.ask(workload, count)
        await self.post_all(batch)
        return await self.wait_done(batch, limit)

    async def wait_done(self, batch: Batch, limit: float) -> dict[str, Any]:
        """Until every answer of `batch` has its final message and the bot has none running.

        The simulators are polled while answers stream; the bot's /metrics only at the end.
        """
        expected = len(batch.questions)
        deadline = time.monotonic() + limit
        while True:
            stats = await self.sims.stats()
            finished = sum(stats["outcomes"].values())
            if finished >= expected and await self.in_flight() == 0:
                return stats
            if time.monotonic() > deadline:
                problems = [
                    line
                    for line in (self.bot.logs() if self.bot else "").splitlines()
                    if '"level": "info"' not in line
                ]
                raise TimeoutError(
                    f"{finished}/{expected} answers finished in {limit:g} s; "
                    "the bot's last warnings:\n" + "\n".join(problems[-10:])
                )
            await asyncio.sleep(0.2)  # the simulators are polled; the bot only once all ended

    async def in_flight(self) -> int:
        """Answers the bot is running now (its `answers_in_flight` gauge)."""
        m = _IN_FLIGHT_METRIC.search(await self._metrics())
        return int(float(m[1])) if m else -1

    async def _metrics(self) -> str:
        assert self.bot is not None and self._session is not None
        async with self._session.get(f"{self.bot.url}/metrics") as response:
            return await response.text()

    async def errors(self) -> Counter[str]:
        """The bot's own error counters (store, Slack, Claude), from its /metrics."""
        found: Counter[str] = Counter()
        for m in _ERROR_METRIC.finditer(await self._metrics()):
            found[f"{m['kind']} {m['labels']}"] += int(float(m["value"]))
        return found

    async def store_calls(self) -> int:
        """The bot's store calls so far, from its /metrics: one call is one round trip (a
        script, a command or a pipeline). Redis's commandstats cannot tell a client's SET from
        one inside a script."""
        return sum(int(float(m[2])) for m in _STORE_CALLS_METRIC.finditer(await self._metrics()))

    async def commandstats(self) -> Counter[str]:
        """Calls per Redis command since the last reset, without the benchmark's own."""
        raw = await self.redis.info("commandstats")
        calls: Counter[str] = Counter()
        for key, value in raw.items():
            name = key.removeprefix("cmdstat_")
            if name not in BENCH_COMMANDS and not name.startswith("config"):
                calls[name] = int(value["calls"])
        return calls

    async def reset_counters(self) -> None:
        await self.redis.config_resetstat()
        await self.sims.reset()


_STORE_CALLS_METRIC = re.compile(
    r"^slackstream_store_latency_seconds_count\{([^}]*)\} (\S+)$", re.MULTILINE
)
_IN_FLIGHT_METRIC = re.compile(r"^slackstream_answers_in_flight (\S+)$", re.MULTILINE)
_ERROR_METRIC = re.compile(
    r"^slackstream_(?P<kind>store|slack|claude)_errors_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$",
    re.MULTILINE,
)


def _new_errors(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {k: n for k, n in (after - before).items() if n}


def _require_completed(stats: dict[str, Any], expected: int, what: str) -> None:
    completed = int(stats["outcomes"].get("completed", 0))
    if completed != expected:
        raise RuntimeError(f"{what}: {completed}/{expected} answers completed: {stats['outcomes']}")


# --------------------------------------------------------------------------------------------
# Phase 1: CPU per delta, bot versus bare loop
# --------------------------------------------------------------------------------------------


async def cpu_case(
    rig: Rig, workload: Workload, answers: int, rounds: int, budget: str = ""
) -> dict[str, Any]:
    """The bot's CPU per delta for `answers` of `workload`, and the bare loops' for the same
    streams; `budget` names the edit budget the bot runs with, when it is not BOT_ENV's.

    A shared 2-core machine moves CPU per delta by 20 % or more between two runs of the same
    code, so each round measures the bot and then the bare loops back to back, and the figures
    are the medians over `rounds` (the ratio is the median of the rounds' ratios, with its
    range)."""
    deltas = answers * workload.deltas
    before = await rig.errors()
    bot_runs: list[tuple[float, float, dict[str, Any]]] = []  # (cpu s, wall s, stats)
    bare_runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in BARE_LOOPS}
    for _ in range(rounds):
        await rig.reset_counters()
        pid = rig.bot_pid
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        stats = await rig.run(workload, answers, workload.seconds + 120)
        bot_runs.append((cpu_seconds(pid) - cpu0, time.monotonic() - wall0, stats))
        _require_completed(stats, answers, "cpu")
        for kind in BARE_LOOPS:
            bare_runs[kind].append(await run_bare(rig.sims.claude_url, workload, answers, kind))
    errors = _new_errors(before, await rig.errors())
    bot_cpu = statistics.median(cpu for cpu, _, _ in bot_runs)
    bot_us = bot_cpu / deltas * 1e6
    bare: dict[str, dict[str, Any]] = {}
    for kind, runs in bare_runs.items():
        ratios = [bot / run["cpu_seconds"] for (bot, _, _), run in zip(bot_runs, runs, strict=True)]
        bare_cpu = statistics.median(run["cpu_seconds"] for run in runs)
        bare[kind] = {
            "cpu_seconds": round(bare_cpu, 3),
            "wall_seconds": round(statistics.median(run["wall_seconds"] for run in runs), 2),
            "us_per_delta": round(bare_cpu / deltas * 1e6, 1),
            "ratio": round(statistics.median(ratios), 2),
            "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
        }
    stats = bot_runs[-1][2]
    slack_calls = sum(stats["calls"].values())
    extra = bot_cpu - bare[BOT_LOOP]["cpu_seconds"]
    return {
        "workload": workload.label() + (f"; {budget}" if budget else ""),
        "answers": answers,
        "deltas": deltas,
        "rounds": rounds,
        "bot_cpu_seconds": round(bot_cpu, 3),
        "bot_cpu_seconds_each": [round(cpu, 3) for cpu, _, _ in bot_runs],
        # What the bot adds to the bare loop with its request, per Slack call it makes: the
        # work the bare loop never does (edits, Redis steps, rendering, events), made visible.
        "extra_ms_per_slack_call": round(extra / slack_calls * 1000, 2) if slack_calls else None,
        "bot_wall_seconds": round(statistics.median(wall for _, wall, _ in bot_runs), 2),
        "bot_us_per_delta": round(bot_us, 1),
        "bare": bare,
        "edits_per_answer": round(stats["calls"].get("chat.update", 0) / answers, 1),
        "slack_calls_per_answer": round(sum(stats["calls"].values()) / answers, 1),
        "bot_errors": errors,
    }


# --------------------------------------------------------------------------------------------
# Phase 2: where the bot's CPU goes (py-spy)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Phase 3: Redis commands per answer
# --------------------------------------------------------------------------------------------


async def redis_phase(rig: Rig, cases: list[tuple[str, Workload]], answers: int) -> dict[str, Any]:
    """Commands per answer for each case, `answers` at a time. The counts include what the
    process sends in the background meanwhile (a janitor sweep every lease/4 = 3.75 s)."""
    rows = []
    for name, workload in cases:
        await rig.reset_counters()
        before, sent = await rig.errors(), await rig.store_calls()
        stats = await rig.run(workload, answers, workload.seconds + 120)
        _require_completed(stats, answers, f"redis {name}")
        errors = _new_errors(before, await rig.errors())
        calls = await rig.commandstats()
        round_trips = (await rig.store_calls() - sent) / answers
        per = {c: n / answers for c, n in calls.items()}
        rows.append(
            {
                "case": name,
                "workload": workload.label(),
                "answer_chars": workload.deltas * workload.chars,
                "nominal_seconds": round(workload.seconds, 1),
                "commands_per_answer": round(sum(per.values()), 1),
                "round_trips_per_answer": round(round_trips, 1),
                "edits_per_answer": round(stats["calls"].get("chat.update", 0) / answers, 1),
                "by_command": {c: round(n, 1) for c, n in sorted(per.items(), key=lambda x: -x[1])},
                "bot_errors": errors,
            }
        )
    # With no answer in flight, only background work should reach Redis (a janitor sweep every
    # 3.75 s); more means answers that ended left something running (e.g. a heartbeat loop).
    await rig.reset_counters()
    sent = await rig.store_calls()
    await asyncio.sleep(IDLE_WINDOW)
    idle = await rig.commandstats()
    idle_trips = await rig.store_calls() - sent
    return {
        "answers_per_case": answers,
        "cases": rows,
        "idle_round_trips_per_second": round(idle_trips / IDLE_WINDOW, 2),
        "idle_by_command": dict(idle),
    }


# --------------------------------------------------------------------------------------------
# Phase 4: memory per in-flight answer
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Phase 5: concurrency ramp, event acknowledgement latency
# --------------------------------------------------------------------------------------------


@dataclass
class Marks:
    at: float
    cpu: dict[str, float]


def _marks(pids: dict[str, int]) -> Marks:
    return Marks(time.monotonic(), {name: cpu_seconds(pid) for name, pid in pids.items()})


async def concurrency_level(rig: Rig, n: int, seconds: float) -> dict[str, Any]:
    """About `n` answers in flight: answers of `seconds` at 30 deltas/s arrive every
    seconds/n; the events posted in the second half (when n are in flight) are measured."""
    workload = Workload(deltas=round(DELTA_RATE * seconds), rate=DELTA_RATE)
    total = 2 * n
    await rig.reset_counters()
    sent = await rig.store_calls()
    errors = await rig.errors()
    batch = await rig.ask(workload, total)
    pids = {
        "bot": rig.bot_pid,
        "simulators": rig.sims.pid,
        "redis": rig.redis_pid,
        "driver": os.getpid(),
    }
    loop = asyncio.get_running_loop()
    start, interval = loop.time(), seconds / n
    posts: list[asyncio.Task[None]] = []
    window_start = _marks(pids)
    for k in range(total):
        if k == n:
            window_start = _marks(pids)
        await asyncio.sleep(max(0.0, start + k * interval - loop.time()))
        posts.append(asyncio.create_task(rig.post(batch, k)))
    window_end = _marks(pids)
    await asyncio.gather(*posts)
    stats = await rig.wait_done(batch, seconds + 180)
    calls = await rig.commandstats()
    round_trips = await rig.store_calls() - sent
    new_errors = _new_errors(errors, await rig.errors())
    measured = [ts for ts, _ in batch.questions[n:]]
    acks = [batch.acks[ts] * 1000 for ts in measured]
    late = [
        stats["finals_at"][ts] - batch.post_at[ts] - workload.seconds
        for ts in measured
        if ts in stats["finals_at"]
    ]
    span = window_end.at - window_start.at
    completed = int(stats["outcomes"].get("completed", 0))
    p99 = percentile(acks, 99)
    return {
        "in_flight": n,
        "events_per_second": round(n / seconds, 1),
        "deltas_per_second": round(n * DELTA_RATE),
        "ack_p50_ms": round(percentile(acks, 50), 1),
        "ack_p99_ms": round(p99, 1),
        "ack_max_ms": round(max(acks), 1),
        "late_p50_s": round(percentile(late, 50), 2),
        "late_p99_s": round(percentile(late, 99), 2),
        "completed": completed,
        "answers": total,
        "outcomes": stats["outcomes"],
        "cpu_percent": {
            name: round(100 * (window_end.cpu[name] - window_start.cpu[name]) / span)
            for name in pids
        },
        "redis_commands_per_answer": round(sum(calls.values()) / total, 1),
        "redis_round_trips_per_answer": round(round_trips / total, 1),
        "edits_per_answer": round(stats["calls"].get("chat.update", 0) / total, 1),
        "bot_errors": new_errors,
        "sustained": p99 < ACK_TARGET * 1000 and completed == total and not new_errors,
    }


async def concurrency_phase(
    rig: Rig, levels: list[int], seconds: float, warmup: int
) -> dict[str, Any]:
    await rig.start_bot("bench-concurrency")
    await rig.reset_counters()
    stats = await rig.run(Workload(deltas=100, rate=0), warmup, 60)
    _require_completed(stats, warmup, "concurrency warm-up")
    rows = []
    for n in levels:
        row = await concurrency_level(rig, n, seconds)
        rows.append(row)
        print(
            f"  concurrency {n}: ack p50 {row['ack_p50_ms']} ms, p99 {row['ack_p99_ms']} ms, "
            f"late p99 {row['late_p99_s']} s, cpu {row['cpu_percent']}",
            flush=True,
        )
        if not row["sustained"]:
            break
    await rig.stop_bot()
    passing = [r["in_flight"] for r in rows if r["sustained"]]
    return {
        "answer_seconds": seconds,
        "deltas_per_second_each": DELTA_RATE,
        "levels": rows,
        "largest_sustained": max(passing) if passing else 0,
    }


# --------------------------------------------------------------------------------------------
# Plans, orchestration, report
# --------------------------------------------------------------------------------------------


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


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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


def report_sections(r: dict[str, Any]) -> list[str]:
    """The figures as Markdown tables (printed, and the body of overhead.md)."""
    out: list[str] = []
    if "cpu" in r:
        out += [
            "## CPU per streamed delta: bot versus bare SDK loop",
            "",
            markdown_table(
                ["workload", "answers", "bot µs/delta", "bot CPU s"]
                + [f"bare `{BARE_LOOPS[k]}` µs/delta (ratio)" for k in BARE_LOOPS]
                + ["edits/answer", "Slack calls/answer", "(bot − bare) ms per Slack call"]
                + ["bot errors"],
                [
                    [c["workload"], c["answers"], c["bot_us_per_delta"], c["bot_cpu_seconds"]]
                    + [
                        f"{c['bare'][k]['us_per_delta']} (**{c['bare'][k]['ratio']}**"
                        f"{_spread(c['bare'][k])})"
                        for k in BARE_LOOPS
                    ]
                    + [c["edits_per_answer"], c["slack_calls_per_answer"]]
                    + [c.get("extra_ms_per_slack_call"), _counts(c["bot_errors"])]
                    for c in r["cpu"]
                ],
            ),
            "",
            f"Ratio = bot µs per delta / bare µs per delta (target ≤ {RATIO_TARGET}, against "
            "the first bare loop). The first bare loop makes the bot's own request with the "
            "bot's own client (raw events from `messages.create(stream=True)` over the SDK's "
            "aiohttp transport, `anthropic.DefaultAioHttpClient`): apples to apples. The second "
            "is a reference: the SDK's `messages.stream()` helper over its default httpx2 "
            "transport, which the bot used before. *(bot − bare) per Slack call* is the bot's CPU "
            "beyond the first bare loop's, divided by the Slack calls it made: the bot's own "
            "work rides on its calls (each edit also takes a budget token from Redis and renders "
            "the text), so at a fixed edit rate it is paid per answer-second, not per delta.",
            "",
        ]
    if "redis" in r:
        rd = r["redis"]
        out += [
            "## Redis commands per answer",
            "",
            markdown_table(
                [
                    "case",
                    "workload",
                    "chars",
                    "duration s",
                    "commands/answer",
                    "round trips/answer",
                    "edits/answer",
                    "by command (per answer)",
                    "bot errors",
                ],
                [
                    [
                        c["case"],
                        c["workload"],
                        c["answer_chars"],
                        c["nominal_seconds"],
                        c["commands_per_answer"],
                        c["round_trips_per_answer"],
                        c["edits_per_answer"],
                        ", ".join(f"{k} {v}" for k, v in c["by_command"].items()),
                        _counts(c["bot_errors"]),
                    ]
                    for c in rd["cases"]
                ],
            ),
            "",
            f"{rd['answers_per_case']} concurrent answers per case. *Commands* counts every "
            "command Redis executed, those inside Lua scripts and transactions included; "
            "*round trips* counts the bot's store calls (one script, command or pipeline each; "
            "its `slackstream_store_latency_seconds_count`), since commandstats cannot tell a "
            "client's SET from one inside a script. Both include "
            "the process's background sweeps (one EVALSHA every 3.75 s). Afterwards, with no "
            f"answer in flight, the bot sent {rd['idle_round_trips_per_second']} round trips/s "
            f"({_counts(rd['idle_by_command'])} in {IDLE_WINDOW:g} s; the janitor alone: "
            "about 0.27/s).",
            "",
        ]
    if "memory" in r:
        m = r["memory"]
        out += [
            "## Memory per in-flight answer",
            "",
            markdown_table(
                ["answers held", "bot RSS MiB", "KiB per answer", "peak RSS so far MiB"],
                [["0 (after warm-up)", m["baseline_rss_mib"], "", ""]]
                + [
                    [
                        row["in_flight"],
                        row["rss_mib"],
                        f"**{row['kib_per_answer']}**",
                        row["peak_rss_mib"],
                    ]
                    for row in m["levels"]
                ],
            ),
            "",
            f"Held answer: {m['held_answer']}; questions arrive at {HOLD_ARRIVALS:g} a second.",
            "",
        ]
    if "concurrency" in r:
        c = r["concurrency"]
        out += [
            "## Concurrent answers versus event acknowledgement",
            "",
            markdown_table(
                [
                    "in flight",
                    "events/s",
                    "deltas/s",
                    "ack p50 ms",
                    "ack p99 ms",
                    "ack max ms",
                    "late p50 s",
                    "late p99 s",
                    "completed",
                    "CPU % bot / sims / redis / driver",
                    "Redis cmds / round trips per answer",
                    "edits/answer",
                    "bot errors",
                    "sustained",
                ],
                [
                    [
                        row["in_flight"],
                        row["events_per_second"],
                        row["deltas_per_second"],
                        row["ack_p50_ms"],
                        row["ack_p99_ms"],
                        row["ack_max_ms"],
                        row["late_p50_s"],
                        row["late_p99_s"],
                        f"{row['completed']}/{row['answers']}",
                        " / ".join(
                            str(row["cpu_percent"][k])
                            for k in ("bot", "simulators", "redis", "driver")
                        ),
                        f"{row['redis_commands_per_answer']} / "
                        f"{row['redis_round_trips_per_answer']}",
                        row["edits_per_answer"],
                        _counts(row["bot_errors"]),
                        "yes" if row["sustained"] else "**no**",
                    ]
                    for row in c["levels"]
                ],
            ),
            "",
            f"**Largest level sustained: {c['largest_sustained']}**"
            + (
                " (every level run passed: the limit is higher)"
                if c["levels"] and c["levels"][-1]["sustained"]
                else ""
            )
            + f" (target ≥ {CONCURRENCY_TARGET}). Each answer: {c['answer_seconds']:g} s at "
            f"{c['deltas_per_second_each']:g} deltas/s. *Sustained*: ack p99 < 250 ms, every "
            "answer completed, no error counted by the bot. *Late* = final edit time − event "
            "time − nominal stream duration. CPU % is of one core, over the measured half of "
            "the level; the bot is one asyncio process, so about 100 % is its ceiling.",
            "",
        ]
    for name in ("delta_heavy", "concurrency"):
        p = r.get("profile", {}).get(name)
        if p is None:
            continue
        if "skipped" in p:
            out += [f"## Profile: {p['title']}", "", f"Skipped: {p['skipped']}", ""]
            continue
        out += [
            f"## Profile: {p['title']} (py-spy, {p['samples']} on-CPU samples)",
            "",
            "CPU by component (the innermost non-stdlib frame of each sample):",
            "",
            markdown_table(["component", "%"], p["components_percent"]),
            "",
            "Bot functions by inclusive time:",
            "",
            markdown_table(["frame", "%"], p["bot_inclusive_percent"]),
            "",
            "Top frames by self time:",
            "",
            markdown_table(["frame", "%"], p["self_percent"]),
            "",
        ]
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in counts.items()) or "none"


def render_markdown(r: dict[str, Any], command: str) -> str:
    m = r["machine"]
    head = [
        "# Cost of the bot itself (`bench/overhead.py`)",
        "",
        f"Measured {r['date']} on {machine_text(m)}.",
        "",
        f"Command: `{command}` (total {r['elapsed_seconds']:.0f} s).",
        "",
        "How: the bot is a real `python -m bot serve` process on a throwaway redis-server; "
        f"SlackSim (no rate limit, {r['slack_latency_seconds'] * 1000:g} ms latency) and "
        "ClaudeSim run in a separate process, so their CPU is not the bot's. CPU is "
        "utime+stime from `/proc/<pid>/stat` around each workload, after a warm-up; each bare "
        "loop is another process streaming the same scripts through the SDK and iterating "
        f"every event, nothing else. Each CPU case runs {r['plan']['cpu_rounds']} rounds (the "
        "bot, then the bare loops, back to back) and reports medians: the ratio is the median "
        "of the rounds' ratios, with their range, since this machine moves CPU per delta by "
        "20 % between two runs of the same code. Each answer has its own asker; answers are "
        f"spread over workspaces of {TEAM_SIZE} (the default cap per workspace). Bot settings "
        "are the defaults except `WORKSPACE_EDITS_PER_MINUTE=6000` and "
        "`WORKSPACE_EDIT_BURST=100`, so that every answer is edited at the full per-message "
        "pace (1 edit/s): the bot's most expensive case (with Slack's real budget most "
        "intermediate edits are skipped).",
        "",
    ]
    return "\n".join(head + summary(r) + report_sections(r)) + "\n"


def _spread(bare: dict[str, Any]) -> str:
    """The range of a median ratio over the rounds, as ", 1.5–1.7" (nothing for one round)."""
    low, high = bare.get("ratio_range") or (None, None)
    return "" if low is None or low == high else f", {low}–{high}"


def summary(r: dict[str, Any]) -> list[str]:
    """The four figures of the issue against their targets."""
    rows: list[list[Any]] = []
    if "cpu" in r:
        for c in r["cpu"]:
            ratio = c["bare"][BOT_LOOP]["ratio"]
            reference = " / ".join(
                f"{c['bare'][k]['ratio']} vs `{BARE_LOOPS[k]}`" for k in BARE_LOOPS if k != BOT_LOOP
            )
            rows.append(
                [f"CPU ratio, {c['workload']}: bot vs bare loop with the bot's request "
                 f"(`{BARE_LOOPS[BOT_LOOP]}`)",
                 f"**{ratio}**{_spread(c['bare'][BOT_LOOP])} (reference: {reference})",
                 f"≤ {RATIO_TARGET}"]
            )  # fmt: skip
    if "redis" in r:
        trips = ", ".join(
            f"{c['case'].split()[0]} {c['round_trips_per_answer']}" for c in r["redis"]["cases"]
        )
        rows.append(
            ["Redis round trips per answer (cases below)", trips, "not growing with length"]
        )
    if "memory" in r:
        per = ", ".join(
            f"{row['kib_per_answer']} KiB ({row['in_flight']} held)"
            for row in r["memory"]["levels"]
        )
        rows.append(["memory per in-flight answer", per, "—"])
    if "concurrency" in r:
        c = r["concurrency"]
        largest = f"{c['largest_sustained']}"
        if c["levels"] and c["levels"][-1]["sustained"]:
            largest = f"≥ {largest} (every level run passed)"
        rows.append(
            [f"concurrent answers at {c['deltas_per_second_each']:g} deltas/s with ack p99 "
             "< 250 ms", largest, f"≥ {CONCURRENCY_TARGET}"]
        )  # fmt: skip
    return (
        ["## Summary", "", markdown_table(["figure", "measured", "target"], rows), ""]
        if rows
        else []
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead", description=__doc__.split("\n", 1)[0]
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
    # Internal: this module re-invoked as the simulators' process or as the bare loop.
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
