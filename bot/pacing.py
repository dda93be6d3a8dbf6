"""When an edit may go out. Pure: no I/O, the clock is passed in.

Two limits meet here. Per message, edits are at least `interval` apart so a reader sees steady
progress rather than flicker. Per workspace, every answer in flight (on every replica) shares
Slack's `chat.update` budget (Tier 3, ~50 a minute), held as a token bucket in the store.

Priorities within that shared budget are expressed as a *reserve*: the number of tokens that must
remain in the bucket after an edit takes one. Each waiting edit asks again when the bucket reaches
its own threshold (1 + reserve), so lower reserves are served first:

- final and continuation edits, and an answer's first text while it is fresh (within
  FIRST_TEXT_PRIORITY_SECONDS of its first words), ask for (almost) no reserve, in arrival order;
- every other edit waits for its text's *fair period*, the time the budget needs to go once round
  every answer competing for it (60 * competing / per_minute); once that has passed, it takes the
  next token, stalest first;
- before that, it may only use a token the others can spare: a *cushion* of one token per other
  answer competing stays in the bucket (each of them will need its final edit).

Final and continuation edits, which wait as long as it takes, stand in the bucket's *waiting
line*, ordered by when they began asking (also the order of their reserves). A waiter keeps one
token for each waiter ahead of it, and a refused one is told to come back once those tokens have
come too, not at the next token: a line of N final edits asks about N times in all, not N times
per token (and is served in order however late each wakes). A waiter that gives up (its answer
was stopped, its process is going away) just stops asking; its place lapses a little after it
was due back, so it holds the others up by at most that long.

In a quiet workspace nothing is held back and an answer is edited every `interval`. In a busy one
the budget goes to finals and to the text that has waited longest, and the cushion lets a final
edit go out as soon as its answer ends instead of queueing behind refreshes. A first text that
misses its moment (the burst was spent) waits its turn like any stale text: with many answers
asked at once, a short answer may go from the placeholder straight to its final edit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EditKind(enum.Enum):
    FIRST = "first"  # the first words replace the placeholder
    INTERMEDIATE = "intermediate"
    FINAL = "final"  # the finished message (footer or [interrupted])
    CONTINUATION = "continuation"  # a full part of a long answer, closed before the next part
    STATUS = "status"  # a status line in place of the placeholder ("Thinking…", "Waiting…")

    @property
    def must_send(self) -> bool:
        """Edits that wait for budget instead of being skipped: losing them loses content (a
        first text waits only while it is fresh: see `budget_claim`)."""
        return self in (EditKind.FIRST, EditKind.FINAL, EditKind.CONTINUATION)


@dataclass(frozen=True)
class PacingPolicy:
    """How one answer's edits are paced. `shared()` is the bot's; the pacing benchmark builds
    other bots' policies from the same fields (`bench/peers.py`) to run them through the same
    pipeline for comparison."""

    name: str
    interval: float  # least time between two edits of one message (0: none)
    every_deltas: int = 0  # edit only after this many new stream deltas (0: any)
    shared_budget: bool = True  # take tokens from the workspace bucket; pause on a 429
    final_attempts: int | None = None  # None: retry the final edit until Slack accepts it

    @classmethod
    def shared(cls, interval: float) -> PacingPolicy:
        return cls("shared-budget", interval)


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


@dataclass(frozen=True)
class PublishView:
    """What the publisher knows when it decides on its next edit (times on one clock)."""

    now: float
    text_length: int  # characters of answer text received so far
    shown_upto: int  # characters of it that Slack shows
    deltas: int  # stream deltas received so far
    first_shown: bool  # the first words have replaced the placeholder
    thinking: bool  # Claude is thinking (before any text)
    thinking_shown: bool
    status_pending: bool = False  # a tool's progress line changed since the last edit


@dataclass(frozen=True)
class EditPlan:
    """The publisher's next move: `kind` None means nothing is worth an edit now; otherwise
    the edit may go after `wait` seconds (0.0: ask the workspace budget now)."""

    kind: EditKind | None = None
    wait: float = 0.0


def plan_edit(view: PublishView, pacer: MessagePacer) -> EditPlan:
    """What edit, if any, goes out next while the answer streams: the new text, paced per
    message (with a running tool's progress line, which is paced as text is); or a status line
    while Claude thinks before writing. The budget then says
    whether it goes now (`budget_claim`). The final edit is not planned: it always goes."""
    text_pending = view.text_length > view.shown_upto
    if not text_pending and not view.status_pending:
        if view.thinking and not view.thinking_shown and not view.text_length:
            return EditPlan(EditKind.STATUS)
        return EditPlan()
    kind = EditKind.FIRST if text_pending and not view.first_shown else EditKind.INTERMEDIATE
    wait = pacer.wait(view.now, kind, view.deltas)
    return EditPlan() if wait is None else EditPlan(kind, wait)


# Must-send edits ask for a reserve below MUST_SEND_SPREAD, every other edit for at least
# INTERMEDIATE_FLOOR, so must-send edits are always served first.
MUST_SEND_SPREAD = 0.05
INTERMEDIATE_FLOOR = 0.1
MUST_SEND_HORIZON = 60.0  # seconds of waiting over which a must-send edit's reserve falls to 0
# A first text has a must-send edit's priority this long after its words arrived ("at once");
# after that it is stale text like any other (it is never dropped: the final edit shows it).
FIRST_TEXT_PRIORITY_SECONDS = 1.0
# An answer counts as competing for its workspace's budget this long after it last asked: answers
# with unshown text ask every few seconds. Finished answers stay counted until then, which smooths
# the count: a batch of answers asked together keeps its fair period while its finals go out.
COMPETING_WINDOW_SECONDS = 20.0
# A waiter's place in the waiting line lapses this long after it was due to ask again.
LINE_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class BudgetClaim:
    """What an edit asks of the workspace budget."""

    reserve: float  # tokens that must stay in the bucket after this edit takes one
    waits: bool  # True: wait until a token comes; False: skip this edit when there is none
    # True: waits for as long as it takes (final, continuation), so it stands in the waiting
    # line. A fresh first text waits only for a moment and asks again at each token meanwhile.
    lines_up: bool = False


def fair_period(*, competing: int, per_minute: float, interval: float) -> float:
    """Seconds the budget needs to edit each competing answer once (never below `interval`)."""
    return max(interval, 60.0 * max(1, competing) / per_minute)


def budget_claim(
    kind: EditKind,
    *,
    staleness: float,
    waited: float,
    interval: float,
    competing: int,
    per_minute: float,
    burst: float,
) -> BudgetClaim:
    """How an edit of `kind` competes for the workspace budget (see the module docstring).

    `staleness`: seconds the oldest text not yet shown has waited (for a first text, since its
    first words); `waited`: seconds this edit has been asking; `competing`: answers sharing the
    workspace's budget, this one included (as the store last counted them).
    """
    if kind is EditKind.FIRST and staleness > FIRST_TEXT_PRIORITY_SECONDS:
        kind = EditKind.INTERMEDIATE
    if kind.must_send:
        reserve = MUST_SEND_SPREAD * max(0.0, 1.0 - waited / MUST_SEND_HORIZON)
        return BudgetClaim(reserve, True, lines_up=kind is not EditKind.FIRST)
    period = fair_period(competing=competing, per_minute=per_minute, interval=interval)
    if staleness >= period:  # its turn has come
        return BudgetClaim(INTERMEDIATE_FLOOR + MUST_SEND_SPREAD * period / staleness, False)
    top = INTERMEDIATE_FLOOR + MUST_SEND_SPREAD  # the highest reserve of an edit whose turn came
    cushion = max(0.0, min(burst - 1.0 - top, competing - 1.0))
    return BudgetClaim(top + cushion - MUST_SEND_SPREAD * staleness / period, False)


@dataclass
class TokenBucket:
    """A workspace's `chat.update` budget: `burst` tokens, refilled at `per_minute`; a pause
    (after Slack's 429) holds every token until it ends.

    The one definition of the bucket: the memory store and the Slack simulator use it, and the
    Redis store's Lua (`store.lua.TAKE_EDIT_TOKEN`) follows it line for line (a test drives
    both through the same sequence). A clock that runs behind `last` adds nothing rather than
    taking tokens away.
    """

    tokens: float
    last: float
    pause_until: float = 0.0
    # The waiting line: waiter -> (when it began asking, when its place lapses).
    line: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def full(cls, burst: float, now: float) -> TokenBucket:
        return cls(tokens=burst, last=now)

    def take(
        self,
        now: float,
        *,
        per_minute: float,
        burst: float,
        reserve: float = 0.0,
        waiter: str = "",
        waited: float = 0.0,
    ) -> float:
        """Take a token if one above `reserve` is there and no pause holds: 0.0. Else the
        seconds until one could be (a reserve keeps tokens for edits that must get through).

        A `waiter` (an edit that will ask again until served, asking for `waited` seconds so
        far) stands in the waiting line while refused: its reserve then also keeps one token
        for each waiter that began asking before it, so the line is served in order."""
        self.tokens = min(burst, self.tokens + max(0.0, now - self.last) * per_minute / 60.0)
        self.last = max(self.last, now)
        for name, (_, lapses) in list(self.line.items()):
            if lapses < now:
                del self.line[name]
        since, ahead = now - waited, 0
        if waiter:  # its place: by when it began asking, then by name (as a sorted set ranks)
            self.line.pop(waiter, None)
            ahead = sum(1 for name, (b, _) in self.line.items() if (b, name) < (since, waiter))
        if self.pause_until <= now and self.tokens - 1 >= reserve + ahead:
            self.tokens -= 1
            return 0.0
        wait = max((ahead + reserve + 1 - self.tokens) * 60.0 / per_minute, self.pause_until - now)
        if waiter:
            self.line[waiter] = (since, now + wait + LINE_GRACE_SECONDS)
        return wait

    def pause(self, until: float) -> None:
        self.pause_until = max(self.pause_until, until)


def retry_after_seconds(header: str | None, default: float = 1.0) -> float:
    """Slack's `Retry-After` header (seconds) as a float, tolerating a missing or odd value."""
    if header is None:
        return default
    try:
        value = float(header)
    except ValueError:
        return default
    return value if value >= 0 else default
