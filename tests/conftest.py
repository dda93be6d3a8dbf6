"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from bot.store import MemoryStore, RedisStore, Store
from tests.redis_server import RedisServer

# ============================================================================================
# Redis and store fixtures
# ============================================================================================


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway Redis for the session; fault tests may stop and restart it."""
    server = RedisServer.from_environment()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty database, running again if an earlier test stopped it."""
    if not redis_server.running:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each contract test runs against both stores."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.close()
    else:
        shared = RedisStore.from_url(request.getfixturevalue("redis_url"))
        yield shared
        await shared.close()


@pytest.fixture
async def store_factory(
    store: Store, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Store]]:
    """Another replica's view of `store`'s backend: a new RedisStore with its own connections
    to the same Redis, or the very same MemoryStore (a memory store has no other replica)."""
    opened: list[RedisStore] = []
    url = request.getfixturevalue("redis_url") if isinstance(store, RedisStore) else None

    def another() -> Store:
        if url is None:
            return store
        replica = RedisStore.from_url(url)
        opened.append(replica)
        return replica

    yield another
    for replica in opened:
        await replica.close()
