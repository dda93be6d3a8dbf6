"""`slackstream demo`: the whole pipeline offline, shown in the terminal.

A simulated Slack workspace and a simulated Claude run on loopback; the real bot (`serve` mode,
signed HTTP events, Bolt, the Slack and Anthropic SDKs, the store) answers one mention, and the
terminal shows the placeholder, each edit as Slack receives it, and the final message.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from bot.app import SlackStream, start_http
from bot.logs import configure_logging
from bot.sim.claude import ClaudeSim
from bot.sim.events import EventPoster, mention_envelope
from bot.sim.settings import SIM_SIGNING_SECRET, sim_settings
from bot.sim.slack import SimMessage, SlackSim

DEFAULT_QUESTION = "How does a token bucket rate limiter work? [sim:long 1800] [sim:slow]"
CHANNEL, USER = "C0DEMO", "U0ALICE"


class TerminalView:
    """Prints what a Slack user would see, as Slack's message store changes."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out = out
        self.started = started
        self.edits = 0

    def __call__(self, kind: str, message: SimMessage) -> None:
        if message.user != "UBOT":
            return
        at = time.monotonic() - self.started
        text = message.visible_text()
        if kind == "posted":
            self.out.write(f"[{at:6.2f}s] placeholder posted: {text!r}\n")
        elif message.has_button("stop_answer"):
            self.edits += 1
            tail = text[-70:].replace("\n", " ⏎ ")
            self.out.write(f"[{at:6.2f}s] edit {self.edits:>3}: {len(text):>5} chars …{tail}\n")
        else:
            self.out.write(f"[{at:6.2f}s] final message:\n{'-' * 72}\n{text}\n{'-' * 72}\n")
        self.out.flush()


async def run_demo(question: str = DEFAULT_QUESTION, out: TextIO = sys.stdout) -> SimMessage:
    """Answer one mention end to end; return the bot's final message."""
    async with SlackSim() as slack, ClaudeSim() as claude:
        slack.add_channel(CHANNEL)
        slack.add_user(USER, "alice", real_name="Alice")
        settings = sim_settings(slack, claude, log_level="WARNING", log_format="text")
        bot = SlackStream(settings)
        runner, url = await start_http(bot)
        await bot.start()
        view = TerminalView(out, time.monotonic())
        slack.on_change.append(view)
        poster = EventPoster(f"{url}/slack/events", SIM_SIGNING_SECRET)
        try:
            asked = slack.post_user_message(CHANNEL, f"<@UBOT> {question}", user=USER)
            out.write(f"[  0.00s] <alice> @claude {question}\n")
            status, _ = await poster.post_event(
                mention_envelope(
                    team_id="T0001",
                    channel=CHANNEL,
                    user=USER,
                    text=asked.text,
                    ts=asked.ts,
                    bot_user_id="UBOT",
                )
            )
            if status != 200:
                raise RuntimeError(f"the bot refused the event (HTTP {status})")

            def finished() -> bool:
                replies = slack.bot_replies(CHANNEL, asked.ts)
                return (
                    bool(replies)
                    and not replies[-1].has_button("stop_answer")
                    and (
                        "Tokens:" in replies[-1].visible_text()
                        or "[interrupted" in replies[-1].visible_text()
                    )
                )

            await slack.wait_for(finished, timeout=120)
            return slack.bot_replies(CHANNEL, asked.ts)[-1]
        finally:
            await poster.close()
            await bot.shutdown()
            await runner.cleanup()


def main(question: str | None = None) -> int:
    configure_logging("WARNING", "text")
    print("slackstream demo: a simulated Slack workspace and a simulated Claude, on loopback.")
    asyncio.run(run_demo(question or DEFAULT_QUESTION))
    return 0
