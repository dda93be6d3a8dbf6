"""What replicas agree on through the store, and the shapes they exchange.

An answer in flight is leased by the replica that streams it. The lease is a *token* (new at
each registration and each take-over) and a time on the store's own clock; every call that acts
for the answer presents the token, so a replica that lost the answer can never act for it again.
The same calls carry checkpoints: what the answer's message shows (its text, which message is
current, how far the answer got), so that whoever finishes the message, the owner or a janitor,
writes at least what readers already saw. Checkpoints also carry the answer's usage so far, so
that a janitor can count an answer whose replica died; an answer's usage is counted once
(`record_usage` marks its record in the same step). A finished answer leaves a tombstone, so
"finished" is never mistaken for "lost" (a Redis restarted empty).

Times are the store's: leases, buckets and expiries are measured by one clock (Redis `TIME`,
or the memory store's), never by comparing the wall clocks of different machines. Tests inject
a clock into either store.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from bot.lifecycle import Phase
from bot.slackts import as_number
from bot.store.ledger import (
    AdmissionView,
    ChannelOverride,
    FeedbackVote,
    SpendView,
    Thresholds,
    UsageCell,
    UsageEntry,
    UsageKeep,
    UsageTotals,
    VoteResult,
)
from bot.usage import Usage


class StoreError(Exception):
    """Raised by a store when its backend is unreachable or fails (wraps redis errors)."""


def thread_order(ts: str) -> float | None:
    """The order of a question in its thread (see `slackts.as_number`)."""
    return as_number(ts)


@dataclass(frozen=True)
class AnswerRecord:
    """One answer, as every replica sees it."""

    answer_id: str
    team_id: str
    channel: str
    thread_ts: str
    question_ts: str  # orders answers within a thread (one at a time, in question order)
    asker: str
    owner: str = ""  # the replica holding the lease (REPLICA_ID)
    incarnation: str = ""  # that replica's process: start-up recovery tells old from new
    token: str = ""  # the lease: new at each registration and take-over
    origin: str = ""  # the token of the registration this record descends from (kept by take-overs)
    phase: Phase = Phase.REGISTERED
    lease_until: float = 0.0  # on the store's clock
    started_at: float = 0.0  # on the store's clock
    message_ts: str = ""  # the message being written now ("" before it is posted)
    part: int = 0  # which message of the answer that is (long answers continue in new ones)
    offset: int = 0  # where that message's part starts in `text`
    text: str = ""  # the answer as far as it is (or is about to be) shown
    footer: str = ""  # the final footer, recorded when finishing
    # The notes the message ends with: the final ones once finishing; while streaming, the
    # Sources list of the text shown (a janitor adds `[interrupted]` after it).
    notes: tuple[str, ...] = ()
    outcome: str = ""  # how it ended (tombstones only)
    model: str = ""
    dedupe_keys: tuple[str, ...] = ()  # claimed again if the record has to be registered again
    # Claude's counts so far, as the stream reported them (checkpointed with the text).
    usage: Usage = field(default_factory=Usage)
    # Set by `record_usage` only (never registered): this answer's usage is in the counters.
    usage_counted: bool = False

    def fields(self) -> dict[str, str]:
        """The record as string fields (the text is kept apart: it grows by appends; the usage
        marker is the ledger's to write)."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if name in ("text", "usage_counted"):
                continue
            if name == "usage":
                out[name] = usage_json(self.usage)
            elif isinstance(value, tuple | list):
                out[name] = json.dumps(list(value))
            elif isinstance(value, float):
                out[name] = f"{value:.17g}"
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[str, str], text: str = "") -> AnswerRecord:
        """The inverse of `fields` (unknown fields, from a newer release, are ignored)."""
        values: dict[str, Any] = {"text": text}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            if f.name in ("notes", "dedupe_keys"):
                values[f.name] = tuple(json.loads(value)) if value else ()
            elif f.name in ("lease_until", "started_at"):
                values[f.name] = float(value) if value else 0.0
            elif f.name in ("part", "offset"):
                values[f.name] = int(value) if value else 0
            elif f.name == "phase":
                values[f.name] = Phase(value)
            elif f.name == "usage":
                values[f.name] = usage_from_json(value)
            elif f.name == "usage_counted":
                values[f.name] = value == "1"
            else:
                values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Checkpoint:
    """What to record about an answer with a lease call; None leaves a field as it is.

    `text` is appended where the stored text ends, if it ends at `text_at` (UTF-8 bytes): a
    checkpoint costs what is new, not the whole answer. With `text_at` None, `text` replaces
    the stored text (after a mismatch, or when a record is registered again)."""

    text: str | None = None
    text_at: int | None = None
    message_ts: str | None = None
    part: int | None = None
    offset: int | None = None
    phase: Phase | None = None
    footer: str | None = None
    notes: tuple[str, ...] | None = None
    usage: Usage | None = None

    def given(self) -> dict[str, Any]:
        """The fields to record (every edit builds one: read directly, not deep-copied)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def as_json(self) -> str:
        given = self.given()
        if "notes" in given:
            given["notes"] = json.dumps(list(given["notes"]))
        if "phase" in given:
            given["phase"] = str(given["phase"])
        if "usage" in given:
            given["usage"] = usage_json(given["usage"])
        return json.dumps(given, ensure_ascii=False)

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def usage_json(usage: Usage) -> str:
    """A record's usage field: its non-zero counts, by name (a few dozen bytes)."""
    counts = {name: n for name, n in asdict(usage).items() if n}
    return json.dumps(counts, separators=(",", ":"))


