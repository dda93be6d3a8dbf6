"""When an edit may go out. Pure: no I/O, the clock is passed in.

Two limits meet here. Per message, edits are at least `interval` apart so a reader sees steady
progress rather than flicker. Per workspace, every answer in flight (on every replica) shares
Slack's `chat.update` budget (Tier 3, ~50 a minute), held as a token bucket in the store.

Priorities within that shared budget are expressed as a *reserve*: the number of tokens that must
remain in the bucket after an edit takes one. First text and final edits use reserve 0, so they get
the last token; an intermediate edit asks for a reserve that shrinks as its text grows stale, so
when tokens are scarce the stalest answers are refreshed first and fresh ones skip their turn.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EditKind(enum.Enum):
    FIRST = "first"  # the first words replace the placeholder
    INTERMEDIATE = "intermediate"
    FINAL = "final"  # the finished message (footer or [interrupted])
    CONTINUATION = "continuation"  # a full part of a long answer, closed before the next part

    @property
    def must_send(self) -> bool:
        """Edits that wait for budget instead of being skipped: losing them loses content."""
        return self is not EditKind.INTERMEDIATE


@dataclass
class MessagePacer:
    """Per-message pacing: the first edit at once, then one per `interval`."""

    interval: float
    last_sent_at: float | None = None

    def wait(self, now: float, kind: EditKind) -> float:
        """Seconds to wait before an edit of this kind may start (0 means now)."""
        if kind.must_send or self.last_sent_at is None:
            return 0.0
        return max(0.0, self.last_sent_at + self.interval - now)

    def sent(self, now: float) -> None:
        self.last_sent_at = now


def edit_reserve(kind: EditKind, *, staleness: float, interval: float, max_reserve: float) -> float:
    """Tokens that must stay in the workspace bucket for this edit to take one.

    `staleness` is how long the newest streamed text has waited to be shown. An intermediate edit
    that is just one interval stale keeps `max_reserve` tokens for others; one that is k intervals
    stale keeps max_reserve/k, down to one token, which is always left for first and final edits.
    """
    if kind.must_send:
        return 0.0
    if max_reserve <= 1.0:
        return 1.0
    periods = max(staleness / interval, 1.0) if interval > 0 else 1.0
    return max(1.0, max_reserve / periods)


def refill(tokens: float, last: float, now: float, per_minute: float, burst: float) -> float:
    """Tokens in a bucket of capacity `burst` refilled at `per_minute`, from `last` to `now`.

    Mirrored line for line by the store's Lua token bucket: change both together. A clock that
    runs behind `last` (another replica's) adds nothing rather than taking tokens away.
    """
    elapsed = max(0.0, now - last)
    return min(burst, tokens + elapsed * per_minute / 60.0)


def retry_after_seconds(header: str | None, default: float = 1.0) -> float:
    """Slack's `Retry-After` header (seconds) as a float, tolerating a missing or odd value."""
    if header is None:
        return default
    try:
        value = float(header)
    except ValueError:
        return default
    return value if value >= 0 else default
