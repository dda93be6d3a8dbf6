"""What an answer asks Claude: its thread read as Claude's turns (with people's names and the
files posted in it), and Claude's reply streamed into the answer's `StreamState`, once more
without the files when Claude cannot read one of them.

The answer decides when to ask and how it ends; this says what is asked, and keeps what the
end needs to know of it: how many earlier turns were left out, and which files were not read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anthropic

from bot.claude import StreamState, stream_answer
from bot.config import Settings
from bot.conversation import Conversation, build_conversation
from bot.files import NO_FILES, FileReader
from bot.logs import ContextLog
from bot.question import BotIdentity, Question
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import Store, StoreError
from bot.thread import ThreadReader

THREAD_WAIT_POLL_SECONDS = 0.25  # a follow-up question re-checks its thread this often


@dataclass
class Asked:
    """What the end of an answer needs to know of what was asked."""

    dropped_turns: int = 0  # earlier messages left out to fit CONTEXT_TOKEN_BUDGET
    file_note: str | None = None  # the closing line naming files that were not read


class Asking:
    """See the module docstring. `know` hears the names of the thread's people (the answer's
    message shows a mention as a name); `own_ts` (given to `stream`) is the answer's
    message, left out of the thread; `files` is the channel's files switch."""

    def __init__(
        self,
        *,
        q: Question,
        settings: Settings,
        slack: SlackCalls,
        store: Store,
        claude: anthropic.AsyncAnthropic,
        threads: ThreadReader,
        identity: Callable[[], BotIdentity],
        context_budget: int,
        clock: Callable[[], float],
        log: ContextLog,
        know: Callable[[dict[str, str]], None],
        files: bool,
    ) -> None:
        self.q = q
        self.settings = settings
        self.claude = claude
        self.threads = threads
        self.identity = identity
        self.context_budget = context_budget
        self.clock = clock
        self.log = log
        self.know = know
        self.fetch_files = files
        self.store = store
        self.reader = FileReader(slack=slack, store=store, settings=settings, log=log)
        self.thread_files = NO_FILES
        self.asked = Asked()

    async def wait_turn(
        self, *, stopped: Callable[[], bool], waiting: Callable[[], Awaitable[None]]
    ) -> None:
        """One answer per thread at a time: wait (in question order) for earlier ones to
        finish, so this one sees them in its context (`waiting` says so, once). A dead
        replica's answer is cleared by a janitor within a lease."""
        q = self.q
        if q.thread_ts == q.ts:
            return  # the question starts its thread: nothing can be ahead of it
        said = False
        while not stopped():
            try:
                earlier = await self.store.earlier_in_thread(q.channel, q.thread_ts, q.ts)
            except StoreError:
                return  # degraded: answer now rather than wait blind
            if not earlier:
                return
            if not said:
                said = True
                await waiting()
            await asyncio.sleep(THREAD_WAIT_POLL_SECONDS)

    async def stream(self, state: StreamState, *, own_ts: str) -> None:
        """Ask Claude and fold its reply into `state`; errors propagate (the answer names them)."""
        conversation = await self._conversation(own_ts, fetch_files=self.fetch_files)
        try:
            await self._ask(conversation, state)
        except anthropic.BadRequestError:
            if not self.thread_files.sent or state.events:
                raise
            # Claude refused the request with its files (one it cannot read after all, such as a
            # broken PDF): the same question once more without them, named as left out.
            self.log.warning("Claude refused the request with its files; asking again without them")
            self.thread_files = self.thread_files.without_files("Claude could not read it")
            await self._ask(await self._conversation(own_ts, fetch_files=False), state)

    async def _ask(self, conversation: Conversation, state: StreamState) -> None:
        self.asked.dropped_turns = conversation.dropped_turns
        await stream_answer(self.claude, self.settings, conversation.messages, state, self.clock)

    async def _conversation(self, own_ts: str, *, fetch_files: bool) -> Conversation:
        """The thread as Claude turns; if Slack can't give us the thread, the question alone."""
        q = self.q
        identity = self.identity()
        try:
            thread = await self.threads.messages(q.channel, q.thread_ts, before_ts=own_ts)
        except SlackFailure as e:
            self.log.warning(
                "could not read the thread; answering the question alone", extra={"error": e.error}
            )
            thread = []
        if not any(m.get("ts") == q.ts for m in thread):
            thread.append({"ts": q.ts, "user": q.user, "text": q.text})
        people = sorted({str(m["user"]) for m in thread if m.get("user") and not m.get("bot_id")})
        async with asyncio.TaskGroup() as lookups:  # the names and the files at once
            named = lookups.create_task(self.threads.names(people))
            if fetch_files:
                own = (identity.user_id, identity.bot_id)
                files = lookups.create_task(
                    self.reader.read(thread, team_id=q.team_id, question_ts=q.ts, own=own)
                )
        names = named.result()
        self.know(names)
        if fetch_files:
            self.thread_files = files.result()
        conversation = build_conversation(
            thread,
            question_ts=q.ts,
            bot_user_id=identity.user_id,
            bot_id=identity.bot_id,
            names=names,
            token_budget=self.context_budget,
            skip_ts={own_ts},
            attachments=self.thread_files.by_ts,
        )
        self.asked.file_note = self.thread_files.closing_note(conversation.files_left_out)
        return conversation
