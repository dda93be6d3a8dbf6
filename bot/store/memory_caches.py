"""Copies of what the bot read from Slack, as `MemoryStore` keeps them: a thread's messages and
files prepared for Claude, each for a while, so a follow-up question reads neither again. Both
are bounded (the least recently written or used go first). A mixin of `MemoryStore` (the
package docstring says why)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_THREADS = 1_000  # cached threads kept at most
MAX_FILES = 1_000  # prepared files kept at most (the least recently used go first)
MAX_FILE_CHARS = 100_000_000  # and at most this much of them (about 100 MB)


class MemoryCaches:
    """The cache part of `MemoryStore`. Entries are kept as JSON, like Redis does, so callers
    can't mutate the cached copy."""

    _clock: Callable[[], float]  # the store's clock, set by MemoryStore

    def __init__(self) -> None:
        super().__init__()
        self._threads: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (expiry, JSON)
        self._files: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (expiry, JSON)
        self._file_chars = 0

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        entry = self._threads.get(key)
        if entry is None or entry[0] <= self._clock():
            self._threads.pop(key, None)
            return None
        return json.loads(entry[1])  # type: ignore[no-any-return]

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        now = self._clock()
        current = self._threads.get(key)
        expires = current[0] if current is not None and current[0] > now else now + ttl_seconds
        self._threads[key] = (expires, json.dumps(messages))
        self._threads.move_to_end(key)
        while len(self._threads) > MAX_THREADS:
            self._threads.popitem(last=False)

    async def get_file(self, key: str) -> dict[str, Any] | None:
        entry = self._files.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop_file(key)
            return None
        self._files.move_to_end(key)
        return json.loads(entry[1])  # type: ignore[no-any-return]

    async def put_file(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        # Bounded in count and size: a file that could never fit is not kept at all.
        encoded = json.dumps(value)
        self._drop_file(key)
        if len(encoded) > MAX_FILE_CHARS:
            return
        self._files[key] = (self._clock() + ttl_seconds, encoded)
        self._file_chars += len(encoded)
        while len(self._files) > MAX_FILES or self._file_chars > MAX_FILE_CHARS:
            self._drop_file(next(iter(self._files)))

    def _drop_file(self, key: str) -> None:
        entry = self._files.pop(key, None)
        if entry is not None:
            self._file_chars -= len(entry[1])
