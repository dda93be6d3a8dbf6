"""A real `slackstream serve` process on the simulators, for the fault tests that kill, stop and
restart replicas and for the benchmark that measures the process's own cost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bot.sim.redis import free_port
from bot.sim.rig import event_poster, sim_environment

READY_TIMEOUT = 60.0  # a safety net for a loaded machine, not a timing assertion


class Replica:
    """One bot process on a free loopback port, configured through its environment: the
    simulators' settings (`bot.sim.rig.sim_environment`) with the timings below; `env` (setting
    names, any case) wins."""

    def __init__(
        self, name: str, *, slack_url: str, claude_url: str, redis_url: str, **env: Any
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = {
            "redis_url": redis_url,
            "port": self.port,
            "replica_id": name,
            "edit_interval_seconds": 0.2,
            "stream_lease_seconds": 2,
            "stream_idle_timeout_seconds": 10,
            "shutdown_grace_seconds": 3,
            "log_format": "json",
            "log_level": "INFO",
            **{k.lower(): v for k, v in env.items()},
        }
        self.env = {**os.environ, **sim_environment(slack_url, claude_url, **settings)}
        self._log = tempfile.NamedTemporaryFile(
            prefix=f"replica-{name}-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.poster = event_poster(self.url)

    def launch(self, command: str = "serve") -> None:
        """Start the process without waiting for it to be ready (start-up fault tests)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", command],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],  # where `bot` is a package
        )

    async def logged(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the process has logged a line containing `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.logs(tail=None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {self.name} never logged {text!r}:\n{self.logs()}")
            await asyncio.sleep(0.05)

    async def start(self) -> Replica:
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited early:\n{self.logs()}")
            status, _ = await self.get("/readyz")
            if status == 200:
                return self
            await asyncio.sleep(0.05)
        raise TimeoutError(f"replica {self.name} not ready:\n{self.logs()}")

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=2)) as response,
            ):
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0, ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def exit_code(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {self.name} did not exit:\n{self.logs()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def logs(self, tail: int | None = 6000) -> str:
        text = Path(self._log.name).read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def log_records(self) -> list[dict[str, Any]]:
        """The process's JSON log lines (LOG_FORMAT=json), parsed."""
        records = []
        for line in self.logs(tail=None).splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    async def close(self) -> None:
        await self.poster.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
        os.unlink(self._log.name)
