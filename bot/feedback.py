"""Feedback on answers: what Slack's feedback buttons carry, and what a click does.

Each finished answer carries the 👍/👎 buttons (`render.feedback_block`). A button's value
says which answer it rates and which usage cell counts the vote (the answer's day, channel,
model and asker), so a click needs nothing but one store call: the vote is recorded once per
person and answer (clicking the other button replaces it), counted in
`slackstream_feedback_total{value}` and in the usage report per channel and model.

The value comes back in a request Slack signed (or over the Socket Mode connection), but it
is still read defensively: anything that does not parse is ignored.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from bot import render
from bot.budgets import Calendar
from bot.metrics import Metrics
from bot.store import AnswerRecord, FeedbackVote, Store, StoreError
from bot.store.ledger import FEEDBACK_VALUES

log = logging.getLogger(__name__)

VOTE_KEEP_SECONDS = 90 * 86400.0  # a vote is remembered (against a second count) this long
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}")


@dataclass(frozen=True)
class Rated:
    """What a vote needs to know about the answer it rates."""

    answer_id: str
    day: str  # the day its usage counted in
    channel: str
    model: str
    asker: str

    def buttons(self) -> render.FeedbackButtons:
        return render.FeedbackButtons(
            positive_value=self._value("positive"), negative_value=self._value("negative")
        )

    def _value(self, vote: str) -> str:
        fields = {
            "v": vote,
            "a": self.answer_id,
            "d": self.day,
            "c": self.channel,
            "m": self.model,
            "u": self.asker,
        }
        return json.dumps(fields, separators=(",", ":"))


def read_value(raw: object) -> tuple[str, Rated] | None:
    """(the vote, the answer it rates) from a button's value; None for anything else."""
    if not isinstance(raw, str) or len(raw) > 2000:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    vote = data.get("v")
    fields = [data.get(key) for key in ("a", "d", "c", "m", "u")]
    if vote not in FEEDBACK_VALUES or not all(isinstance(f, str) for f in fields):
        return None
    answer_id, day, channel, model, asker = (str(f) for f in fields)
    if not _DAY.fullmatch(day) or not all(_ID.fullmatch(f) for f in (answer_id, channel, model)):
        return None
    if asker and not _ID.fullmatch(asker):
        return None
    return str(vote), Rated(answer_id, day, channel, model, asker)


class FeedbackDesk:
    """Records votes (one store call each) and counts them."""

    def __init__(self, *, store: Store, metrics: Metrics, calendar: Calendar) -> None:
        self.store = store
        self.metrics = metrics
        self.calendar = calendar

    def recovered_buttons(self, record: AnswerRecord) -> render.FeedbackButtons | None:
        """The feedback buttons of an answer a janitor finishes with its owner's footer (its
        votes count on the day it is recovered, for the model it was asked of)."""
        if not record.text.strip():
            return None
        day = self.calendar.period().day
        return Rated(record.answer_id, day, record.channel, record.model, record.asker).buttons()

    async def vote(self, *, team_id: str, voter: str, value: object) -> bool:
        """Record a click; False when it changed nothing (the same vote again, a value that
        is not ours, the store unreachable: logged)."""
        parsed = read_value(value)
        if parsed is None or not voter:
            log.info("ignored a feedback click the bot cannot read")
            return False
        vote, rated = parsed
        try:
            result = await self.store.record_feedback(
                FeedbackVote(
                    answer_id=rated.answer_id,
                    team_id=team_id,
                    voter=voter,
                    value=vote,
                    day=rated.day,
                    channel=rated.channel,
                    model=rated.model,
                    asker=rated.asker,
                ),
                keep_seconds=VOTE_KEEP_SECONDS,
                cell_keep_seconds=self.calendar.cell_keep_seconds(rated.day),
            )
        except StoreError as e:
            log.warning("feedback not recorded", extra={"error": str(e), "value": vote})
            return False
        if not result.counted:
            return False
        self.metrics.feedback.labels(vote).inc()
        log.info(
            "feedback recorded",
            extra={"answer_id": rated.answer_id, "value": vote, "replaced": result.previous or ""},
        )
        return True
