"""An answer's end, booked: how it ends (decided by `closing`, with the metric and the one log
line a failure gets), its usage added to the shared counters, the feedback buttons of its final
message, and the token counters. The answer decides when it ends; this is what the end records.
"""

from __future__ import annotations

from collections.abc import Callable

from bot import render
from bot.claude import StreamState
from bot.closing import Closing, FooterFacts, closing
from bot.config import Settings
from bot.feedback import Rated
from bot.lifecycle import Outcome, StopRequest
from bot.logs import ContextLog
from bot.metrics import Metrics
from bot.question import Question
from bot.usage_ledger import AnswerProfile, UsageLedger


class Bookkeeping:
    """See the module docstring."""

    def __init__(
        self,
        *,
        q: Question,
        profile: AnswerProfile,
        settings: Settings,
        metrics: Metrics,
        ledger: UsageLedger | None,
        clock: Callable[[], float],
        log: ContextLog,
    ) -> None:
        self.q = q
        self.profile = profile
        self.settings = settings
        self.metrics = metrics
        self.ledger = ledger
        self.clock = clock
        self.log = log

    def model(self, state: StreamState) -> str:
        """The model that answered (as Claude reported it), else the one asked for."""
        return state.model or self.profile.channel.model

    def close(
        self,
        state: StreamState,
        *,
        stop: StopRequest | None,
        stream_error: BaseException | None,
        dropped_turns: int,
    ) -> Closing:
        """How the answer ends (decided in `closing`), logged and counted here."""
        ending = closing(
            state,
            stop=stop,
            stream_error=stream_error,
            idle_timeout=self.settings.stream_idle_timeout_seconds,
            facts=FooterFacts(
                model=self.profile.channel.model,
                elapsed=self.clock() - self.q.received_at,
                show_cost=self.settings.show_cost,
                dropped_turns=dropped_turns,
            ),
        )
        if ending.failure is not None:
            self.metrics.claude_errors.labels(ending.failure.error_type).inc()
            self.log.warning(
                "claude stream failed",
                extra={"error_type": ending.failure.error_type, "error": repr(stream_error)},
            )
        if ending.ended_early:
            self.metrics.claude_errors.labels("no_message_delta").inc()
            self.log.warning("claude stream ended without message_delta")
        return ending

    async def count_usage(self, state: StreamState, outcome: Outcome) -> str | None:
        """Add the answer's usage to the shared counters; the footer's budget note, if any."""
        if self.ledger is None or state.usage is None:
            return None
        return await self.ledger.record(
            self.q, self.profile, state.usage, model=self.model(state), outcome=str(outcome)
        )

    def feedback(self, state: StreamState, text: str) -> render.FeedbackButtons | None:
        """Slack's feedback buttons, for an answer with something to rate."""
        if not text.strip():
            return None
        rated = Rated(
            answer_id=self.q.answer_id,
            day=self.profile.period.day,
            channel=self.q.channel,
            model=self.model(state),
            asker=self.q.user,
        )
        return rated.buttons()

    def tokens(self, state: StreamState) -> None:
        """The finished answer's tokens, into the bot's counters."""
        if state.usage is not None:
            self.metrics.tokens.labels("in").inc(state.usage.total_input)
            self.metrics.tokens.labels("out").inc(state.usage.output_tokens)
