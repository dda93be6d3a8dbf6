"""The Slack messages of one answer, one a part: posted (never twice), found again in the
thread, edited within the workspace budget, removed. `message.AnswerMessage` builds on them to
deliver the answer's text for sure.

Every message of an answer carries Slack message metadata naming the answer and the part
(`slackstream_answer`: answer id, part number). Slack keeps metadata through edits, so a part
is found in the thread by its metadata whether it is still streaming or finished: a post whose
response was lost is adopted rather than posted twice, and a janitor finds every part.
A streaming part also carries the Stop button; a finished one never does, which is how a
message read back is known to be finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import render
from bot.budget import EditBudget
from bot.config import Settings
from bot.lease import Lease
from bot.logs import ContextLog
from bot.metrics import Metrics
from bot.pacing import EditKind, PacingPolicy
from bot.retry import Backoff
from bot.slackapi import Refusal, SlackCalls, SlackFailure
from bot.store import AnswerRecord, Store

Clock = Callable[[], float]

ANSWER_EVENT = "slackstream_answer"
# How long posting a message keeps being retried (rate limits, Slack errors) before it is left
# to a janitor, which tries again later.
POST_DEADLINE = 60.0
HURRIED_TRIES = 2  # failed tries a message still gets once the process is going away


def answer_metadata(answer_id: str, part: int, *, final: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"answer_id": answer_id, "part": part}
    if final:
        payload["final"] = True
    return {"event_type": ANSWER_EVENT, "event_payload": payload}


@dataclass(frozen=True)
class Tag:
    """What a message's metadata says about it: whose part it is, and whether it is final."""

    answer_id: str
    part: int
    final: bool


def answer_tag(message: dict[str, Any]) -> Tag | None:
    """The tag of a message the bot posted for an answer; a message of an older release (no
    metadata) is known by its Stop button as a live part 0."""
    metadata = message.get("metadata") or {}
    if isinstance(metadata, dict) and metadata.get("event_type") == ANSWER_EVENT:
        payload = metadata.get("event_payload") or {}
        try:
            return Tag(str(payload["answer_id"]), int(payload.get("part") or 0),
                       bool(payload.get("final")))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None
    stop_for = render.stop_button_answer_id(message)
    return Tag(stop_for, 0, False) if stop_for else None


@dataclass(frozen=True)
class AnswerRef:
    """Where an answer lives in Slack."""

    answer_id: str
    team_id: str
    channel: str
    thread_ts: str
    question_ts: str

    @classmethod
    def of(cls, record: AnswerRecord) -> AnswerRef:
        return cls(
            record.answer_id, record.team_id, record.channel, record.thread_ts, record.question_ts
        )


@dataclass(frozen=True)
class PostedPart:
    ts: str
    part: int
    final: bool  # the answer's final message (footer or [interrupted]): never touched again


class Delivery(enum.Enum):
    DELIVERED = "delivered"
    REFUSED = "refused"  # Slack will never take it (see `refusal`)
    GAVE_UP = "gave_up"  # it kept failing until the deadline; it may pass later


@dataclass(frozen=True)
class Sent:
    delivery: Delivery
    failure: SlackFailure | None = None

    @property
    def delivered(self) -> bool:
        return self.delivery is Delivery.DELIVERED

    @property
    def refusal(self) -> Refusal | None:
        return self.failure.refusal if self.failure is not None else None


DELIVERED = Sent(Delivery.DELIVERED)