def usage_from_json(raw: str) -> Usage:
    """The inverse of `usage_json`; counts it does not know (a newer release's) are ignored."""
    try:
        counts = json.loads(raw) if raw else {}
    except ValueError:
        return Usage()
    if not isinstance(counts, dict):
        return Usage()
    known = {f.name for f in fields(Usage)}
    return Usage(**{k: int(v) for k, v in counts.items() if k in known and isinstance(v, int)})


class LeaseState(enum.StrEnum):
    HELD = "held"  # still ours
    LOST = "lost"  # another replica holds it now, or it was finished
    MISSING = "missing"  # no record at all: the store lost it (a Redis restarted empty)


@dataclass(frozen=True)
class LeaseReport:
    """The store's answer to a lease call."""

    state: LeaseState
    stop_by: str | None = None  # who pressed Stop, when someone did (HELD only)
    holder: AnswerRecord | None = None  # LOST: the record as it stands now
    text_rejected: bool = False  # the appended text did not line up: send it whole next time


@dataclass(frozen=True)
class Registration:
    registered: bool
    existing: AnswerRecord | None = None  # not registered: the record already there


@dataclass(frozen=True)
class EventClaim:
    first: bool  # nobody claimed this key before (within its ttl)
    data_age: float  # seconds since the store's data began: small after a restart that lost it


@dataclass(frozen=True)
class EditGrant:
    """The workspace budget's answer to one request for an edit."""

    wait: float  # 0.0: a token was taken; else seconds until one could be
    competing: int  # answers that asked this workspace's budget lately, the asker included
    lease: LeaseState | None = None  # the asking answer's lease, when a token was presented
    text_rejected: bool = False

    @property
    def granted(self) -> bool:
        return self.wait <= 0


