"""Copies of what the bot read from Slack, as `RedisStore` keeps them for every replica: a
thread's messages (`thread:`) and files prepared for Claude (`file:`), each for a while, so a
follow-up question reads neither again. A mixin of `RedisStore` (the package docstring says
why)."""

from __future__ import annotations

import json
from typing import Any

from bot.store.redis_base import RedisBase, to_ms, translated


class RedisCaches(RedisBase):
    """The cache part of `RedisStore`."""

    async def _get_json(self, action: str, key: str) -> Any:
        """The JSON at `key`, or None."""
        with translated(action):
            raw = await self._redis.get(key)
        return None if raw is None else json.loads(raw)

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        messages = await self._get_json("get_thread", self._keys.thread(key))
        return messages if isinstance(messages, list) else None

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        await self._run(
            "put_thread", [self._keys.thread(key)], [json.dumps(messages), to_ms(ttl_seconds)]
        )

    async def get_file(self, key: str) -> dict[str, Any] | None:
        value = await self._get_json("get_file", self._keys.file(key))
        return value if isinstance(value, dict) else None

    async def put_file(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        with translated("put_file"):
            await self._redis.set(self._keys.file(key), json.dumps(value), px=to_ms(ttl_seconds))
