"""The one way the bot waits between attempts of a step that may pass later: exponential backoff
from `first` to `cap`, what the other side asked for when it said (Slack's Retry-After), and an
optional deadline after which there is no next attempt. Callers sleep the way they need to
(cut short at shutdown, or when a store closes); this only says how long."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float = 0.5
    cap: float = 10.0
    deadline: float | None = None  # on `clock`; None: no limit
    clock: Callable[[], float] = time.monotonic
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    @classmethod
    def within(
        cls, seconds: float, *, clock: Callable[[], float] = time.monotonic, **kw: float
    ) -> Backoff:
        """A backoff whose attempts end `seconds` from now."""
        return cls(deadline=clock() + seconds, clock=clock, **kw)

    def delay(self, asked: float | None = None) -> float | None:
        """The wait before the next attempt (`asked` when the other side said), or None when
        that attempt would come after the deadline."""
        wait = asked if asked is not None and asked > 0 else self._next
        self._next = min(self._next * 2, self.cap)
        if self.deadline is not None and self.clock() + wait > self.deadline:
            return None
        return wait

    @property
    def expired(self) -> bool:
        return self.deadline is not None and self.clock() > self.deadline

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self._next = self.first
