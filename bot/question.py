"""What the bot was asked, and who the bot is: the inputs of an answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Question:
    """A message the bot was asked to answer."""

    team_id: str
    channel: str
    thread_ts: str  # the thread to answer in (the question's own ts when it starts one)
    ts: str
    user: str
    text: str
    received_at: float = field(default_factory=time.monotonic)

    @property
    def answer_id(self) -> str:
        """Known before anything is posted (the placeholder carries it on its Stop button), and
        the same on every replica, so two deliveries of one question name one answer."""
        return f"{self.team_id}-{self.channel}-{self.ts}"


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str
    team_id: str = ""
