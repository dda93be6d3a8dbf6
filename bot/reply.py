"""The answers streaming in this replica: starting them, stopping them, draining them at
shutdown. The life of each answer is `answer.Answer`; this module only keeps track."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence

import anthropic

from bot import render
from bot.answer import Answer, Services
from bot.config import Settings
from bot.lifecycle import StopRequest, shutdown, stopped_by
from bot.metrics import Metrics
from bot.pacing import PacingPolicy
from bot.question import BotIdentity, Question
from bot.retry import Backoff
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import Store, StoreError
from bot.thread import ThreadReader
from bot.usage_ledger import AnswerProfile, UsageLedger

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# After the grace period, answers still streaming are stopped and get this long to write their
# final edit within the workspace budget; then they stop waiting for budget or retries and get
# HURRY_SECONDS more; an answer still unfinished then is left to a janitor (its record holds
# what it showed). These bound how long SIGTERM takes beyond SHUTDOWN_GRACE_SECONDS.
FINISH_SECONDS = 8.0
HURRY_SECONDS = 4.0


class Replier:
    """See the module docstring."""

    def __init__(
        self,
        *,
        slack: SlackCalls,
        claude: anthropic.AsyncAnthropic,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        identity: Callable[[], BotIdentity],
        policy: PacingPolicy | None = None,
        clock: Clock = time.monotonic,
        incarnation: str | None = None,
        ledger: UsageLedger | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.slack = slack
        self.services = Services(
            slack=slack,
            claude=claude,
            store=store,
            settings=settings,
            metrics=metrics,
            policy=policy or PacingPolicy.shared(settings.edit_interval_seconds),
            threads=ThreadReader(slack=slack, store=store),
            identity=identity,
            incarnation=incarnation or uuid.uuid4().hex[:12],
            clock=clock,
            ledger=ledger,
        )
        self.running: dict[str, Answer] = {}
        self.stopping = False  # past the grace period: answers that start now start stopped
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def incarnation(self) -> str:
        return self.services.incarnation

    def start(
        self,
        question: Question,
        *,
        dedupe_keys: Sequence[str] = (),
        verify_first: bool = False,
        profile: AnswerProfile | None = None,
    ) -> asyncio.Task[None]:
        """Answer in the background; the task is tracked so shutdown can wait for it."""
        answer = Answer(
            self.services,
            question,
            dedupe_keys=dedupe_keys,
            verify_first=verify_first,
            profile=profile,
        )
        self.running[answer.answer_id] = answer
        task = asyncio.create_task(self._run(answer), name=f"answer-{question.ts}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, answer: Answer) -> None:
        try:
            await answer.run(draining=lambda: self.stopping)
        finally:
            if self.running.get(answer.answer_id) is answer:
                del self.running[answer.answer_id]

    def stop(self, answer_id: str, request: StopRequest) -> bool:
        """Stop an answer streaming here; it ends with `[interrupted: reason]`."""
        answer = self.running.get(answer_id)
        return answer.request_stop(request) if answer is not None else False

    async def follow_cancels(self, stopped: asyncio.Event) -> None:
        """Stop signals from any replica, delivered to the answers streaming here, until
        `stopped` is set."""
        backoff = Backoff()
        while not stopped.is_set():
            try:
                async for answer_id, user in self.services.store.cancel_signals():
                    self.stop(answer_id, stopped_by(user))
                    backoff.reset()
            except StoreError as e:
                log.warning("cancel signals interrupted; resubscribing", extra={"error": str(e)})
            if stopped.is_set():
                return
            await asyncio.sleep(backoff.delay() or backoff.cap)

    async def refuse(self, question: Question, line: str) -> None:
        """A polite line in the question's thread instead of an answer (over a cap or a
        budget)."""
        self.metrics.answers_finished.labels("rejected").inc()
        log.info("answer refused: limit reached", extra={"user": question.user, "reason": line})
        with contextlib.suppress(SlackFailure):
            await self.slack.call(
                "chat.postMessage",
                channel=question.channel,
                thread_ts=question.thread_ts,
                **render.error_payload(line).as_kwargs(),
            )

    async def drain(self, grace: float) -> None:
        """Let answers finish for `grace` seconds, then stop the rest and let them write their
        final message (bounded by FINISH_SECONDS and HURRY_SECONDS); an answer still unfinished
        after that is cancelled and left to a janitor. Returns within grace + about 12 s."""
        await self._wait(grace)
        self.stopping = True  # answers registering from now on start stopped
        for answer in list(self.running.values()):
            answer.request_stop(shutdown())
        await self._wait(FINISH_SECONDS)
        for answer in list(self.running.values()):
            answer.hurry.set()
        await self._wait(HURRY_SECONDS)
        left = [t for t in self._tasks if not t.done()]
        if left:
            log.error(
                "answers still unfinished at shutdown; leaving them to a janitor",
                extra={"answers": len(left)},
            )
            for task in left:
                task.cancel()
            await asyncio.wait(left, timeout=1.0)

    async def _wait(self, seconds: float) -> None:
        pending = {t for t in self._tasks if not t.done()}
        if pending and seconds > 0:
            await asyncio.wait(pending, timeout=seconds)