class AnswerParts:
    """See the module docstring. `part`, `offset` and `ts` say where the answer stands (a
    janitor starts from the store's record of them)."""

    def __init__(
        self,
        *,
        slack: SlackCalls,
        store: Store,
        settings: Settings,
        policy: PacingPolicy,
        lease: Lease | None,
        ref: AnswerRef,
        metrics: Metrics,
        log: ContextLog,
        clock: Clock,
        hurry: asyncio.Event | None = None,
        part: int = 0,
        offset: int = 0,
        ts: str = "",
    ) -> None:
        self.slack = slack
        self.lease = lease
        self.ref = ref
        self.metrics = metrics
        self.log = log
        self.clock = clock
        # Set when the process is going away: retries stop waiting, and stop soon.
        self.hurry = hurry or asyncio.Event()
        self.budget = EditBudget(
            store=store,
            settings=settings,
            metrics=metrics,
            policy=policy,
            team_id=ref.team_id,
            answer_id=ref.answer_id,
            lease=lease,
            clock=clock,
            log=log,
            hurry=self.hurry,
        )
        self.part = part
        self.offset = offset
        self.ts = ts
        self.shown_upto = offset  # how much of the answer's text Slack shows
        self.plain = False  # Slack refused a rich payload for this message: send text only
        # A janitor's: a part may have been posted by the dead replica without a record of it,
        # so each post first looks for the part in the thread.
        self.adopt = False
        self.posted: list[str] = []  # every message this object posted (to remove a duplicate)
        # Who Claude may mention, by name, and whether a mention notifies (the operator's
        # choice); the answer fills in names once it has read the thread.
        self.mentions = render.Mentions(live_users=settings.allow_user_mentions)
        # Slack's feedback buttons for the final message (`AnswerMessage.finish`), when the
        # answer has them.
        self.feedback: render.FeedbackButtons | None = None
        self._hurried_tries = 0

    # -- finding -------------------------------------------------------------------------------

    async def find(self) -> list[PostedPart]:
        """The answer's messages in its thread, oldest first (reads the thread back)."""
        found: list[PostedPart] = []
        async for message in self.slack.thread(
            self.ref.channel,
            self.ref.thread_ts,
            oldest=self.ref.question_ts or None,
            with_metadata=True,
        ):
            tag = answer_tag(message)
            if tag is not None and tag.answer_id == self.ref.answer_id and message.get("ts"):
                found.append(PostedPart(str(message["ts"]), tag.part, tag.final))
        return found

    async def _find_part(self, part: int) -> str:
        try:
            parts = [p for p in await self.find() if p.part == part]
        except SlackFailure:
            return ""
        return parts[0].ts if parts else ""

    # -- posting -------------------------------------------------------------------------------

    async def post(self, payload: render.SlackPayload, *, deadline: float = POST_DEADLINE) -> Sent:
        """Post the current part's message (placeholder or continuation), retried (honouring
        Retry-After) until `deadline` seconds have passed. After a failure that may have taken
        effect the part is looked for in the thread first, so it is never posted twice."""
        backoff = Backoff.within(deadline, clock=self.clock)
        if self.adopt and (found := await self._find_part(self.part)):
            self._posted(found)  # a janitor finishing what a dead replica had posted
            return DELIVERED
        while True:
            try:
                data = await self.slack.call(
                    "chat.postMessage",
                    channel=self.ref.channel,
                    thread_ts=self.ref.thread_ts,
                    metadata=answer_metadata(self.ref.answer_id, self.part),
                    **payload.as_kwargs(),
                )
            except SlackFailure as e:
                if e.permanent:
                    return Sent(Delivery.REFUSED, e)
                wait = backoff.delay(e.retry_after)
                if wait is None or self._hurried():
                    return Sent(Delivery.GAVE_UP, e)
                await self._pause(wait)
                if e.may_have_taken_effect and (found := await self._find_part(self.part)):
                    self.log.warning("the message was posted after all; using it")
                    self._posted(found)
                    return DELIVERED
                continue
            self._posted(str(data["ts"]))
            return DELIVERED

    async def _pause(self, seconds: float) -> None:
        """A retry's wait, cut short when the process is going away."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.hurry.wait()

    def _hurried(self) -> bool:
        """True once the process is going away and this message had its last tries."""
        if not self.hurry.is_set():
            return False
        self._hurried_tries += 1
        return self._hurried_tries > HURRIED_TRIES

    def _posted(self, ts: str) -> None:
        self.ts = ts
        self.posted.append(ts)

    # -- editing -------------------------------------------------------------------------------

    async def update(
        self,
        payload: render.SlackPayload,
        kind: EditKind,
        *,
        budget_taken: bool = False,
        asked_at: float | None = None,
        wanted: Callable[[], bool] = lambda: True,
    ) -> bool:
        """One chat.update of the current message, budget first; False when the budget had no
        token for it (a skipped edit). A 429 pauses the whole workspace, then raises. A final
        edit also marks the message final in its metadata (what a janitor reads back)."""
        if not budget_taken and await self.budget.take(kind, asked_at=asked_at, wanted=wanted) > 0:
            return False
        final = {"metadata": answer_metadata(self.ref.answer_id, self.part, final=True)}
        try:
            await self.slack.call(
                "chat.update",
                channel=self.ref.channel,
                ts=self.ts,
                **payload.as_kwargs(),
                **(final if kind is EditKind.FINAL else {}),
            )
        except SlackFailure as e:
            if e.rate_limited:
                await self.budget.rate_limited(e.retry_after)
            raise
        self.metrics.edits.labels(kind.value).inc()
        return True

    # -- a line of its own, and removal --------------------------------------------------------

    async def notice(self, line: str) -> None:
        """A short line in the thread, as its own message (best effort)."""
        try:
            await self.slack.call(
                "chat.postMessage",
                channel=self.ref.channel,
                thread_ts=self.ref.thread_ts,
                **render.error_payload(line, mentions=self.mentions).as_kwargs(),
            )
        except SlackFailure as e:
            self.log.warning("could not post a notice", extra={"error": e.error})

    async def delete_posted(self) -> None:
        """Remove every message this object posted: another replica answers the question."""
        for ts in self.posted:
            try:
                await self.slack.call("chat.delete", channel=self.ref.channel, ts=ts)
            except SlackFailure as e:
                self.log.warning("could not remove a duplicate message", extra={"error": e.error})
