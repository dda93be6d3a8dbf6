"""What a simulated Slack workspace holds: its conversations, its people and bots, and every
message with each version of it, and who is told when it changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.sim.slack_payloads import ApiError, JsonDict, block_texts
from bot.slackts import ts_key

_TS_STEP = 100  # microseconds between two generated timestamps


@dataclass
class SimMessage:
    """One stored message, with every version of its payload."""

    channel: str
    ts: str
    user: str | None
    bot_id: str | None
    text: str
    blocks: list[JsonDict] = field(default_factory=list)
    markdown_text: str | None = None
    thread_ts: str | None = None
    edited: bool = False
    subtype: str | None = None
    metadata: JsonDict | None = None  # Slack message metadata (event_type, event_payload)
    history: list[JsonDict] = field(default_factory=list)
    files: list[JsonDict] = field(default_factory=list)  # file objects (bot.sim.slack_files)

    def visible_text(self) -> str:
        """What a reader sees: markdown_text, else the text blocks, else the fallback ``text``."""
        if self.markdown_text:
            return self.markdown_text
        parts = [t for block in self.blocks for t in block_texts(block)]
        return "\n".join(parts) if parts else self.text

    def has_button(self, action_id: str) -> bool:
        for block in self.blocks:
            elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
            elements.append(block.get("accessory") or {})
            if any(
                e.get("type") == "button" and e.get("action_id") == action_id
                for e in elements
                if isinstance(e, dict)
            ):
                return True
        return False


class Workspace:
    """One workspace with one bot installed: conversations, people, messages (by channel and
    ts, with their history on `clock`), and what the bot made that is not a message
    (ephemeral messages, assistant statuses). `on_change` callbacks hear of every message
    posted, updated or deleted; `changed` is set on any change, a call included."""

    def __init__(
        self, *, team_id: str, bot_user_id: str, bot_id: str, clock: Callable[[], float]
    ) -> None:
        self.team_id, self.bot_user_id, self.bot_id = team_id, bot_user_id, bot_id
        self.users: dict[str, JsonDict] = {}
        self.bots: dict[str, JsonDict] = {}
        self.ephemerals: list[JsonDict] = []
        self.statuses: list[tuple[str, str, str]] = []
        self.on_change: list[Callable[[str, SimMessage], None]] = []
        self.changed = asyncio.Event()  # replaced by a new one at each change
        self._clock = clock
        self._channels: dict[str, bool] = {}  # channel id -> the bot is a member
        self._messages: dict[tuple[str, str], SimMessage] = {}
        self._ts_micros = 0
        self.add_user(bot_user_id, "slackstream", is_bot=True)
        self.bots[bot_id] = {
            "id": bot_id,
            "name": "slackstream",
            "user_id": bot_user_id,
            "deleted": False,
            "app_id": "A0001",
        }

    # --- people and conversations ------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        is_bot: bool = False,
        is_admin: bool = False,
        real_name: str | None = None,
    ) -> None:
        shown = real_name or name
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": shown,
            "deleted": False,
            "is_bot": is_bot,
            "is_admin": is_admin,
            "is_owner": False,
            "profile": {"real_name": shown, "display_name": name},
        }

    def add_channel(self, channel_id: str, *, is_im: bool = False, members: bool = True) -> None:
        """Declare a conversation; ``members=False`` makes the bot an outsider (not_in_channel).

        A DM (``is_im``) always includes the bot.
        """
        self._channels[channel_id] = members or is_im

    def channel(self, channel: object, *, post: bool = False) -> str:
        """A conversation the bot may read (and with `post`, write to), else the API's error."""
        member = self._channels.get(str(channel or ""))
        if member is None:
            raise ApiError("channel_not_found")
        if post and not member:
            raise ApiError("not_in_channel")
        return str(channel)

    # --- messages ----------------------------------------------------------------------------

    def post_user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        files: list[JsonDict] | None = None,
    ) -> SimMessage:
        """A person (or another bot, with ``bot_id``) writes, as if from a Slack client;
        ``files`` are file objects of `SlackSim.files` posted with the message."""
        if channel not in self._channels:
            raise ValueError(f"unknown channel {channel!r}: call add_channel() first")
        if bot_id is not None:
            self.bots.setdefault(
                bot_id, {"id": bot_id, "name": bot_id, "user_id": user, "deleted": False}
            )
        message = SimMessage(
            channel=channel,
            ts=self.next_ts(),
            user=user,
            bot_id=bot_id,
            text=text,
            thread_ts=self.thread_root(channel, thread_ts),
            files=list(files or []),
        )
        return self.store(message)

    def next_ts(self) -> str:
        """A new message's ts: as Slack's, the wall clock's microseconds (the bot compares it
        with the store's clock), strictly increasing within the workspace."""
        self._ts_micros = max(self._ts_micros + _TS_STEP, int(time.time() * 1_000_000))
        seconds, micros = divmod(self._ts_micros, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def thread_root(self, channel: str, thread_ts: str | None) -> str | None:
        """A reply to a reply joins the parent's thread; the parent learns it has a thread."""
        if not thread_ts:
            return None
        parent = self._messages.get((channel, thread_ts))
        if parent is None:
            return thread_ts
        if parent.thread_ts is None:
            parent.thread_ts = parent.ts
        return parent.thread_ts

    def store(self, message: SimMessage) -> SimMessage:
        """Keep a new message (its first version) and tell who listens."""
        self._messages[(message.channel, message.ts)] = message
        self._snapshot(message)
        self.notify("posted", message)
        return message

    def updated(self, message: SimMessage) -> None:
        """Keep the new version of an edited message and tell who listens."""
        message.edited = True
        self._snapshot(message)
        self.notify("updated", message)

    def delete(self, message: SimMessage) -> None:
        del self._messages[(message.channel, message.ts)]
        self.notify("deleted", message)

    def find(self, channel: str, ts: str) -> SimMessage | None:
        return self._messages.get((channel, ts))

    def message(self, channel: str, ts: str) -> SimMessage:
        found = self.find(channel, ts)
        if found is None:
            raise KeyError(f"no message {ts} in {channel}")
        return found

    def thread(self, channel: str, thread_ts: str) -> list[SimMessage]:
        """The parent and its replies, oldest first."""
        found = [
            m
            for (c, _), m in self._messages.items()
            if c == channel and thread_ts in (m.ts, m.thread_ts)
        ]
        return sorted(found, key=lambda m: ts_key(m.ts))

    def bot_replies(self, channel: str, thread_ts: str) -> list[SimMessage]:
        return [m for m in self.thread(channel, thread_ts) if m.user == self.bot_user_id]

    def latest(self, count: int) -> list[SimMessage]:
        """The newest messages of every conversation, oldest first."""
        return sorted(self._messages.values(), key=lambda m: ts_key(m.ts))[-count:]

    def notify(self, kind: str | None = None, message: SimMessage | None = None) -> None:
        """Wake every waiter; with a message, first tell `on_change` what happened to it."""
        if kind is not None and message is not None:
            for callback in list(self.on_change):
                callback(kind, message)
        self.changed.set()
        self.changed = asyncio.Event()

    def _snapshot(self, message: SimMessage) -> None:
        message.history.append(
            {
                "at": self._clock(),
                "text": message.text,
                "blocks": list(message.blocks),
                "markdown_text": message.markdown_text,
            }
        )
