"""One answer's life: placeholder, Claude stream, paced edits, then a final or interrupted message.

Three tasks cooperate per answer and meet in `StreamState`:
- the *streamer* folds Claude's events into the state (text chunks, usage, stop reason);
- the *publisher* shows the state in Slack: paced `chat.update` edits, one in flight, always the
  newest text, long answers continued in new messages, and the final edit retried until accepted;
- the *heartbeat* renews the answer's lease in the store and checkpoints the text shown, so that
  another replica can finish the message if this one dies.
Whatever ends the stream (its end, an error, Stop, shutdown) the publisher still writes a final
message; the one exception is a lost lease: the replica that took the answer over finishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anthropic

from bot import render
from bot.claude import StreamState, describe_failure, stream_answer
from bot.config import Settings
from bot.conversation import Conversation, build_conversation
from bot.logs import ContextLog
from bot.metrics import Metrics
from bot.pacing import EditKind, MessagePacer, PacingPolicy, budget_claim
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import AnswerRecord, Store, StoreError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

# How long a final edit keeps being retried before the answer is given up (and left to the janitor).
FINAL_EDIT_DEADLINE = 300.0
# How long posting the placeholder keeps being retried (rate limits, Slack errors) before the
# question is left to the janitor, which posts the interruption once Slack takes it.
PLACEHOLDER_DEADLINE = 60.0
SHUTDOWN_REASON = "the bot restarted; please ask again"
TAKEN_OVER_REASON = "the bot lost track of this answer; please ask again"
THREAD_WAIT_POLL_SECONDS = 0.25  # a follow-up question re-checks its thread this often
THREAD_CACHE_SECONDS = 3600.0  # then the thread is read whole again, picking up edits
# Slack errors that mean the payload, not the message, is the problem.
_PAYLOAD_ERRORS = frozenset({"msg_too_long", "msg_blocks_too_long", "invalid_blocks"})


def _ts_before(a: str, b: str) -> bool:
    """Slack ts order ("seconds.micros" strings); an unknown ts (older records) is not before."""
    try:
        return bool(a) and _ts_key(a) < _ts_key(b)
    except ValueError:
        return False


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


@dataclass(frozen=True)
class Question:
    """A message the bot was asked to answer."""

    team_id: str
    channel: str
    thread_ts: str  # the thread to answer in (the question's own ts when it starts one)
    ts: str
    user: str
    text: str
    received_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str
    team_id: str = ""


class Interrupted(Exception):
    """Ends an answer early; `reason` is the short text shown after `[interrupted`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseLost(Exception):
    """Another replica took this answer over; it will finish the message, we must not."""


