"""Reading a thread from Slack for an answer's context: the messages, and the people's names.

Slack limits `conversations.replies` tightly for some apps, so a thread's settled messages are
cached in the store and later reads fetch only what is newer. The cache's lifetime starts when
the thread is first cached and is never extended (`Store.put_thread`), so an edited or deleted
earlier message is read afresh within `THREAD_CACHE_SECONDS` however busy the thread is.
Display names are cached per replica, bounded and refreshed after `NAME_CACHE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from bot import render
from bot.slackapi import SlackCalls, SlackFailure
from bot.slackts import ts_before, ts_key
from bot.store import Store, StoreError

THREAD_CACHE_SECONDS = 600.0  # a cached thread is read whole again this often at the latest
NAME_CACHE_SECONDS = 3600.0  # a display name is looked up again after this
MAX_NAMES = 10_000  # display names kept at most (the least recently used go first)


class ThreadReader:
    """See the module docstring."""

    def __init__(
        self, *, slack: SlackCalls, store: Store, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slack = slack
        self.store = store
        self.clock = clock
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def messages(
        self, channel: str, thread_ts: str, *, before_ts: str
    ) -> list[dict[str, Any]]:
        """The thread's messages: the cached ones plus those Slack has after the newest cached.

        Only finished messages older than `before_ts` (the asking answer's own message) are
        cached, so a cached copy never holds an answer that was still streaming when read."""
        key = f"{channel}:{thread_ts}"
        cached: list[dict[str, Any]] = []
        with contextlib.suppress(StoreError):
            cached = await self.store.get_thread(key) or []
        oldest = cached[-1]["ts"] if cached else None
        by_ts = {str(m["ts"]): m for m in cached}
        async for message in self.slack.thread(channel, thread_ts, oldest=oldest):
            if message.get("ts"):
                by_ts[str(message["ts"])] = message
        thread = [by_ts[ts] for ts in sorted(by_ts, key=ts_key)]
        settled = [
            m
            for m in thread
            if ts_before(str(m["ts"]), before_ts) and render.stop_button_answer_id(m) is None
        ]
        with contextlib.suppress(StoreError):
            await self.store.put_thread(key, settled, THREAD_CACHE_SECONDS)
        return thread

    async def names(self, user_ids: Sequence[str]) -> dict[str, str]:
        """Display names for labelling turns; a failed lookup leaves the person unnamed."""
        now = self.clock()
        found: dict[str, str] = {}
        for user_id in user_ids:
            known = self._names.get(user_id)
            if known is not None and known[1] > now:
                self._names.move_to_end(user_id)
                found[user_id] = known[0]
                continue
            with contextlib.suppress(SlackFailure):
                data = await self.slack.call("users.info", user=user_id)
                user = data.get("user") or {}
                profile = user.get("profile") or {}
                name = profile.get("display_name") or user.get("real_name") or user.get("name")
                if name:
                    found[user_id] = str(name)
                    self._names[user_id] = (str(name), now + NAME_CACHE_SECONDS)
                    self._names.move_to_end(user_id)
                    while len(self._names) > MAX_NAMES:
                        self._names.popitem(last=False)
        return found
