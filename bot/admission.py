"""Which Slack events become answers: dedupe, allowlists and the bot's own messages.

Slack delivers an event again when it was not acknowledged within 3 s, and delivers one
mentioning message twice when it fits two subscriptions (`app_mention` and `message.im`), to any
replica. Claiming both the `event_id` and the message's `(channel, ts)` in the shared store makes
each message answered once. When the store is unreachable, the claim falls back to this replica's
memory: a duplicate that reaches *another* replica during the outage may then be answered twice,
which is preferable to not answering at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config import Settings
from bot.metrics import Metrics
from bot.store import MemoryStore, Store, StoreError

log = logging.getLogger(__name__)

DEDUPE_TTL_SECONDS = 6 * 3600  # well past Slack's last retry (~5 min) and clock skew

# Message subtypes that are not something a person asked: edits, deletions, joins, bot posts.
IGNORED_SUBTYPES = frozenset(
    {
        "message_changed",
        "message_deleted",
        "message_replied",
        "bot_message",
        "channel_join",
        "channel_leave",
        "channel_topic",
        "channel_purpose",
        "channel_name",
        "group_join",
        "group_leave",
        "thread_broadcast_deleted",
        "tombstone",
        "assistant_app_thread",
    }
)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""


class Admission:
    """Decides, once per message across all replicas, whether to answer it."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        fallback: MemoryStore | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.fallback = fallback or MemoryStore()
        self.degraded = False

    def screen(self, event: dict[str, object], *, bot_user_id: str) -> Verdict:
        """Pure checks that need no store: other bots, edits, the bot itself, allowlists."""
        subtype = event.get("subtype")
        if subtype in IGNORED_SUBTYPES or (subtype is not None and subtype != "file_share"):
            return Verdict(False, f"subtype {subtype}")
        if event.get("bot_id") or event.get("bot_profile"):
            return Verdict(False, "from a bot")
        user = event.get("user")
        if not isinstance(user, str) or not user:
            return Verdict(False, "no user")
        if user == bot_user_id:
            return Verdict(False, "from the bot itself")
        channel = event.get("channel")
        if not isinstance(channel, str) or not isinstance(event.get("ts"), str):
            return Verdict(False, "no channel or ts")
        allowed_channels = self.settings.allowed_channels
        if allowed_channels and channel not in allowed_channels:
            return Verdict(False, "channel not allowed")
        allowed_users = self.settings.allowed_users
        if allowed_users and user not in allowed_users:
            return Verdict(False, "user not allowed")
        return Verdict(True)

    async def claim(self, *, event_id: str | None, channel: str, ts: str) -> bool:
        """True for the first delivery of this message anywhere; False for any duplicate."""
        keys = [f"msg:{channel}:{ts}"]
        if event_id:
            keys.insert(0, f"event:{event_id}")
        for key in keys:
            if not await self._claim(key):
                self.metrics.events_deduped.inc()
                log.info("duplicate event dropped", extra={"key": key})
                return False
        return True

    async def _claim(self, key: str) -> bool:
        try:
            first = await self.store.claim_event(key, DEDUPE_TTL_SECONDS)
        except StoreError as e:
            if not self.degraded:
                log.error(
                    "store unreachable: deduplicating in this replica's memory",
                    extra={"error": str(e)},
                )
            self.degraded = True
            self.metrics.store_errors.labels("claim_event").inc()
            self.metrics.store_degraded.set(1)
            return await self.fallback.claim_event(key, DEDUPE_TTL_SECONDS)
        if self.degraded:
            log.info("store reachable again")
            self.degraded = False
            self.metrics.store_degraded.set(0)
        # Remember locally too, so a retry during a later outage is still recognised here.
        await self.fallback.claim_event(key, DEDUPE_TTL_SECONDS)
        return first
