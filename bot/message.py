"""An answer's text delivered to its Slack messages (`parts.AnswerParts`) for sure: edits
that must land, a long answer continued in the next message, the final message. Used alike by
the replica that streams the answer and by a janitor that finishes it after its replica died,
so a message is finished the same way whoever does it.

Each change first records what it will show in the store (through the lease, with the edit's
budget request), so the store always holds at least what readers saw. A long answer moves to
its next message in an order that is safe at every crash point: the full part is finished
("continued below"), the store learns that the next part starts (and has no message yet), the
next message is posted, then the store learns its ts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot import render
from bot.pacing import EditKind
from bot.parts import DELIVERED, AnswerParts, AnswerRef, Delivery, Sent
from bot.retry import Backoff
from bot.slackapi import Refusal, SlackFailure

# Callers import an answer's messages from here; `parts` is what this module builds on.
__all__ = ["FINAL_EDIT_DEADLINE", "AnswerMessage", "AnswerRef", "Delivery", "Sent"]

# How long an edit that must land (final, continuation) keeps being retried.
FINAL_EDIT_DEADLINE = 300.0


class AnswerMessage(AnswerParts):
    """See the module docstring; where the answer stands, and posting, finding and editing its
    messages, are `AnswerParts`'."""

    # -- edits that must land ------------------------------------------------------------------

    async def deliver(
        self,
        payload: render.SlackPayload,
        kind: EditKind,
        *,
        plain: Sequence[str] = (),
        deadline: float = FINAL_EDIT_DEADLINE,
        wanted: Callable[[], bool] = lambda: True,
    ) -> Sent:
        """An edit that must land (final, continuation): retried until Slack accepts it or
        `deadline` passes. chat.update replaces the whole message, so a retry after an unclear
        failure is idempotent. When Slack refuses the payload itself, the answer goes out as
        plain text instead: `plain` holds all of it in pieces, the first for this message and
        the rest posted after it, so a rendering problem never costs the answer."""
        if self.plain and plain:  # Slack already refused this message's rich payload
            return await self._deliver_plain(plain, kind, deadline=deadline)
        asked_at = self.clock()  # retries keep their place in the budget's arrival order
        backoff = Backoff.within(deadline, clock=self.clock)

        def still_wanted() -> bool:
            return wanted() and (self.lease is None or self.lease.held)

        attempts = 0
        limit = self.budget.policy.final_attempts  # the benchmark's peers give up; the bot never
        while True:
            attempts += 1
            try:
                if await self.update(payload, kind, asked_at=asked_at, wanted=still_wanted):
                    return DELIVERED
                if not still_wanted() or backoff.expired:
                    return Sent(Delivery.GAVE_UP)
                await self._pause(0.1)  # a must-send edit the budget did not serve: ask again
            except SlackFailure as e:
                if limit is not None and attempts >= limit:
                    self.log.error("final edit lost (baseline policy)", extra={"error": e.error})
                    return DELIVERED
                if e.refusal is Refusal.PAYLOAD and plain:
                    self.log.error("payload refused; sending plain text", extra={"error": e.error})
                    return await self._deliver_plain(plain, kind, deadline=deadline)
                if e.permanent:
                    self.log.error("edit refused for good", extra={"error": e.error})
                    return Sent(Delivery.REFUSED, e)
                wait = backoff.delay(e.retry_after)
                if wait is None or self._hurried():
                    self.log.error("edit gave up after retries", extra={"error": e.error})
                    return Sent(Delivery.GAVE_UP, e)
                await self._pause(wait)

    async def _deliver_plain(
        self, pieces: Sequence[str], kind: EditKind, *, deadline: float
    ) -> Sent:
        """The first piece replaces this message's content, the others follow it as messages
        of the same part (finished: plain text never carries a Stop button)."""
        self.plain = True
        first = render.SlackPayload(text=pieces[0], blocks=[])
        sent = await self.deliver(first, kind, deadline=deadline)
        for piece in pieces[1:]:
            if not sent.delivered:
                break
            sent = await self.post(render.SlackPayload(text=piece, blocks=[]), deadline=deadline)
        return sent

    # -- long answers and the end --------------------------------------------------------------

    async def continue_long(self, text: str, *, deadline: float = FINAL_EDIT_DEADLINE) -> Sent:
        """Finish full messages and continue the answer in new ones (see the module docstring
        for the order). The cut is stable as the answer grows (`render.next_cut`), so a
        finished part never changes; a code block cut in two is closed and reopened."""
        while (cut := render.next_cut(text, render.BODY_LIMIT, start=self.offset)) is not None:
            part_md = render.part_text(text, self.offset, cut)
            if self.lease is not None:
                self.lease.note(text=text[:cut])
            sent = await self.deliver(
                render.continued_payload(part_md, mentions=self.mentions),
                EditKind.CONTINUATION,
                plain=render.plain_pieces(
                    f"{part_md}\n\n{render.CONTINUED_HINT}", mentions=self.mentions
                ),
                deadline=deadline,
            )
            if not sent.delivered:
                return sent
            self.part, self.offset, self.ts, self.plain = self.part + 1, cut, "", False
            self.shown_upto = cut
            if self.lease is not None:
                self.lease.note(part=self.part, offset=cut, message_ts="")
                await self.lease.renew()
            sent = await self.post(
                render.streaming_payload("", answer_id=self.ref.answer_id), deadline=deadline
            )
            if not sent.delivered:
                return sent
            if self.lease is not None:
                self.lease.note(message_ts=self.ts)
                self.lease.renew_soon()
        return DELIVERED

    async def finish(
        self,
        text: str,
        *,
        footer: str | None,
        notes: Sequence[str],
        deadline: float = FINAL_EDIT_DEADLINE,
        feedback: render.FeedbackButtons | None = None,
    ) -> Sent:
        """Write the final message(s): the rest of the answer, its notes, the footer (and
        Slack's feedback buttons below them: `feedback`, else `self.feedback`)."""
        sent = await self.continue_long(text, deadline=deadline)
        if not sent.delivered:
            return sent
        body = render.part_text(text, self.offset)
        if self.lease is not None:
            self.lease.note(text=text)
        plain_tail = "\n\n".join([*notes, *([footer] if footer else [])])
        plain = f"{body}\n\n{plain_tail}" if body.strip() else plain_tail
        return await self.deliver(
            render.final_payload(
                body,
                footer=footer,
                notes=notes,
                mentions=self.mentions,
                feedback=feedback or self.feedback,
            ),
            EditKind.FINAL,
            plain=render.plain_pieces(plain, mentions=self.mentions),
            deadline=deadline,
        )
