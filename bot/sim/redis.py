"""A throwaway redis-server for the tests and the benchmarks, which may stop, kill, freeze and
restart it.

Nothing here uses the machine's own Redis on 6379: that one may hold someone's data, and the
tests and benchmarks flush what they use. Without a `redis-server` binary, `TEST_REDIS_URL` may
name a disposable Redis instead; what would stop or restart it then raises `RedisUnavailable`
(the tests' conftest turns that into a skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

import redis

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_FORBIDDEN_PORT = 6379


class RedisUnavailable(Exception):
    """No throwaway Redis to be had (no binary, no usable `TEST_REDIS_URL`), or the one there
    is not ours to stop, freeze or restart."""


def free_port() -> int:
    """A loopback port nobody listens on right now (also used to point clients at nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """A redis-server on a fixed loopback port, so that clients reconnect after a restart."""

    def __init__(self, *, binary: str | None = None, external_url: str | None = None) -> None:
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if external_url is not None:
            parts = urlsplit(external_url)
            self.port = parts.port or _FORBIDDEN_PORT
            self.url = external_url
        else:
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        if self.port == _FORBIDDEN_PORT:
            raise ValueError("refusing port 6379: its data would be flushed; use a throwaway Redis")

    @classmethod
    def local(cls) -> RedisServer:
        """One run from the `redis-server` binary on PATH, on a free port (not started yet)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("no redis-server binary on PATH")
        return cls(binary=binary)

    @classmethod
    def from_environment(cls) -> RedisServer:
        """The local binary if there is one, else `TEST_REDIS_URL`; RedisUnavailable otherwise."""
        if shutil.which("redis-server") is not None:
            return cls.local()
        url = os.environ.get("TEST_REDIS_URL")
        if not url:
            raise RedisUnavailable("no redis-server binary on PATH and TEST_REDIS_URL is not set")
        try:
            return cls(external_url=url)
        except ValueError as e:
            raise RedisUnavailable(f"TEST_REDIS_URL unusable: {e}") from None

    @property
    def managed(self) -> bool:
        """Whether this helper owns the process (and so can stop and restart it)."""
        return self._binary is not None

    @property
    def running(self) -> bool:
        if not self.managed:
            return True
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start on `self.port` (the same port on every restart) and wait until PING answers."""
        if self.managed and not self.running:
            assert self._binary is not None
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="slackstream-redis-")
            self._process = subprocess.Popen(
                [
                    self._binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self._dir.name,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self._wait_ready()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """SIGSTOP: a stall (a long fork, a paused VM). Connections stay open and commands are
        queued by the kernel, unanswered, until `thaw()`."""
        self._require_managed("freeze")
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        """SIGCONT: Redis runs again and serves what was queued meanwhile."""
        self._require_managed("thaw")
        if self._frozen and self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        """SIGTERM and wait: Redis shuts down cleanly and the port is free again."""
        self._require_managed("stop")
        self.thaw()  # a stopped process would never handle SIGTERM
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=_STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: a crash, with no goodbye to the clients."""
        self._require_managed("kill")
        self._frozen = False  # SIGKILL ends a stopped process too
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=_STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop and start on the same port; with no persistence, the data is gone."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the process, if ours, and remove its directory."""
        if self.managed:
            self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _require_managed(self, action: str) -> None:
        if not self.managed:
            raise RedisUnavailable(f"cannot {action} the external Redis at TEST_REDIS_URL")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with code {self._process.returncode} "
                        f"on port {self.port}"
                    )
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.02)  # polling interval, bounded by the deadline above
        finally:
            client.close()
