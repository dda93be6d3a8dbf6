"""The life of an answer, written down once: its phases, the moves between them, how it ends,
and the requests that can stop it. Pure: no I/O.

An answer moves forward only::

    registered ──> posted ──> streaming ──> finishing ──> finished
        │            │                          ▲
        └────────────┴──────────────────────────┘   (stopped before the stream started)
        └─────────────────────────────────────────────> finished (nothing could be posted)

`registered`: the store knows the answer, Slack shows nothing yet. `posted`: the placeholder is
in the thread. `streaming`: Claude's answer streams into the message. `finishing`: the stream
is over and the final edit (footer or `[interrupted]`) is going out; the store holds the final
footer and notes, so whoever finishes the message writes the same text. `finished`: the
message is final (or can never be edited again) and the store keeps a tombstone.

The phase is recorded in the store with the answer, so a janitor that takes an answer over
knows how far it got. Stopping is a value (`StopRequest`) that the answer reads at defined
points, never a cancellation of the answer's task.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.StrEnum):
    REGISTERED = "registered"
    POSTED = "posted"
    STREAMING = "streaming"
    FINISHING = "finishing"
    FINISHED = "finished"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.REGISTERED: frozenset({Phase.POSTED, Phase.FINISHING, Phase.FINISHED}),
    Phase.POSTED: frozenset({Phase.STREAMING, Phase.FINISHING}),
    Phase.STREAMING: frozenset({Phase.FINISHING}),
    Phase.FINISHING: frozenset({Phase.FINISHED}),
    Phase.FINISHED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A move the life of an answer does not allow: a bug, never a user's doing."""


def advance(current: Phase, to: Phase) -> Phase:
    """`to`, when an answer in `current` may move there; InvalidTransition otherwise."""
    if to not in TRANSITIONS[current]:
        raise InvalidTransition(f"an answer cannot move from {current} to {to}")
    return to


class Outcome(enum.StrEnum):
    """How an answer ended; the label of `slackstream_answers_finished_total`."""

    COMPLETED = "completed"  # the whole answer and its footer
    INTERRUPTED = "interrupted"  # the partial answer and `[interrupted: reason]`
    STOPPED = "stopped"  # someone pressed Stop
    FAILED = "failed"  # Claude failed before any text: one clear line
    UNDELIVERABLE = "undeliverable"  # Slack refuses the message for good (deleted, archived)
    HANDED_OVER = "handed_over"  # another replica finishes this same message
    DUPLICATE = "duplicate"  # another replica answers this question; ours was removed
    REJECTED = "rejected"  # over a cap: a polite line instead of an answer
    RECOVERED = "recovered"  # finished by a janitor after its replica died
    ABANDONED = "abandoned"  # could not be finished here; the store hands it to a janitor


class StopKind(enum.StrEnum):
    USER = "user"  # the Stop button
    SHUTDOWN = "shutdown"  # SIGTERM and the grace period is over
    LEASE_LOST = "lease_lost"  # another replica holds the answer now
    DISPLACED = "displaced"  # another replica answers the same question in its own message
    SLACK_REFUSED = "slack_refused"  # Slack will never accept an edit of this message


@dataclass(frozen=True)
class StopRequest:
    """Why an answer must stop streaming now. `reason` is what a reader sees after
    `[interrupted:`; `detail` is for the log line (a Slack error name, the new owner)."""

    kind: StopKind
    reason: str
    detail: str = ""

    @property
    def finishes_here(self) -> bool:
        """Whether this replica writes the final message. Not when another replica holds the
        answer (it finishes the same message) or answers the question in its own message."""
        return self.kind not in (StopKind.LEASE_LOST, StopKind.DISPLACED)

    @property
    def outcome(self) -> Outcome:
        return {
            StopKind.USER: Outcome.STOPPED,
            StopKind.SHUTDOWN: Outcome.INTERRUPTED,
            StopKind.LEASE_LOST: Outcome.HANDED_OVER,
            StopKind.DISPLACED: Outcome.DUPLICATE,
            StopKind.SLACK_REFUSED: Outcome.UNDELIVERABLE,
        }[self.kind]


SHUTDOWN_REASON = "the bot restarted; please ask again"
RECOVERY_REASON = "the bot restarted while answering; please ask again"


def stopped_by(user: str) -> StopRequest:
    return StopRequest(StopKind.USER, f"stopped by <@{user}>", detail=user)


def shutdown() -> StopRequest:
    return StopRequest(StopKind.SHUTDOWN, SHUTDOWN_REASON)
