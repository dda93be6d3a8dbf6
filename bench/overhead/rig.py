"""The rig every phase runs on: a throwaway redis-server, the simulators' process, one bot
process at a time, a Slack-like event poster, and the bot's CPU and memory read from /proc."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio

from bench.overhead.sims import Sims
from bench.overhead.workload import Workload
from bot.sim.events import EventPoster, mention_envelope
from bot.sim.redis import RedisServer, RedisUnavailable
from bot.sim.replica import Replica
from bot.sim.rig import BOT_USER, CHANNEL, event_poster

TEAM_SIZE = 50  # answers per simulated workspace: the bot's default cap per workspace
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

# Process measurements from /proc

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


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
