"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator

import pytest
import redis

from bot.sim.redis import RedisServer, RedisUnavailable
from bot.store import MemoryStore, RedisStore, Store

T0 = 1_700_000_000.0  # where every test's clock starts: a wall-clock-sized "now"

# ============================================================================================
# Redis and store fixtures
# ============================================================================================


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A test that needs what this machine's Redis cannot do (stop an external one) is skipped."""
    try:
        return (yield)
    except RedisUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway Redis for the session; fault tests may stop and restart it."""
    try:
        server = RedisServer.from_environment()
    except RedisUnavailable as e:
        pytest.skip(str(e))
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty database, running again if an earlier test stopped or froze it."""
    if redis_server.managed and redis_server.frozen:
        redis_server.thaw()
    if not redis_server.running:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


class ManualClock:
    """The stores' clock in tests: it moves only when a test moves it, so leases, buckets and
    the memory store's expiries are deterministic. It starts at a wall-clock-sized time, so
    float precision is exercised as with Redis `TIME`. (Redis still expires keys on its own
    clock, which no test can move.)"""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def store_clock() -> ManualClock:
    """The clock every store of a test shares (`store`, `store_factory`, `redis_store`)."""
    return ManualClock()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, store_clock: ManualClock) -> AsyncIterator[Store]:
    """Each contract test runs against both stores, on the test's `store_clock`."""
    if request.param == "memory":
        memory = MemoryStore(clock=store_clock)
        yield memory
        await memory.close()
    else:
        shared = RedisStore.from_url(request.getfixturevalue("redis_url"), clock=store_clock)
        yield shared
        await shared.close()


@pytest.fixture
async def store_factory(
    store: Store, store_clock: ManualClock, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Store]]:
    """Another replica's view of `store`'s backend: a new RedisStore with its own connections
    to the same Redis and the same clock, or the very same MemoryStore (a memory store has no
    other replica)."""
    opened: list[RedisStore] = []
    url = request.getfixturevalue("redis_url") if isinstance(store, RedisStore) else None

    def another() -> Store:
        if url is None:
            return store
        replica = RedisStore.from_url(url, clock=store_clock)
        opened.append(replica)
        return replica

    yield another
    for replica in opened:
        await replica.close()


@pytest.fixture
async def redis_store(redis_url: str, store_clock: ManualClock) -> AsyncIterator[RedisStore]:
    """A RedisStore on the test's `store_clock`, for the tests only Redis can run."""
    store = RedisStore.from_url(redis_url, clock=store_clock)
    yield store
    await store.close()
