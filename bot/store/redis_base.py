"""What every part of `RedisStore` shares: the client (how it is made, checked and closed), the
keys under the store's prefix, the clock the scripts read, and redis errors made `StoreError`.
The parts (`redis_store`, `redis_cancels`, `redis_caches`, `redis_ledger`) are mixins over this
base; the package docstring says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Self

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from bot.store import lua, lua_ledger
from bot.store.contract import StoreError
from bot.store.keys import DEFAULT_PREFIX, Keys


def decoded(value: str | bytes) -> str:
    """Clients may or may not decode responses; the store works with either."""
    return value.decode() if isinstance(value, bytes) else value


def to_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Callers handle one exception type, whatever redis-py raised."""
    try:
        yield
    except RedisError as e:
        unreachable = isinstance(e, RedisConnectionError | RedisTimeoutError)
        reason = "unreachable" if unreachable else "error"
        raise StoreError(f"Redis {reason} during {action}: {e}") from e


class RedisBase:
    """The store owns the client: `close()` closes it.

    `clock` replaces Redis `TIME` in the scripts (tests only: it makes leases and buckets
    deterministic); by default every time is the Redis server's.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = client
        self._keys = Keys(prefix)
        self._clock = clock
        self._closed = asyncio.Event()  # also ends every `cancel_signals` iteration
        scripts = {**lua.SCRIPTS, **lua_ledger.SCRIPTS}
        self._scripts = {name: client.register_script(body) for name, body in scripts.items()}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
        **kw: Any,
    ) -> Self:
        """A client that rides out a Redis blip (about 1.4 s of retries) yet reports a Redis
        that is down within about 2 s, so replies degrade instead of hanging. `kw` overrides
        the client options."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 2.0,
            "health_check_interval": 15,
            # redis-py's async pool refuses connection 101 by default: hundreds of answers in
            # flight each hold one briefly, and a refused finish() later looks like an orphan.
            "max_connections": 1000,
            "retry": Retry(ExponentialBackoff(cap=0.8, base=0.1), retries=3),
            "decode_responses": True,
        }
        options.update(kw)
        return cls(redis.asyncio.Redis.from_url(url, **options), prefix=prefix, clock=clock)

    def _now(self) -> str:
        """The `now` argument of a script: empty for the server's clock."""
        return "" if self._clock is None else f"{self._clock():.17g}"

    async def _run(self, name: str, keys: list[str], args: list[EncodableT]) -> Any:
        """Run the script `name` (`lua.SCRIPTS`, `lua_ledger.SCRIPTS`): one atomic step, one round
        trip."""
        with translated(name):
            return await self._scripts[name](keys=keys, args=args)

    async def ping(self) -> None:
        with translated("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        """Also closes the client, which the store owns."""
        if self._closed.is_set():
            return
        self._closed.set()
        with translated("close"):
            await self._redis.aclose()