class Replier:
    """Answers questions; owns the answers streaming in this replica."""

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
        wall: Clock = time.time,
    ) -> None:
        self.slack = slack
        self.claude = claude
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._identity = identity
        self.policy = policy or PacingPolicy.shared(settings.edit_interval_seconds)
        self.clock = clock
        self.wall = wall
        self.running: dict[str, Answer] = {}
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._names: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, question: Question) -> asyncio.Task[None]:
        """Answer in the background; the task is tracked so shutdown can wait for it."""
        task = asyncio.create_task(self.answer(question), name=f"answer-{question.ts}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self, answer_id: str, reason: str) -> bool:
        """Stop an answer streaming here; it ends with `[interrupted: reason]`."""
        answer = self.running.get(answer_id)
        return answer.interrupt(reason) if answer is not None else False

    async def drain(self, grace: float) -> None:
        """Let answers finish for `grace` seconds, then interrupt the rest and wait for them.

        Tasks are never cancelled directly: an answer is only interrupted through
        `Answer.interrupt`, which keeps its final edit out of reach of the cancellation.
        """
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=grace)
        self.draining = True  # answers that register from now on start interrupted
        for answer in list(self.running.values()):
            answer.interrupt(SHUTDOWN_REASON)
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=FINAL_EDIT_DEADLINE)

    # -- one answer ----------------------------------------------------------------------------

    async def answer(self, q: Question) -> None:
        """Answer `q` in its thread; never raises, always finishes the Slack message it posted."""
        # Known before posting, so the placeholder already carries the Stop button; unique because
        # admission lets each question through once.
        answer_id = f"{q.team_id}-{q.channel}-{q.ts}"
        refusal = await self._over_limit(q)
        if refusal is not None:
            self.metrics.answers_finished.labels("rejected").inc()
            log.info("answer refused: limit reached", extra={"user": q.user, "reason": refusal})
            with contextlib.suppress(SlackFailure):
                await self.slack.call(
                    "chat.postMessage",
                    channel=q.channel,
                    thread_ts=q.thread_ts,
                    **render.error_payload(refusal).as_kwargs(),
                )
            return
        await Answer(self, q, answer_id).run()

    async def _over_limit(self, q: Question) -> str | None:
        """A polite refusal when the asker or the workspace has too many answers in flight.

        Counted from the shared store, so the caps hold across replicas (approximately: two
        replicas admitting at the same instant may both pass), with one small query per
        question rather than a roster read. Without the store, this replica's own answers are
        counted.
        """
        try:
            mine, workspace = await self.store_call(
                "count_in_flight", self.store.count_in_flight(q.team_id, q.user)
            )
        except StoreError:
            here = [a.q for a in self.running.values() if a.q.team_id == q.team_id]
            mine, workspace = sum(1 for other in here if other.user == q.user), len(here)
        if mine >= self.settings.max_answers_per_user:
            return (
                f"You already have {mine} answer{'' if mine == 1 else 's'} in progress. "
                "Please wait for one of them to finish, then ask again."
            )
        if workspace >= self.settings.max_answers_per_workspace:
            return "I'm answering as many questions as I can right now. Please ask again shortly."
        return None

    async def user_names(self, user_ids: Sequence[str]) -> dict[str, str]:
        """Display names for labelling turns; a lookup failure falls back to the raw mention."""
        for user_id in user_ids:
            if user_id in self._names:
                continue
            try:
                data = await self.slack.call("users.info", user=user_id)
            except SlackFailure:
                continue
            user = data.get("user") or {}
            profile = user.get("profile") or {}
            name = profile.get("display_name") or user.get("real_name") or user.get("name")
            if name:
                self._names[user_id] = str(name)
        return {u: self._names[u] for u in user_ids if u in self._names}

    async def store_call(self, op: str, call: Awaitable[T]) -> T:
        """A store call, timed and counted; StoreError propagates for the caller to decide."""
        started = time.perf_counter()
        try:
            return await call
        except StoreError:
            self.metrics.store_errors.labels(op).inc()
            raise
        finally:
            self.metrics.store_latency.labels(op).observe(time.perf_counter() - started)


