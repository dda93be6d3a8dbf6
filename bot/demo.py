"""`slackstream demo`: the whole pipeline offline, shown in the terminal.

A simulated Slack workspace and a simulated Claude run on loopback; the real bot (`serve` mode,
signed HTTP events, Bolt, the Slack and Anthropic SDKs, the store) answers one mention, and the
terminal shows the placeholder, each edit as Slack receives it, the final message with its
feedback buttons, and the usage report that answer was counted in.

The simulated Claude streams at about a reader's pace so the edits can be watched arriving
(`[sim:fast]` turns that off). With `REDIS_URL` set the demo keeps its state in that Redis,
under its own key prefix, as a deployment would.

`[sim:image]` in the question attaches a sample photo to it (3,000 × 2,000 px, so the bot
scales it down before sending it), and the simulated Claude first says what it was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import time
from typing import Any, TextIO

from bot.config import ConfigError, load_settings
from bot.logs import configure_logging
from bot.report import as_table, usage_report
from bot.sim import samples
from bot.sim.claude import Script, default_script
from bot.sim.content_blocks import describe_media
from bot.sim.rig import ALICE, running_bot, simulators
from bot.sim.slack import SimMessage
from bot.sim.slack_views import feedback_element
from bot.store import MemoryStore, RedisStore, Store

DEFAULT_QUESTION = "How does a token bucket rate limiter work? [sim:long 1800]"
# About 300 characters a second (12-character deltas): Claude's pace on a long answer.
DEMO_CHUNK_DELAY = 0.04
# The demo waits this long for a silent Claude (a deployment's default is 60 s).
DEMO_IDLE_TIMEOUT = 15.0
QUIET_NOTICE_AFTER = 3.0  # seconds without any change before the demo says what it waits for
DEMO_REDIS_PREFIX = "slackstream-demo:"  # never the keys of a deployment sharing that Redis
IMAGE_DIRECTIVE = "[sim:image]"  # attaches a sample photo to the question


def demo_script(body: dict[str, Any], *, chunk_delay: float) -> Script:
    """The simulated Claude's default answer, opened by what it was shown (files)."""
    script = default_script(body, chunk_delay=chunk_delay)
    seen = describe_media(body)
    if seen:
        script.text = f"I was shown {seen}.\n\n{script.text}"
    return script


class TerminalView:
    """Prints what a Slack user would see, as Slack's message store changes."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out = out
        self.started = started
        self.edits = 0
        self.last_change = started

    def __call__(self, kind: str, message: SimMessage) -> None:
        if message.user != "UBOT":
            return
        self.last_change = time.monotonic()
        text = message.visible_text()
        if kind == "posted":
            self.say(f"placeholder posted: {text!r}")
        elif message.has_button("stop_answer"):
            self.edits += 1
            tail = text[-70:].replace("\n", " ⏎ ")
            self.say(f"edit {self.edits:>3}: {len(text):>5} chars …{tail}")
        else:
            buttons = (
                "\n[ 👍 ] [ 👎 ]  (Slack's feedback buttons)" if feedback_element(message) else ""
            )
            self.say(f"final message:\n{'-' * 72}\n{text}{buttons}\n{'-' * 72}")

    def say(self, line: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:6.2f}s] {line}\n")
        self.out.flush()

    async def explain_silences(self, idle_timeout: float) -> None:
        """Say what the bot is waiting for whenever nothing has changed for a while, so a
        silent stream (`[sim:stall]`) does not look like a hung demo."""
        noticed = 0.0
        while True:
            await asyncio.sleep(0.5)
            quiet = time.monotonic() - self.last_change
            if quiet >= QUIET_NOTICE_AFTER and self.last_change != noticed:
                noticed = self.last_change
                self.say(
                    f"(no new text from Claude for {quiet:.0f} s: the bot waits until "
                    f"{idle_timeout:g} s of silence, STREAM_IDLE_TIMEOUT_SECONDS, then ends "
                    "the answer with [interrupted])"
                )


def demo_store() -> Store | None:
    """The demo's store: Redis when REDIS_URL is set (under the demo's own key prefix),
    else None for the in-process one."""
    url = os.environ.get("REDIS_URL") or None
    if url is None:
        return None
    settings = load_settings(redis_url=url)  # the same one-line error for a bad URL
    assert settings.redis_url is not None
    return RedisStore.from_url(settings.redis_url, prefix=DEMO_REDIS_PREFIX)


async def run_demo(
    question: str = DEFAULT_QUESTION,
    out: TextIO = sys.stdout,
    *,
    chunk_delay: float = DEMO_CHUNK_DELAY,
    idle_timeout: float = DEMO_IDLE_TIMEOUT,
    store: Store | None = None,
    usage: bool = True,
) -> SimMessage:
    """Answer one mention end to end; return the bot's final message."""
    claude_default = functools.partial(demo_script, chunk_delay=chunk_delay)
    async with (
        simulators(claude_default=claude_default) as (slack, claude),
        running_bot(
            slack,
            claude,
            # Said once below ("store: memory"), not as the deployment warning about one replica.
            store=store or MemoryStore(),
            fast=False,
            log_level="WARNING",
            log_format="text",
            stream_idle_timeout_seconds=idle_timeout,
        ) as harness,
    ):
        view = TerminalView(out, time.monotonic())
        slack.on_change.append(view)
        explainer = asyncio.create_task(view.explain_silences(idle_timeout))
        try:
            view.say(f"store: {harness.bot.store.kind}")
            files = []
            if IMAGE_DIRECTIVE in question:
                photo = samples.photo(3000, 2000)
                files.append(slack.files.upload("sample-photo.jpg", photo, mimetype="image/jpeg"))
                view.say(f"(attached sample-photo.jpg: 3000×2000 px, {len(photo):,} bytes)")
            view.say(f"<alice> @claude {question}")
            asked = await harness.mention(question, user=ALICE, files=files)
            replies = await harness.finished(asked, timeout=idle_timeout + 120)
            if usage:
                bot = harness.bot
                report = await usage_report(bot.store, bot.calendar, by=("channel", "model"))
                table = as_table(report, ("channel", "model")).rstrip()
                view.say(f"usage report (slackstream usage --by channel,model):\n{table}")
            return replies[-1]
        finally:
            explainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await explainer


def main(question: str | None = None) -> int:
    configure_logging("WARNING", "text")
    print("slackstream demo: a simulated Slack workspace and a simulated Claude, on loopback.")
    try:
        store = demo_store()
    except ConfigError as e:
        print(f"slackstream: {e}", file=sys.stderr)
        return 2
    asyncio.run(run_demo(question or DEFAULT_QUESTION, store=store))
    return 0
