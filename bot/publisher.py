"""Paced edits of one answer's message while Claude's stream runs: what to show next comes
from `pacing.plan_edit`, when from the workspace budget; long answers move on to the next
message; a status line says when Claude is thinking. Every edit first records its text in the
store (through the lease, with the budget's token), so the store holds what readers see, and
the Sources list that text cites (as the record's notes until the answer finishes). Claude's
usage so far rides along with the next lease call too, so that a janitor finishing the answer
after its replica died can count it.

The publisher stops when the stream ends or the answer is asked to stop (`ending`); Slack
refusing the message for good becomes a stop request, never a retry. After the final edit it
clears the thread's status line, and times the first text if only that edit showed any."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bot import render
from bot.budget import EditBudget
from bot.claude import StreamState
from bot.lease import Lease
from bot.lifecycle import StopKind, StopRequest
from bot.logs import ContextLog
from bot.message import AnswerMessage, Delivery, Sent
from bot.metrics import Metrics
from bot.pacing import EditKind, MessagePacer, PublishView, plan_edit
from bot.question import Question
from bot.slackapi import Refusal, SlackCalls, SlackFailure
from bot.usage import Usage

log = logging.getLogger(__name__)

Clock = Callable[[], float]

THINKING_LABEL = "Thinking…"


class Publisher:
    """See the module docstring."""

    def __init__(
        self,
        *,
        q: Question,
        state: StreamState,
        message: AnswerMessage,
        budget: EditBudget,
        lease: Lease,
        pacer: MessagePacer,
        slack: SlackCalls,
        metrics: Metrics,
        clock: Clock,
        log: ContextLog,
        placeholder_text: str,
        interval: float,
        ending: asyncio.Event,
        wanted: Callable[[], bool],
        on_stop: Callable[[StopRequest], object],
    ) -> None:
        self.q = q
        self.answer_id = q.answer_id
        self.state = state
        self.message = message
        self.budget = budget
        self.lease = lease
        self.pacer = pacer
        self.slack = slack
        self.metrics = metrics
        self.clock = clock
        self.log = log
        self.placeholder_text = placeholder_text
        self.interval = interval
        self.ending = ending
        self.wanted = wanted
        self.on_stop = on_stop
        self.first_shown = False
        self.thinking_shown = False
        self.activity_shown = 0  # the trail's `activity_seq` the message shows
        self.sources_noted = 0  # how many cited sources the store's record lists
        self.thread_status_set = False  # assistant.threads.setStatus was used: clear it at the end
        self.usage_noted: Usage | None = None  # the stream's usage the lease was last given

    async def run(self) -> None:
        """Paced edits while the stream runs, until it ends or a stop is requested."""
        st = self.state
        retry_in: float | None = None
        while not self.ending.is_set():
            if retry_in is None:
                await st.changed.wait()
            else:
                await self._nap(retry_in)
            st.changed.clear()
            retry_in = None
            if st.usage is not self.usage_noted:  # new at each message_start and message_delta
                self.usage_noted = st.usage
                if st.usage is not None:
                    self.lease.note(usage=st.usage)
            if self.ending.is_set():
                break
            plan = plan_edit(
                PublishView(
                    now=self.clock(),
                    text_length=st.length,
                    shown_upto=self.message.shown_upto,
                    deltas=st.deltas,
                    first_shown=self.first_shown,
                    thinking=st.thinking,
                    thinking_shown=self.thinking_shown,
                    status_pending=st.trail.activity_seq != self.activity_shown,
                ),
                self.pacer,
            )
            if plan.kind is None:
                continue
            if plan.kind is EditKind.STATUS:
                self.thinking_shown = True
                await self._show_thinking()
                continue
            if plan.wait > 0:
                retry_in = plan.wait
                continue
            not_before = await self._edit_streaming(plan.kind)
            if not_before > 0:
                retry_in = min(max(not_before, 0.02), 5.0)

    async def _nap(self, seconds: float) -> None:
        """Pacing waits ignore new deltas (they don't move the next edit) but not the end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.ending.wait()

    async def _edit_streaming(self, kind: EditKind) -> float:
        """Show the newest text: 0.0 when shown, else seconds before trying again."""
        st = self.state
        text = st.text()
        # Recorded with the budget's token, before Slack shows it; with the Sources list the
        # text's superscripts number, so that a janitor finishing it keeps that list too.
        cited = st.trail.sources
        if len(cited.numbers) != self.sources_noted:
            self.sources_noted = len(cited.numbers)
            self.lease.note(text=text, notes=(render.sources_note(cited.listed()) or "",))
        else:
            self.lease.note(text=text)
        wanted = self.wanted
        if kind is EditKind.FIRST:
            wanted = lambda: self.wanted() and not st.done.is_set()  # noqa: E731
        wait = await self.budget.take(
            kind, unshown_since=st.changed_at, wanted=wanted, woken=self.ending
        )
        if wait > 0:
            return wait
        st.changed_at = None
        activity, seq = st.trail.activity, st.trail.activity_seq
        try:
            sent = await self.message.continue_long(text)
            if not sent.delivered:
                self._refused(sent)
                return 1.0
            part = render.part_text(text, self.message.offset)
            mentions = self.message.mentions
            payload = render.streaming_payload(
                part, answer_id=self.answer_id, mentions=mentions, status=activity
            )
            if self.message.plain:
                plain = render.plain_pieces(part, mentions=mentions)[0]
                if activity:
                    plain = f"{plain}\n{render.plain_pieces(activity, mentions=mentions)[0]}"
                payload = render.SlackPayload(text=plain, blocks=[])
            self.pacer.sent(self.clock(), st.deltas)
            await self.message.update(payload, kind, budget_taken=True)
        except SlackFailure as e:
            if st.changed_at is None:
                st.changed_at = self.clock()
            if e.refusal is Refusal.PAYLOAD:
                self.message.plain = True
                self.log.warning("payload refused; streaming plain text", extra={"error": e.error})
            elif e.permanent:
                self._refused(Sent(Delivery.REFUSED, e))
            return e.retry_after or self.interval or 1.0
        self.message.shown_upto = len(text)
        if seq != self.activity_shown:
            self.activity_shown = seq
            await self._thread_status(activity)
        if kind is EditKind.FIRST:
            self.first_shown = True
            self.metrics.time_to_first_text.observe(self.clock() - self.q.received_at)
        return 0.0

    def _refused(self, sent: Sent) -> None:
        """Slack will never take this message again: stop now, spend nothing more."""
        if sent.refusal is None:
            return
        error = sent.failure.error if sent.failure else ""
        self.on_stop(StopRequest(StopKind.SLACK_REFUSED, str(sent.refusal), error))

    async def _show_thinking(self) -> None:
        """Say that Claude is thinking: in the thread's status, and in the message unless the
        placeholder already says so (that edit would spend a budget token on nothing)."""
        if self.placeholder_text != THINKING_LABEL:
            payload = render.thinking_payload(answer_id=self.answer_id, label=THINKING_LABEL)
            with contextlib.suppress(SlackFailure):
                await self.message.update(payload, EditKind.STATUS, wanted=self.wanted)
        await self._thread_status("Thinking…")

    async def clear_thread_status(self) -> None:
        """At the end: an edit may not clear the status line Slack shows for the thread."""
        await self._thread_status(None)

    def final_shown(self, text: str) -> None:
        """The final edit showed `text`: when all of it came before the first edit, that was
        the first text readers saw."""
        if text and not self.first_shown:
            self.metrics.time_to_first_text.observe(self.clock() - self.q.received_at)

    async def _thread_status(self, activity: str | None) -> None:
        """The thread's status line where Slack shows one (assistant threads), best effort:
        `is searching the web: …` while a tool runs, cleared when text resumes."""
        if activity is not None and not activity.endswith("…"):
            return  # a failed lookup is said in the message only
        status = f"is {activity[0].lower()}{activity[1:]}" if activity else ""
        if not status and not self.thread_status_set:
            return
        self.thread_status_set = bool(status) or self.thread_status_set
        with contextlib.suppress(SlackFailure):
            await self.slack.call(
                "assistant.threads.setStatus",
                channel_id=self.q.channel,
                thread_ts=self.q.thread_ts,
                status=status[:200],
            )
