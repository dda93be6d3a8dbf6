"""Stop, pressed on this replica, as `MemoryStore` keeps it: a flag that expires (the record,
which `renew` reports) and a signal to every `cancel_signals` listener. A mixin of
`MemoryStore` (the package docstring says why)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable


class MemoryCancels:
    """The cancel part of `MemoryStore`."""

    _clock: Callable[[], float]  # the store's clock, set by MemoryStore

    def __init__(self) -> None:
        super().__init__()
        self._cancels: dict[str, tuple[str, float]] = {}  # answer id -> (by user, expiry)
        self._listeners: set[asyncio.Queue[tuple[str, str] | None]] = set()
        self._closed = False

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        now = self._clock()
        self._cancels = {k: v for k, v in self._cancels.items() if v[1] > now}  # expired go
        self._cancels[answer_id] = (by_user, now + ttl_seconds)
        for queue in self._listeners:
            queue.put_nowait((answer_id, by_user))

    def _cancel_flag(self, answer_id: str) -> str | None:
        """Who pressed Stop on the answer, if the flag is still there."""
        flag = self._cancels.get(answer_id)
        if flag is None:
            return None
        by_user, expires = flag
        if expires <= self._clock():
            del self._cancels[answer_id]
            return None
        return by_user

    def _drop_cancel(self, answer_id: str) -> None:
        """A finished answer's flag goes with it."""
        self._cancels.pop(answer_id, None)

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """Listening starts at this call, not at the first iteration."""
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        else:
            self._listeners.add(queue)
        return self._drain(queue)

    async def _drain(
        self, queue: asyncio.Queue[tuple[str, str] | None]
    ) -> AsyncIterator[tuple[str, str]]:
        try:
            while (signal := await queue.get()) is not None:
                yield signal
        finally:
            self._listeners.discard(queue)

    async def close(self) -> None:
        """The listeners are all a memory store has to release."""
        self._closed = True
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()
