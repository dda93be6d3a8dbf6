"""The simulators' process (`--sims`): SlackSim and ClaudeSim in a process of their own, so that
their CPU is not counted as the bot's, and the driver's handle on it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import ROOT
from bench.overhead.workload import bench_script
from bot.render import STOP_ACTION_ID
from bot.sim.claude import ClaudeSim
from bot.sim.rig import CHANNEL, simulators
from bot.sim.slack import SimMessage, SlackSim


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
