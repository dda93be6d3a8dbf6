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


@dataclass(frozen=True)
class PacingPolicy:
    """How one answer's edits are paced. `shared()` is the bot's; the others are the policies
    peers use, kept so the benchmark can run them through the same pipeline for comparison."""

    name: str
    interval: float  # least time between two edits of one message (0: none)
    every_deltas: int = 0  # edit only after this many new stream deltas (0: any)
    shared_budget: bool = True  # take tokens from the workspace bucket; pause on a 429
    final_attempts: int | None = None  # None: retry the final edit until Slack accepts it

    @classmethod
    def shared(cls, interval: float) -> PacingPolicy:
        return cls("shared-budget", interval)

    @classmethod
    def every_20_deltas(cls) -> PacingPolicy:
        """Edit every 20 stream chunks, no shared budget; the SDK's one 429 retry, then give up."""
        return cls("every-20-chunks", 0.0, every_deltas=20, shared_budget=False, final_attempts=2)

    @classmethod
    def one_per_second(cls) -> PacingPolicy:
        """One edit per second per message, no shared budget; one 429 retry, then give up."""
        return cls("1-per-second", 1.0, shared_budget=False, final_attempts=2)


@dataclass
class MessagePacer:
    """Per-message pacing: the first edit at once, then as the policy allows."""

    policy: PacingPolicy
    last_sent_at: float | None = None
    deltas_at_last_edit: int = 0

    def wait(self, now: float, kind: EditKind, deltas: int = 0) -> float | None:
        """Seconds to wait before an edit of this kind may start (0: now; None: not until more
        of the answer has arrived)."""
        if kind.must_send or self.last_sent_at is None:
            return 0.0
        if deltas - self.deltas_at_last_edit < self.policy.every_deltas:
            return None
        return max(0.0, self.last_sent_at + self.policy.interval - now)

    def sent(self, now: float, deltas: int = 0) -> None:
        self.last_sent_at = now
        self.deltas_at_last_edit = deltas


# Must-send edits keep a reserve below this, intermediate edits at least INTERMEDIATE_FLOOR, so a
# must-send edit always reaches its threshold before any intermediate edit does.
MUST_SEND_SPREAD = 0.05
INTERMEDIATE_FLOOR = 0.1
MUST_SEND_HORIZON = 60.0  # seconds of waiting over which a must-send edit's reserve falls to 0


def edit_reserve(
    kind: EditKind,
    *,
    staleness: float,
    interval: float,
    max_reserve: float,
    waited: float = 0.0,
) -> float:
    """Tokens that must stay in the workspace bucket for this edit to take one.

    The bucket refills continuously and each waiting edit asks again when its own threshold
    (1 + reserve) is reached, so lower reserves are served first:
    - first-text and final edits (must-send): between 0 and MUST_SEND_SPREAD, lower the longer
      they have `waited`, so they go out in the order they arrived;
    - intermediate edits: `max_reserve` when one interval stale, max_reserve/k when k intervals
      stale (never below INTERMEDIATE_FLOOR): the budget goes round the answers, stalest first.
    """
    if kind.must_send:
        return MUST_SEND_SPREAD * max(0.0, 1.0 - waited / MUST_SEND_HORIZON)
    periods = max(staleness / interval, 1.0) if interval > 0 else 1.0
    return max(INTERMEDIATE_FLOOR, max_reserve / periods)


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