class Answer:
    """The life of one answer; see the module docstring for how its three tasks cooperate."""

    def __init__(self, replier: Replier, q: Question, answer_id: str) -> None:
        self.r = replier
        self.s = replier.settings
        self.q = q
        self.answer_id = answer_id
        self.message_ts = ""  # the message being edited now ("" until the placeholder is posted)
        self.offset = 0  # characters of the answer already finished in earlier messages
        self.shown = ""  # the Markdown shown in message_ts (the checkpoint for recovery)
        self.shown_upto = 0  # how much of the answer text Slack shows
        self.state = StreamState()
        self.policy = replier.policy
        self.pacer = MessagePacer(self.policy)
        self.competing = 1  # answers sharing the workspace budget, as the store last counted
        self.first_text_shown = False
        self.thinking_shown = False
        self.dropped_turns = 0
        self.failed_before_text: str | None = None  # a one-line explanation for the reader
        self.interruption: str | None = None
        self.finishing = False
        self.final_sent = False
        self.lease_lost = False
        self.task: asyncio.Task[Any] | None = None
        # Set after the first text is shown, so a crash right after it doesn't lose it on recovery.
        self.checkpoint_now = asyncio.Event()
        self.heartbeat_stopped = False
        self.starting = True  # registering and posting the placeholder: not to be cancelled
        self.log = ContextLog(log, {"answer_id": answer_id, "channel": q.channel})

    async def run(self) -> None:
        r = self.r
        r.metrics.answers_in_flight.inc()
        self.task = asyncio.current_task()
        r.running[self.answer_id] = self
        outcome = "failed"
        try:
            await self._register()
            outcome = await self._stream_and_publish()
        except LeaseLost:
            outcome = "interrupted"
            self.log.warning("lease lost: another replica finishes this answer")
        except Exception:
            self.log.exception("answer failed unexpectedly")
            await self._finish_after_bug()
        finally:
            r.running.pop(self.answer_id, None)
            r.metrics.answers_in_flight.dec()
            r.metrics.answers_finished.labels(outcome).inc()
            r.metrics.answer_duration.observe(r.clock() - self.q.received_at)
            if not self.final_sent and not self.lease_lost:
                # The record stays: its lease lapses and a janitor tries the final edit again.
                self.log.error("final edit not delivered; leaving the answer to the janitor")
            else:
                with contextlib.suppress(StoreError):
                    await r.store_call(
                        "finish", r.store.finish(self.answer_id, r.settings.replica_id)
                    )

    def interrupt(self, reason: str) -> bool:
        """End this answer now with `[interrupted: reason]`; False if it is already ending.

        Until the placeholder is posted the answer is not cancelled (a cancellation there
        could strand a placeholder that is already on its way): it starts interrupted instead."""
        if self.finishing or self.interruption is not None or self.task is None:
            return False
        self.interruption = reason
        if not self.starting:
            self.task.cancel()
        return True

    async def _register(self) -> None:
        now = self.r.wall()
        record = AnswerRecord(
            answer_id=self.answer_id,
            team_id=self.q.team_id,
            channel=self.q.channel,
            thread_ts=self.q.thread_ts,
            message_ts=self.message_ts,
            asker=self.q.user,
            owner=self.s.replica_id,
            started_at=now,
            heartbeat_at=now,
            lease_until=now + self.s.stream_lease_seconds,
            model=self.s.claude_model,
            question_ts=self.q.ts,
        )
        try:
            await self.r.store_call("register", self.r.store.register(record))
        except StoreError:
            self.log.warning("store unreachable: answer not registered for recovery")

    async def _stream_and_publish(self) -> str:
        """Post the placeholder, then run streamer, publisher and heartbeat; return the outcome.

        The answer is registered before its placeholder is posted, and the heartbeat runs from
        then until the final edit has landed, so a replica dying at any point leaves a record
        for a janitor: with no placeholder yet (or none recorded), the janitor looks for it in
        the thread, or posts the interruption itself. Under a busy workspace budget the final
        edit may wait longer than a lease, and a lapsed lease would hand the answer to a janitor
        while it is still being finished here.
        """
        heartbeat_task = asyncio.create_task(self._heartbeat())
        try:
            posted = await self._post_placeholder()
            self.starting = False
            if not posted:
                return "failed"
            self.r.metrics.answers_started.inc()
            if self.lease_lost:  # a janitor took the answer while the placeholder was posted
                await self._finish_taken_over()
                raise LeaseLost()
            if self.r.draining and self.interruption is None:
                self.interruption = SHUTDOWN_REASON
            if self.interruption is not None:
                self.finishing = True
                return await self._finish(self.interruption)
            stream_task = asyncio.create_task(self._stream())
            interrupted: str | None = None
            try:
                interrupted = await self._publish_until_done(stream_task)
            except asyncio.CancelledError:
                if self.interruption is None and not self.lease_lost:
                    raise  # cancelled from outside our own protocol: don't swallow it
                stream_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream_task
                if self.task is not None:
                    self.task.uncancel()
                interrupted = self.interruption
            if self.lease_lost:
                raise LeaseLost()
            self.finishing = True
            return await self._finish(interrupted)
        finally:
            self.heartbeat_stopped = True
            heartbeat_task.cancel()

    async def _post_placeholder(self) -> bool:
        """Post the placeholder into the question's thread; a rate limit or a passing failure is
        retried (honouring Retry-After) for up to PLACEHOLDER_DEADLINE. False when it could not
        be posted: after a permanent error there is nothing to finish; after the deadline the
        record is left for a janitor, which tries again later."""
        q = self.q
        payload = render.placeholder_payload(self.s.placeholder_text, answer_id=self.answer_id)
        deadline = self.r.clock() + PLACEHOLDER_DEADLINE
        backoff = 0.5
        while True:
            try:
                posted = await self.r.slack.call(
                    "chat.postMessage",
                    channel=q.channel,
                    thread_ts=q.thread_ts,
                    **payload.as_kwargs(),
                )
            except SlackFailure as e:
                if e.permanent or self.r.clock() + (e.retry_after or backoff) > deadline:
                    self.log.error("could not post the placeholder", extra={"error": e.error})
                    self.final_sent = e.permanent  # nothing was posted: nothing to finish
                    return False
                await asyncio.sleep(e.retry_after or backoff)
                backoff = min(backoff * 2, 10.0)
                if e.may_have_taken_effect and await self._adopt_placeholder():
                    return True  # it was posted after all: never post it twice
                continue
            self.message_ts = str(posted["ts"])
            self.checkpoint_now.set()  # record which message is ours at once
            return True

    async def _adopt_placeholder(self) -> bool:
        """After a post whose outcome is unknown: True if the placeholder is in the thread."""
        q = self.q
        try:
            found = await self.r.slack.answer_message(
                q.channel, q.thread_ts, self.answer_id, oldest=q.ts
            )
        except SlackFailure:
            return False  # unknown still: the next attempt posts, as before
        if found:
            self.log.warning("the placeholder was posted after all; using it")
            self.message_ts = found
            self.checkpoint_now.set()
        return bool(found)

    # -- streamer ------------------------------------------------------------------------------

    async def _stream(self) -> None:
        """Fold Claude's stream into `self.state`; errors propagate to the publisher."""
        r, st = self.r, self.state
        try:
            await self._wait_for_earlier_answers()
            conversation = await self._conversation()
            self.dropped_turns = conversation.dropped_turns
            await stream_answer(r.claude, self.s, conversation.messages, st, r.clock)
        finally:
            st.done.set()
            st.changed.set()

    async def _wait_for_earlier_answers(self) -> None:
        """One answer per thread at a time: wait (in question order) for earlier ones to finish,
        so this answer sees them in its context. Runs under the heartbeat, so waiting never
        lets the lease lapse; a dead replica's answer is cleared by the janitor within a lease."""
        q, r = self.q, self.r
        if q.thread_ts == q.ts:
            return  # the question starts its thread: nothing can be ahead of it
        shown_waiting = False
        while True:
            try:
                earlier = await r.store_call(
                    "earlier_in_thread", r.store.earlier_in_thread(q.channel, q.thread_ts, q.ts)
                )
            except StoreError:
                return  # degraded: answer now rather than wait blind
            if not earlier:
                return
            if not shown_waiting:
                shown_waiting = True
                self.log.info("waiting for an earlier answer in the thread")
                with contextlib.suppress(SlackFailure):
                    await self._update(
                        render.placeholder_payload(
                            "Waiting for the answer above to finish…", answer_id=self.answer_id
                        ),
                        EditKind.STATUS,
                    )
            await asyncio.sleep(THREAD_WAIT_POLL_SECONDS)

    async def _conversation(self) -> Conversation:
        """The thread as Claude turns; if Slack can't give us the thread, the question alone."""
        r, q = self.r, self.q
        identity = r._identity()
        try:
            thread = await self._read_thread()
        except SlackFailure as e:
            self.log.warning(
                "could not read the thread; answering the question alone", extra={"error": e.error}
            )
            thread = []
        if not any(m.get("ts") == q.ts for m in thread):
            thread.append({"ts": q.ts, "user": q.user, "text": q.text})
        people = sorted({str(m["user"]) for m in thread if m.get("user") and not m.get("bot_id")})
        names = await r.user_names(people)
        return build_conversation(
            thread,
            question_ts=q.ts,
            bot_user_id=identity.user_id,
            bot_id=identity.bot_id,
            names=names,
            token_budget=self.s.context_token_budget,
            skip_ts={self.message_ts},
        )

    async def _read_thread(self) -> list[dict[str, Any]]:
        """The thread's messages: the cached ones plus those Slack has after the newest cached.

        Only finished messages older than this answer's placeholder are cached, so a cached
        copy never holds an answer that was still streaming when it was read.
        """
        r, q = self.r, self.q
        key = f"{q.channel}:{q.thread_ts}"
        try:
            cached = await r.store_call("get_thread", r.store.get_thread(key)) or []
        except StoreError:
            cached = []
        oldest = cached[-1]["ts"] if cached else None
        by_ts = {str(m["ts"]): m for m in cached}
        async for message in r.slack.thread(q.channel, q.thread_ts, oldest=oldest):
            if message.get("ts"):
                by_ts[str(message["ts"])] = message
        thread = [by_ts[ts] for ts in sorted(by_ts, key=_ts_key)]
        settled = [
            m
            for m in thread
            if _ts_before(str(m["ts"]), self.message_ts) and render.stop_button_answer_id(m) is None
        ]
        with contextlib.suppress(StoreError):
            await r.store_call("put_thread", r.store.put_thread(key, settled, THREAD_CACHE_SECONDS))
        return thread

    # -- publisher -----------------------------------------------------------------------------

    async def _publish_until_done(self, stream_task: asyncio.Task[None]) -> str | None:
        """Paced edits while the stream runs; returns an interruption reason or None."""
        st = self.state
        retry_in: float | None = None
        while not st.done.is_set():
            if retry_in is None:
                await st.changed.wait()
            else:
                await self._sleep_unless_done(retry_in)
            st.changed.clear()
            retry_in = None
            if st.done.is_set():
                break
            if st.length == self.shown_upto:
                if st.thinking and not self.thinking_shown and not st.length:
                    self.thinking_shown = True
                    await self._show_thinking()
                continue
            kind = EditKind.FIRST if not self.first_text_shown else EditKind.INTERMEDIATE
            wait = self.pacer.wait(self.r.clock(), kind, st.deltas)
            if wait is None:
                continue
            if wait > 0:
                retry_in = wait
                continue
            not_before = await self._edit_streaming(kind)
            if not_before > 0:
                retry_in = min(max(not_before, 0.02), 5.0)
        try:
            await stream_task
        except Exception as e:
            failure = describe_failure(
                e,
                started=st.events > 0,
                mid_answer=st.length > 0,
                idle_timeout=self.s.stream_idle_timeout_seconds,
            )
            self.r.metrics.claude_errors.labels(failure.error_type).inc()
            self.log.warning(
                "claude stream failed", extra={"error_type": failure.error_type, "error": repr(e)}
            )
            if not st.length:
                self.failed_before_text = failure.reason
            return failure.reason
        if self.state.stop_reason is None:
            self.r.metrics.claude_errors.labels("no_message_delta").inc()
            self.log.warning("claude stream ended without message_delta")
            return "Claude's answer ended early"
        return None

    async def _sleep_unless_done(self, seconds: float) -> None:
        """Pacing waits ignore new deltas (they don't move the next edit) but not the end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.state.done.wait()

    async def _show_thinking(self) -> None:
        """Say that Claude is thinking: in the thread's status, and in the message unless the
        placeholder already says so (that edit would spend a budget token on nothing)."""
        label = "Thinking…"
        if self.s.placeholder_text != label:
            payload = render.thinking_payload(answer_id=self.answer_id, label=label)
            with contextlib.suppress(SlackFailure):
                await self._update(payload, EditKind.STATUS)
        with contextlib.suppress(SlackFailure):
            await self.r.slack.call(
                "assistant.threads.setStatus",
                channel_id=self.q.channel,
                thread_ts=self.q.thread_ts,
                status="is thinking…",
            )

    async def _edit_streaming(self, kind: EditKind) -> float:
        """Show the newest text: 0.0 when shown, else seconds before trying again (the budget
        had no token for this answer yet, or Slack refused the edit)."""
        r, st = self.r, self.state
        wait = await self._take_budget(kind, unshown_since=st.changed_at)
        if wait > 0:
            return wait
        text = st.text()
        st.changed_at = None
        await self._continue_long(text)
        part = render.part_text(text, self.offset)
        payload = render.streaming_payload(part, answer_id=self.answer_id)
        try:
            await self._update(payload, kind, budget_taken=True)
        except SlackFailure as e:
            if st.changed_at is None:
                st.changed_at = r.clock()
            if e.permanent:
                self.log.warning("edit refused", extra={"error": e.error})
            return e.retry_after or self.policy.interval or 1.0
        self.shown, self.shown_upto = part, len(text)
        if kind is EditKind.FIRST:
            self.first_text_shown = True
            self.checkpoint_now.set()
            r.metrics.time_to_first_text.observe(r.clock() - self.q.received_at)
        return 0.0

    async def _continue_long(self, text: str) -> None:
        """Close full messages and continue the answer in new messages of the thread.

        The cut is stable as the answer grows (render.next_cut), so a finished part never
        changes; a code block cut in two is closed in one message and reopened in the next.
        """
        while (cut := render.next_cut(text, render.BODY_LIMIT, start=self.offset)) is not None:
            part = render.part_text(text, self.offset, cut)
            await self._must_update(render.continued_payload(part), EditKind.CONTINUATION)
            posted = await self._must_post(render.streaming_payload("", answer_id=self.answer_id))
            self.offset = cut
            self.message_ts = posted
            self.shown, self.shown_upto = "", cut

    async def _take_budget(
        self,
        kind: EditKind,
        *,
        unshown_since: float | None = None,
        asked_at: float | None = None,
    ) -> float:
        """Take a token from the workspace edit budget: 0.0 when taken, else the seconds before
        trying again. `pacing.budget_claim` says how this edit competes: edits that must wait
        (final, continuation, a fresh first text) ask again until they get a token, the others
        are skipped. A first text stops waiting once the stream has ended (the final edit, which
        must go out anyway, shows the text, and the workspace saves a token) or once it is no
        longer fresh (it then waits its turn like any stale text). `asked_at` keeps a retried
        final edit's place in the arrival order."""
        r = self.r
        if not self.policy.shared_budget:
            return 0.0
        asked_at = r.clock() if asked_at is None else asked_at
        while True:
            if kind is EditKind.FIRST and self.state.done.is_set():
                r.metrics.edits_skipped.labels("first_text_overtaken").inc()
                return 1.0  # the stream ended while waiting: the final edit shows the text
            now = r.clock()
            claim = budget_claim(
                kind,
                staleness=now - unshown_since if unshown_since is not None else 0.0,
                waited=now - asked_at,
                interval=self.policy.interval or 1.0,
                competing=self.competing,
                per_minute=self.s.workspace_edits_per_minute,
                burst=self.s.workspace_edit_burst,
            )
            try:
                grant = await r.store_call(
                    "take_edit_token",
                    r.store.take_edit_token(
                        self.q.team_id,
                        now=r.wall(),
                        per_minute=self.s.workspace_edits_per_minute,
                        burst=self.s.workspace_edit_burst,
                        reserve=claim.reserve,
                        answer_id=self.answer_id,
                    ),
                )
            except StoreError:
                return 0.0  # degraded: per-message pacing still holds
            self.competing = max(1, grant.competing)
            if grant.granted:
                return 0.0
            if not claim.waits:
                r.metrics.edits_skipped.labels("budget").inc()
                return grant.wait
            if kind is EditKind.FIRST:
                await self._sleep_unless_done(grant.wait)  # wakes when the stream ends
            else:
                await asyncio.sleep(grant.wait)

    async def _update(
        self,
        payload: render.SlackPayload,
        kind: EditKind,
        *,
        budget_taken: bool = False,
        asked_at: float | None = None,
    ) -> None:
        """One chat.update of the current message; a 429 pauses the whole workspace."""
        r = self.r
        if not budget_taken and await self._take_budget(kind, asked_at=asked_at) > 0:
            return  # a status edit without a spare token: skipped
        self.pacer.sent(r.clock(), self.state.deltas)
        try:
            await r.slack.call(
                "chat.update", channel=self.q.channel, ts=self.message_ts, **payload.as_kwargs()
            )
        except SlackFailure as e:
            if e.rate_limited and self.policy.shared_budget:
                pause = e.retry_after or 1.0
                r.metrics.slack_rate_limit_pauses.inc()
                r.metrics.slack_rate_limit_pause_seconds.inc(pause)
                self.log.warning(
                    "chat.update rate limited: pausing the workspace's edits",
                    extra={"retry_after": pause},
                )
                until = r.wall() + pause
                with contextlib.suppress(StoreError):
                    await r.store_call("pause_edits", r.store.pause_edits(self.q.team_id, until))
            raise
        r.metrics.edits.labels(kind.value).inc()

    async def _must_update(self, payload: render.SlackPayload, kind: EditKind) -> bool:
        """An edit that must land (final, continuation): retried until Slack accepts it.

        chat.update replaces the whole message, so a retry after an unclear failure is idempotent.
        Returns False only when it gave up on an error that might still pass later.
        """
        asked_at = self.r.clock()  # retries keep their place in the budget's arrival order
        deadline = asked_at + FINAL_EDIT_DEADLINE
        backoff = 0.5
        attempts = 0
        plain = False
        while True:
            attempts += 1
            try:
                await self._update(payload, kind, asked_at=asked_at)
                return True
            except SlackFailure as e:
                limit = self.policy.final_attempts
                if limit is not None and attempts >= limit:
                    self.log.error("final edit lost (baseline policy)", extra={"error": e.error})
                    return True
                if e.permanent:
                    if not plain and e.error in _PAYLOAD_ERRORS:
                        # A rendering bug must not cost the answer: fall back to plain text.
                        self.log.error(
                            "payload refused; sending plain text", extra={"error": e.error}
                        )
                        payload, plain = render.SlackPayload(text=payload.text, blocks=[]), True
                        continue
                    self.log.error("final edit impossible", extra={"error": e.error})
                    return True
                if self.r.clock() > deadline:
                    self.log.error("final edit gave up after retries", extra={"error": e.error})
                    return False
                delay = e.retry_after if e.rate_limited else backoff
                backoff = min(backoff * 2, 10.0)
                await asyncio.sleep(delay or backoff)

    async def _must_post(self, payload: render.SlackPayload) -> str:
        """Post a continuation message (retried like a final edit); returns its ts."""
        backoff = 0.5
        while True:
            try:
                data = await self.r.slack.call(
                    "chat.postMessage",
                    channel=self.q.channel,
                    thread_ts=self.q.thread_ts,
                    **payload.as_kwargs(),
                )
                return str(data["ts"])
            except SlackFailure as e:
                if e.permanent:
                    raise
                await asyncio.sleep(e.retry_after or backoff)
                backoff = min(backoff * 2, 10.0)

    # -- the end -------------------------------------------------------------------------------

    async def _finish(self, interrupted: str | None) -> str:
        """Write the final message: footer, stop-reason note, `[interrupted]` when cut short."""
        st = self.state
        text = st.text()
        if self.failed_before_text is not None:
            await self._finish_failed(self.failed_before_text)
            return "failed"
        await self._continue_long(text)
        notes: list[str] = []
        note = render.stop_reason_note(st.stop_reason, st.stop_details)
        if interrupted is None and note:
            notes.append(note)
        footer = self._footer()
        if interrupted is not None:
            notes.append(render.interrupted_note(interrupted))
        body = render.part_text(text, self.offset)
        payload = render.final_payload(body, footer=footer, notes=notes)
        self.final_sent = await self._must_update(payload, EditKind.FINAL)
        if self.thinking_shown:  # an edit may not clear Slack's thread status; clear it ourselves
            with contextlib.suppress(SlackFailure):
                await self.r.slack.call(
                    "assistant.threads.setStatus",
                    channel_id=self.q.channel,
                    thread_ts=self.q.thread_ts,
                    status="",
                )
        if text and not self.first_text_shown:  # the whole answer arrived before the first edit
            self.r.metrics.time_to_first_text.observe(self.r.clock() - self.q.received_at)
        if st.usage is not None:
            self.r.metrics.tokens.labels("in").inc(st.usage.total_input)
            self.r.metrics.tokens.labels("out").inc(st.usage.output_tokens)
        self.log.info(
            "answer finished",
            extra={"interrupted": interrupted, "stop_reason": st.stop_reason, "chars": len(text)},
        )
        if interrupted is None:
            return "completed"
        return "stopped" if interrupted.startswith("stopped by") else "interrupted"

    def _footer(self) -> str | None:
        st = self.state
        if st.usage is None:
            return None
        model = st.model or self.s.claude_model
        cost = render.estimate_cost(st.usage, model) if self.s.show_cost else None
        return render.format_footer(
            st.usage,
            elapsed=self.r.clock() - self.q.received_at,
            model=model,
            cost_usd=cost,
            dropped_turns=self.dropped_turns,
        )

    async def _finish_taken_over(self) -> None:
        """Our placeholder landed after a janitor took the answer over (this replica could not
        renew its lease meanwhile): end it, so that whatever the janitor found, nothing is left
        on the placeholder."""
        payload = render.final_payload(
            "", footer=None, notes=[render.interrupted_note(TAKEN_OVER_REASON)]
        )
        await self._must_update(payload, EditKind.FINAL)

    async def _finish_after_bug(self) -> None:
        """Last resort after a bug: keep what was shown, end with [interrupted]; never raise.
        Without a placeholder there is nothing to edit: the janitor posts the interruption."""
        if self.final_sent or not self.message_ts:
            return
        self.finishing = True
        try:
            await self._finish("an unexpected error occurred")
        except Exception:
            self.log.exception("could not finish the message after an error")
            with contextlib.suppress(Exception):
                await self._must_update(
                    render.error_payload(
                        ":warning: Something went wrong while answering. Please try again."
                    ),
                    EditKind.FINAL,
                )

    async def _finish_failed(self, line: str) -> None:
        """Replace the placeholder by one clear line when nothing of the answer exists."""
        self.finishing = True
        payload = render.error_payload(f":warning: {line}")
        self.final_sent = await self._must_update(payload, EditKind.FINAL)

    async def _reclaim_after_store_loss(self) -> bool:
        """After a heartbeat is refused: True if the record was merely lost (e.g. Redis restarted
        without persistence) and has been registered again; False if another replica owns it."""
        try:
            record = await self.r.store_call("get", self.r.store.get(self.answer_id))
        except StoreError:
            return True
        if record is not None:
            return False
        if self.finishing or self.final_sent:
            return True  # nearly done: don't resurrect a record that finish() is about to drop
        self.log.warning("answer record vanished from the store; registering it again")
        await self._register()
        return True

    async def _heartbeat(self) -> None:
        """Renew the lease and checkpoint the shown text; watch for a Stop from any replica."""
        r = self.r
        period = max(0.05, min(self.s.stream_lease_seconds / 3, 5.0))
        checkpointed: tuple[str, str] | None = None
        # A flag as well as cancel(): on 3.11 a cancel landing inside redis-py's internal
        # wait_for can be swallowed, and this loop would outlive its answer.
        while not self.heartbeat_stopped:
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that lands as the inner wait completes, leaving this loop running forever.
                async with asyncio.timeout(period):
                    await self.checkpoint_now.wait()
            self.checkpoint_now.clear()
            shown = (self.message_ts, self.shown)
            changed = shown != checkpointed  # only send the text when it changed
            try:
                owned = await r.store_call(
                    "heartbeat",
                    r.store.heartbeat(
                        self.answer_id,
                        self.s.replica_id,
                        now=r.wall(),
                        lease_seconds=self.s.stream_lease_seconds,
                        shown_text=shown[1] if changed else None,
                        message_ts=shown[0] if changed else None,
                    ),
                )
                checkpointed = shown
                stopped_by = await r.store_call(
                    "cancel_requested", r.store.cancel_requested(self.answer_id)
                )
            except StoreError:
                continue  # degraded: keep streaming; the lease can't be renewed but isn't lost
            if self.heartbeat_stopped:
                return
            if not owned and not await self._reclaim_after_store_loss():
                self.lease_lost = True
                if self.task is not None and not self.starting:
                    self.task.cancel()
                return
            if stopped_by:
                self.interrupt(f"stopped by <@{stopped_by}>")
