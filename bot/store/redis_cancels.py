"""Stop, pressed on any replica, as `RedisStore` keeps it: a flag (`cancel:{id}`, the record,
which `RENEW` reports to the answer's owner) and a signal on the `cancel` channel (the fast
path, best effort). A mixin of `RedisStore` (the package docstring says why)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from redis.exceptions import RedisError

from bot.retry import Backoff
from bot.store.redis_base import RedisBase, decoded, to_ms, translated

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 1.0  # the Stop listener's read timeout, below the client's socket timeout


class RedisCancels(RedisBase):
    """The cancel part of `RedisStore`."""

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        message = json.dumps({"answer_id": answer_id, "by_user": by_user})
        with translated("request_cancel"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._keys.cancel(answer_id), by_user, px=to_ms(ttl_seconds))
                pipe.publish(self._keys.cancel_channel, message)
                await pipe.execute()

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """Listening starts at the first iteration. A Redis outage does not end the
        iteration: it resubscribes with a backoff; signals published meanwhile are lost, the
        flags are not (`renew` reports them)."""
        return self._listen()

    async def _listen(self) -> AsyncIterator[tuple[str, str]]:
        backoff = Backoff(first=0.1, cap=5.0)
        while not self._closed.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._keys.cancel_channel)
                backoff.reset()
                while not self._closed.is_set():
                    # A read timeout below the client's socket timeout: an idle subscription
                    # returns None here instead of failing and resubscribing every 2 s.
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=CANCEL_POLL_SECONDS
                    )
                    signal = self._parse_signal(message)
                    if signal is not None:
                        yield signal
            except RedisError as e:
                log.warning("cancel signals: Redis unavailable (%s); resubscribing", e)
            finally:
                with contextlib.suppress(RedisError):
                    closer: Any = pubsub.aclose  # typed only from redis 8.2
                    await closer()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.delay()):
                    await self._closed.wait()

    @staticmethod
    def _parse_signal(message: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if message is None or message.get("type") != "message":
            return None
        try:
            payload = json.loads(decoded(message["data"]))
            return str(payload["answer_id"]), str(payload["by_user"])
        except (ValueError, KeyError, TypeError):
            log.warning("cancel signals: ignoring malformed message %r", message.get("data"))
            return None