class Store(Protocol):
    """The state replicas share. See the module docstring for leases, tokens and clocks."""

    kind: str  # "memory" or "redis", for health reports

    async def claim_event(self, key: str, ttl_seconds: float, token: str) -> EventClaim:
        """Claim `key` for `ttl_seconds`: first is True for the first claimer, and for a retry
        of that same claim (same `token`: a client re-sends a command whose reply it lost)."""
        ...

    async def get_thread(self, key: str) -> list[dict[str, Any]] | None:
        """A thread's messages as last read from Slack, or None."""
        ...

    async def put_thread(
        self, key: str, messages: list[dict[str, Any]], ttl_seconds: float
    ) -> None:
        """Remember a thread's messages. The ttl starts when the thread is first cached and is
        never extended by later writes, so a cached thread (with a message since edited or
        deleted) is read whole again within `ttl_seconds` however busy the thread is."""
        ...

    async def register(
        self,
        record: AnswerRecord,
        *,
        lease_seconds: float,
        take_back: bool = False,
        dedupe_ttl_seconds: float,
    ) -> Registration:
        """Make an answer visible to every janitor, leased to `record.token`, and claim its
        dedupe keys. Refused when another registration of the same answer is there, unless
        `take_back` (an answer whose record the store lost registers again and wins over a
        newer registration of its question); a finished answer is never taken back."""
        ...

    async def renew(
        self,
        answer_id: str,
        token: str,
        *,
        lease_seconds: float,
        checkpoint: Checkpoint | None = None,
    ) -> LeaseReport:
        """Renew the lease and record the checkpoint in one step; says whether someone pressed
        Stop. Nothing changes unless `token` holds the lease."""
        ...

    async def finish(self, answer_id: str, token: str, *, outcome: str) -> LeaseState:
        """Leave a tombstone: the answer is final. HELD when done (again, for a retry), LOST
        when another token holds the answer, MISSING when there is no record."""
        ...

    async def get(self, answer_id: str) -> AnswerRecord | None: ...

    async def count_in_flight(self, team_id: str, user: str) -> tuple[int, int]:
        """(answers in flight for `user` in `team_id`, answers in flight in `team_id`)."""
        ...

    async def earlier_in_thread(self, channel: str, thread_ts: str, question_ts: str) -> int:
        """How many unfinished answers in the thread answer a question asked before
        `question_ts` (Slack ts order); a ts that is not a Slack ts orders nothing."""
        ...

    async def claim_lapsed(
        self,
        *,
        new_owner: str,
        incarnation: str,
        lease_seconds: float,
        previous_owner: str | None = None,
        limit: int = 100,
    ) -> list[AnswerRecord]:
        """Take over answers whose lease ran out; or, with `previous_owner`, only the answers
        that replica id holds from another incarnation, whatever their lease (a restarted
        replica recovers its earlier life's answers at once, and never its current ones).
        Each answer goes to exactly one caller however many race; the claimed records come
        back with a new token and lease."""
        ...

    async def request_cancel(self, answer_id: str, by_user: str, ttl_seconds: float = 3600) -> None:
        """Flag the answer and signal every replica; the flag outlives the signal."""
        ...

    def cancel_signals(self) -> AsyncIterator[tuple[str, str]]:
        """(answer_id, by_user) as cancels are requested on any replica; best effort (the flag
        is the record). Ends when the store is closed."""
        ...

    async def take_edit_token(
        self,
        team_id: str,
        *,
        per_minute: float,
        burst: float,
        reserve: float = 0.0,
        answer_id: str = "",
        token: str = "",
        checkpoint: Checkpoint | None = None,
        waits: bool = False,
        waited: float = 0.0,
    ) -> EditGrant:
        """Take one `chat.update` from the workspace budget every replica shares, or learn how
        long to wait. With the answer's lease `token`, the grant says whether the lease still
        holds, and a granted edit records `checkpoint` (what it is about to show) in the same
        step: at no extra round trip, the store always holds at least what Slack shows.
        An edit that `waits` for its token (asking for `waited` seconds so far) holds a place in
        the budget's waiting line while refused, under `answer_id` (see `pacing`).
        ValueError unless 0 <= reserve <= burst - 1."""
        ...

    async def pause_edits(self, team_id: str, seconds: float) -> None:
        """Slack answered 429: no replica gets a token for `seconds` (the later pause wins)."""
        ...

    async def ping(self) -> None:
        """Raise StoreError when the backend is unreachable."""
        ...

    async def close(self) -> None:
        """Release the backend and end every `cancel_signals` iteration."""
        ...

    # -- running for a company: usage, budgets, feedback, channel overrides (`ledger.py`) ----

    async def admission_view(
        self, team_id: str, user: str, channel: str, *, day: str, month: str
    ) -> AdmissionView:
        """What admitting a question needs, in one round trip: `count_in_flight`'s two
        counts, the spend of `user` on `day` and in `month` and of the workspace in `month`,
        and `channel`'s override ("" for none)."""
        ...

    async def record_usage(
        self, entry: UsageEntry, *, thresholds: Thresholds, keep: UsageKeep
    ) -> UsageTotals:
        """Add one answer's usage to its cell and to the spend roll-ups, in one step; says
        which `thresholds` this answer's addition crossed (from below to at or above).

        With `entry.answer_id`, the answer's record is marked counted in that same step, and
        an answer whose record is marked already adds nothing (`UsageTotals.counted` False):
        its owner and a janitor finishing it never both count it. An answer without a record
        (unregistered, or its tombstone expired) is counted each time."""
        ...

    async def usage_spend(self, team_id: str, user: str, *, day: str, month: str) -> SpendView:
        """The spend of `user` on `day` and in `month`, and of the workspace in `month`."""
        ...

    async def usage_cells(
        self, *, since: str, until: str, team_id: str | None = None
    ) -> list[UsageCell]:
        """Every usage cell from day `since` to day `until` (inclusive), of one workspace or
        of all, ordered by day."""
        ...

    async def record_feedback(
        self, vote: FeedbackVote, *, keep_seconds: float, cell_keep_seconds: float
    ) -> VoteResult:
        """Record one person's vote on one answer: once per person and answer, a new value
        replacing the old one in the answer's usage cell too (kept `cell_keep_seconds` more
        at least; 0 or less: the cell is past retention and is left alone)."""
        ...

    async def set_channel_override(
        self, team_id: str, channel: str, override: ChannelOverride | None
    ) -> None:
        """Set a channel's override, or remove it (None)."""
        ...

    async def channel_overrides(self, team_id: str) -> dict[str, ChannelOverride]:
        """Every channel override of a workspace, by channel."""

    # -- files in threads -----------------------------------------------------------

    async def get_file(self, key: str) -> dict[str, Any] | None:
        """A Slack file as last prepared for Claude (`put_file`), or None."""
        ...

    async def put_file(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        """Keep a prepared file for `ttl_seconds` from this write, so a follow-up question in
        the thread does not download it again. A memory store keeps a bounded amount."""
        ...


def check_budget(per_minute: float, burst: float, reserve: float) -> None:
    # A reserve of the whole burst would make every ordinary caller wait forever.
    if per_minute <= 0 or burst < 1 or not 0 <= reserve <= burst - 1:
        raise ValueError(
            f"edit budget needs per_minute > 0 and 0 <= reserve <= burst - 1, "
            f"got per_minute={per_minute}, burst={burst}, reserve={reserve}"
        )
