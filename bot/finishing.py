"""An answer's end, written: the end `closing` decides (through `Bookkeeping.close`) is counted,
recorded with the final edit's token, delivered, and left as a tombstone; the answer moves
through `finishing` to `finished` on the way.

Whatever ended the stream, this replica writes the final message, except when the lease says
another replica will (it finishes this same message) or that another registration answers the
question (ours is removed). Slack refusing the message for good ends the answer at once, and a
bug ends it with `[interrupted]` where the message can still be edited.
"""

from __future__ import annotations

from collections.abc import Callable

from bot import render
from bot.asking import Asking
from bot.bookkeeping import Bookkeeping
from bot.claude import StreamState
from bot.lease import Lease
from bot.lifecycle import Outcome, Phase, StopKind, StopRequest
from bot.logs import ContextLog
from bot.message import AnswerMessage, Sent
from bot.pacing import EditKind
from bot.publisher import Publisher
from bot.slackapi import Refusal
from bot.thread import ThreadReader

# A short line in the thread when Slack still takes one (by `Refusal` value).
REFUSAL_NOTICES = {
    str(Refusal.MESSAGE_GONE): "The answer stopped because its message was deleted.",
}


class Finisher:
    """See the module docstring. The answer keeps its phase; `phase` reads it and `advance`
    moves it, so a stop requested meanwhile sees where the end has got to."""

    def __init__(
        self,
        *,
        state: StreamState,
        message: AnswerMessage,
        lease: Lease,
        books: Bookkeeping,
        asking: Asking,
        publisher: Publisher,
        threads: ThreadReader,
        log: ContextLog,
        phase: Callable[[], Phase],
        advance: Callable[[Phase], None],
        know: Callable[[dict[str, str]], None],
        wanted: Callable[[], bool],
    ) -> None:
        self.state = state
        self.message = message
        self.lease = lease
        self.books = books
        self.asking = asking
        self.publisher = publisher
        self.threads = threads
        self.log = log
        self.phase = phase
        self.advance = advance
        self.know = know
        self.wanted = wanted

    async def finish(self, stop: StopRequest | None, stream_error: BaseException | None) -> Outcome:
        """End the answer after its stream (or a stop before it); the outcome."""
        if stop is not None and not stop.finishes_here:
            if stop.kind is StopKind.DISPLACED:
                await self.message.delete_posted()
            return stop.outcome
        if stop is not None and stop.kind is StopKind.SLACK_REFUSED:
            return await self._undeliverable(stop)
        ending = self.books.close(
            self.state,
            stop=stop,
            stream_error=stream_error,
            dropped_turns=self.asking.asked.dropped_turns,
        )
        outcome, footer, notes, text = ending.outcome, ending.footer, ending.notes, ending.text
        budget_note = await self.books.count_usage(self.state, outcome)  # one round trip
        if footer and budget_note:
            footer = f"{footer} · {budget_note}"
        self.message.feedback = self.books.feedback(self.state, text)  # the final message's buttons
        file_note = self.asking.asked.file_note
        if file_note and outcome is not Outcome.FAILED:  # files not read: right after the text
            notes = [file_note, *notes]
        self.advance(Phase.FINISHING)
        # Recorded with the final edit's budget token: whoever finishes writes this same text.
        self.lease.note(text=text, phase=Phase.FINISHING, footer=footer or "", notes=tuple(notes))
        if stop is not None and stop.kind is StopKind.USER:  # "stopped by" names who did
            self.know(await self.threads.names([stop.detail]))
        if outcome is Outcome.FAILED:
            sent = await self.message.deliver(
                render.error_payload(notes[0], mentions=self.message.mentions),
                EditKind.FINAL,
                wanted=self.wanted,
            )
        else:
            sent = await self.message.finish(text, footer=footer, notes=notes)
        await self.publisher.clear_thread_status()
        if not sent.delivered:
            return await self._not_delivered(sent)
        self.advance(Phase.FINISHED)
        self.publisher.final_shown(text)
        self.books.tokens(self.state)
        self.log.info(
            "answer finished",
            extra={
                "outcome": str(outcome),
                "stop_reason": self.state.stop_reason,
                "chars": len(text),
            },
        )
        await self.lease.finish(str(outcome))
        return outcome

    async def _not_delivered(self, sent: Sent) -> Outcome:
        if sent.refusal is not None:
            error = sent.failure.error if sent.failure else ""
            return await self._undeliverable(
                StopRequest(StopKind.SLACK_REFUSED, str(sent.refusal), error)
            )
        if not self.lease.held:
            return Outcome.HANDED_OVER
        # The record holds the final text (phase finishing): a janitor writes it once its
        # lease lapses, and reads the message back first, so nothing is written twice.
        self.log.error("final edit not delivered; leaving the answer to a janitor")
        return Outcome.ABANDONED

    async def _undeliverable(self, stop: StopRequest) -> Outcome:
        """Slack refuses the message for good: end at once, one log line, a short note in the
        thread where Slack still allows one."""
        self.log.error(
            "Slack refuses this answer's message for good; answer ended",
            extra={"error": stop.detail, "refusal": stop.reason},
        )
        notice = REFUSAL_NOTICES.get(stop.reason)
        if notice is not None:
            await self.message.notice(notice)
        if self.phase() is not Phase.FINISHING:
            self.advance(Phase.FINISHING)
        self.advance(Phase.FINISHED)
        await self.lease.finish(str(Outcome.UNDELIVERABLE))
        return Outcome.UNDELIVERABLE

    async def after_bug(self) -> Outcome:
        """Last resort after a bug: keep what was shown, end with [interrupted]; never raise.
        Without a message there is nothing to edit: the record stays for a janitor."""
        if self.phase() is Phase.FINISHED or not self.message.ts or not self.lease.held:
            return Outcome.ABANDONED
        try:
            sent = await self.message.finish(
                self.state.text(),
                footer=None,
                notes=[render.interrupted_note("an unexpected error occurred")],
                deadline=30.0,
            )
        except Exception:
            self.log.exception("could not finish the message after an error")
            return Outcome.ABANDONED
        if sent.delivered:
            await self.lease.finish(str(Outcome.INTERRUPTED))
            return Outcome.INTERRUPTED
        return Outcome.ABANDONED
