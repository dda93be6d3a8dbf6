"""Which Slack events become answers, and who may stop one: an ordered list of small checks,
each of which lets the event through or says why not (in the spirit of Bolt's middleware).

    screening ─> dedupe claim ─> caps ─> budgets ─> answer

Screening includes a channel's `allowed_users` (CHANNEL_SETTINGS_FILE). The caps read, in the
same store round trip, the spend the budgets are checked against and the channel's override
set from Slack (`Store.admission_view`); an admitted question leaves with its `AnswerProfile`:
its channel's settings and the day and month its usage counts in. A question over a budget
gets a polite line saying which budget and when it resets, and Claude is not asked. Budgets
are read when a question arrives, so answers already in flight may take a budget past its
limit, by at most what they use; while the store is unreachable no budget is checked.

Draining is not among them: an event is refused while draining before it is acknowledged (the
HTTP route answers 503, and Socket Mode closes its connection first), so that Slack delivers
it elsewhere; an event already acknowledged is always answered.

Slack delivers an event again when it was not acknowledged within 3 s, and delivers one
mentioning message twice when it fits two subscriptions (`app_mention` and `message.im`), to any
replica. Claiming both the `event_id` and the message's `(channel, ts)` in the shared store
makes each message answered once. Each claim carries a token of its own, so a claim that a
client re-sends after a timeout (its first attempt had run) is recognised as the same claim,
not a duplicate. When the store is unreachable the claim falls back to this replica's memory:
a duplicate that reaches *another* replica during the outage may then be answered twice,
which is better than not answering at all. When the store has lost its data (an empty
restart), a question asked before its data began may have been claimed in what was lost: its
answer first looks in the thread for an earlier answer (`asked_before_data`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import slackts
from bot.budgets import Budgets, Calendar, Period
from bot.channels import ChannelDirectory
from bot.config import Settings
from bot.metrics import Metrics
from bot.question import Question
from bot.store import AdmissionView, MemoryStore, Store, StoreError
from bot.usage_ledger import AnswerProfile

log = logging.getLogger(__name__)

DEDUPE_TTL_SECONDS = 6 * 3600  # well past Slack's last retry (~5 min) and any clock skew
# Admission's store calls are bounded (store.instrumented.TIMEOUTS): an event is admitted
# within this long whatever the store does, falling back to this replica's memory.
ADMISSION_TIMEOUT_SECONDS = 4.0
# How far Slack's clock (a message's ts) and the store's (when its data began) may disagree.
CLOCK_MARGIN_SECONDS = 10.0

# Message subtypes that are not something a person asked: edits, deletions, joins, bot posts.
IGNORED_SUBTYPES = frozenset(
    {
        "message_changed",
        "message_deleted",
        "message_replied",
        "bot_message",
        "channel_join",
        "channel_leave",
        "channel_topic",
        "channel_purpose",
        "channel_name",
        "group_join",
        "group_leave",
        "thread_broadcast_deleted",
        "tombstone",
        "assistant_app_thread",
    }
)


@dataclass
class Intake:
    """One event on its way through the checks; each check may fill in what it learns."""

    event: dict[str, Any]
    event_id: str | None
    team_id: str
    bot_user_id: str
    question: Question | None = None
    dedupe_keys: list[str] = field(default_factory=list)
    verify_first: bool = False
    period: Period | None = None  # the day and month the answer's usage counts in
    view: AdmissionView | None = None  # None: the store could not be read
    profile: AnswerProfile | None = None  # what an admitted answer is given


@dataclass(frozen=True)
class Verdict:
    """What admission decided: answer, refuse with a polite line, or drop (with why)."""

    answer: bool
    reason: str = ""
    refusal: str | None = None  # a line for the asker instead of an answer


Check = Callable[[Intake], Awaitable[Verdict | None]]  # None: the event goes on


class Admission:
    """Runs the checks in order; the first that stops the event decides."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        answering_here: Callable[[], Collection[Question]],
        fallback: MemoryStore | None = None,
        channels: ChannelDirectory | None = None,
        budgets: Budgets | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.fallback = fallback or MemoryStore()
        self.degraded = False
        self._answering_here = answering_here
        self.channels = channels or ChannelDirectory(settings)
        self.budgets = budgets or Budgets()
        self.calendar = calendar or Calendar()
        self.checks: Sequence[Check] = (self.screen, self.claim, self.caps, self.over_budget)

    async def admit(
        self, event: dict[str, Any], *, event_id: str | None, team_id: str, bot_user_id: str
    ) -> tuple[Verdict, Intake]:
        intake = Intake(event=event, event_id=event_id, team_id=team_id, bot_user_id=bot_user_id)
        for check in self.checks:
            verdict = await check(intake)
            if verdict is not None:
                return verdict, intake
        intake.profile = self._profile(intake)
        return Verdict(True), intake

    # -- the checks, in order ------------------------------------------------------------------

    async def screen(self, intake: Intake) -> Verdict | None:
        """What needs no store: other bots, edits, the bot itself, allowlists."""
        event = intake.event
        subtype = event.get("subtype")
        if subtype in IGNORED_SUBTYPES or (subtype is not None and subtype != "file_share"):
            return Verdict(False, f"subtype {subtype}")
        if event.get("bot_id") or event.get("bot_profile"):
            return Verdict(False, "from a bot")
        user = event.get("user")
        if not isinstance(user, str) or not user:
            return Verdict(False, "no user")
        if user == intake.bot_user_id:
            return Verdict(False, "from the bot itself")
        channel, ts = event.get("channel"), event.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
            return Verdict(False, "no channel or ts")
        allowed_channels = self.settings.allowed_channels
        if allowed_channels and channel not in allowed_channels:
            return Verdict(False, "channel not allowed")
        allowed_users = self.settings.allowed_users
        if allowed_users and user not in allowed_users:
            return Verdict(False, "user not allowed")
        if not self.channels.resolve(channel).allows(user):
            return Verdict(False, "user not allowed in this channel")
        intake.question = Question(
            team_id=intake.team_id,
            channel=channel,
            thread_ts=str(event.get("thread_ts") or ts),
            ts=ts,
            user=user,
            text=str(event.get("text") or ""),
        )
        return None

    async def claim(self, intake: Intake) -> Verdict | None:
        """The first delivery of this message anywhere goes on; any duplicate stops here."""
        q = intake.question
        assert q is not None
        keys = [f"msg:{q.channel}:{q.ts}"]
        if intake.event_id:
            keys.insert(0, f"event:{intake.event_id}")
        token = uuid.uuid4().hex
        for key in keys:
            first, data_age = await self._claim(key, token)
            if not first:
                self.metrics.events_deduped.inc()
                log.info("duplicate event dropped", extra={"key": key})
                return Verdict(False, "duplicate")
            if data_age is not None and asked_before_data(q.ts, data_age, self.calendar.clock()):
                intake.verify_first = True
        intake.dedupe_keys = keys
        return None

    async def _claim(self, key: str, token: str) -> tuple[bool, float | None]:
        """(first, seconds since the store's data began; None from the memory fallback)."""
        try:
            claim = await self.store.claim_event(key, DEDUPE_TTL_SECONDS, token)
        except StoreError as e:
            if not self.degraded:
                log.error(
                    "store unreachable: deduplicating in this replica's memory",
                    extra={"error": str(e)},
                )
            self.degraded = True
            self.metrics.store_degraded.set(1)
            fallback = await self.fallback.claim_event(key, DEDUPE_TTL_SECONDS, token)
            return fallback.first, None
        if self.degraded:
            log.info("store reachable again")
            self.degraded = False
            self.metrics.store_degraded.set(0)
        # Remembered here too, so a retry during a later outage is still recognised here.
        await self.fallback.claim_event(key, DEDUPE_TTL_SECONDS, token)
        return claim.first, claim.data_age

    async def caps(self, intake: Intake) -> Verdict | None:
        """A polite refusal when the asker or the workspace has too many answers in flight.

        Counted from the shared store, so the caps hold across replicas (approximately: two
        replicas admitting at the same instant may both pass). Without the store, this
        replica's own answers are counted."""
        q = intake.question
        assert q is not None
        intake.period = period = self.calendar.period()
        try:
            intake.view = await self.store.admission_view(
                q.team_id, q.user, q.channel, day=period.day, month=period.month
            )
            mine, workspace = intake.view.mine, intake.view.workspace
        except StoreError:
            here = [other for other in self._answering_here() if other.team_id == q.team_id]
            mine, workspace = sum(1 for other in here if other.user == q.user), len(here)
        if mine >= self.settings.max_answers_per_user:
            return Verdict(
                False,
                "user cap",
                f"You already have {mine} answer{'' if mine == 1 else 's'} in progress. "
                "Please wait for one of them to finish, then ask again.",
            )
        if workspace >= self.settings.max_answers_per_workspace:
            return Verdict(
                False,
                "workspace cap",
                "I'm answering as many questions as I can right now. Please ask again shortly.",
            )
        return None

    async def over_budget(self, intake: Intake) -> Verdict | None:
        """A polite refusal when a budget is used up: which one, and when it resets."""
        view, period = intake.view, intake.period
        if view is None or period is None or not self.budgets.any:
            return None
        refusal = self.budgets.refusal(view.spend, period, self.calendar.zone_name)
        if refusal is None:
            return None
        self.metrics.budget_refusals.labels(refusal.budget).inc()
        log.info("question refused: budget used up", extra={"budget": refusal.budget})
        return Verdict(False, f"budget {refusal.budget}", refusal.line)

    def _profile(self, intake: Intake) -> AnswerProfile:
        """The admitted answer's channel settings (with the override read with the caps, or
        the last one seen when the store could not be read) and its usage period."""
        q = intake.question
        assert q is not None
        if intake.view is not None:
            override = intake.view.override
            self.channels.remember(q.team_id, q.channel, override)
        else:
            override = self.channels.last_override(q.team_id, q.channel)
        return AnswerProfile(
            channel=self.channels.resolve(q.channel, override),
            period=intake.period or self.calendar.period(),
        )


def asked_before_data(question_ts: str, data_age: float, now: float) -> bool:
    """Whether a question may have been claimed in data the store has since lost (a Redis
    restarted empty): it was asked before, or about when, the store's data began. A question
    asked later was claimed, if ever, in the data the store holds now, so its claim is the
    whole truth and the thread need not be read back (`Answer` does that for the others)."""
    asked = slackts.as_number(question_ts)
    return asked is None or now - asked + CLOCK_MARGIN_SECONDS >= data_age
