"""An in-process bot wired to the simulators over loopback HTTP, for integration tests.

Everything crosses a real socket: signed events into the bot's aiohttp server, the real
slack-sdk client into `SlackSim`, the real Anthropic SDK into `ClaudeSim`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bot.app import SlackStream, start_http
from bot.config import Settings
from bot.sim.claude import ClaudeSim, Script
from bot.sim.events import EventPoster, dm_envelope, mention_envelope
from bot.sim.settings import SIM_SIGNING_SECRET, sim_settings
from bot.sim.slack import SimMessage, SlackSim
from bot.store import Store

SECRET = SIM_SIGNING_SECRET
TEAM, CHANNEL, DM = "T0001", "C0GENERAL", "D0ALICE"
ALICE, BOB, ADMIN = "U0ALICE", "U0BOB", "U0ADMIN"


@dataclass
class Harness:
    slack: SlackSim
    claude: ClaudeSim
    bot: SlackStream
    poster: EventPoster
    url: str

    async def mention(
        self,
        text: str,
        *,
        user: str = ALICE,
        thread_ts: str | None = None,
        event_id: str | None = None,
    ) -> SimMessage:
        """A person mentions the bot; Slack stores the message and delivers the event."""
        asked = self.slack.post_user_message(
            CHANNEL, f"<@UBOT> {text}", user=user, thread_ts=thread_ts
        )
        status, body = await self.poster.post_event(
            mention_envelope(
                team_id=TEAM,
                channel=CHANNEL,
                user=user,
                text=asked.text,
                ts=asked.ts,
                thread_ts=thread_ts,
                bot_user_id="UBOT",
                event_id=event_id,
            )
        )
        assert status == 200, body
        return asked

    async def dm(self, text: str, *, user: str = ALICE) -> SimMessage:
        asked = self.slack.post_user_message(DM, text, user=user)
        status, body = await self.poster.post_event(
            dm_envelope(
                team_id=TEAM,
                channel=DM,
                user=user,
                text=text,
                ts=asked.ts,
            )
        )
        assert status == 200, body
        return asked

    def replies(self, asked: SimMessage, channel: str = CHANNEL) -> list[SimMessage]:
        return self.slack.bot_replies(channel, asked.thread_ts or asked.ts)

    async def finished(
        self, asked: SimMessage, channel: str = CHANNEL, timeout: float = 15.0
    ) -> list[SimMessage]:
        """Wait until the bot's answer to `asked` is final (no Stop button, footer or note)."""

        def done() -> bool:
            replies = self.replies(asked, channel)
            if not replies or any(r.has_button("stop_answer") for r in replies):
                return False
            last = replies[-1].visible_text()
            return last != self.bot.settings.placeholder_text and (
                "Tokens:" in last or "[interrupted" in last or ":warning:" in last
            )

        await self.slack.wait_for(done, timeout=timeout)
        return self.replies(asked, channel)


def settings_for(slack: SlackSim, claude: ClaudeSim, **overrides: Any) -> Settings:
    """Fast, test-sized timings on top of the simulators' wiring."""
    values: dict[str, Any] = {
        "edit_interval_seconds": 0.2,
        "stream_idle_timeout_seconds": 2.0,
        "stream_lease_seconds": 3.0,
        "shutdown_grace_seconds": 2.0,
        "replica_id": "test-replica",
        "show_cost": True,
    }
    values.update(overrides)
    return sim_settings(slack, claude, **values)


@asynccontextmanager
async def running_bot(
    slack: SlackSim, claude: ClaudeSim, *, store: Store | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """A started bot serving HTTP on a free loopback port; drained and closed afterwards."""
    settings = settings_for(slack, claude, **overrides)
    bot = SlackStream(settings, store=store)
    runner, url = await start_http(bot)
    await bot.start()
    poster = EventPoster(f"{url}/slack/events", SECRET)
    try:
        yield Harness(slack, claude, bot, poster, url)
    finally:
        await poster.close()
        await bot.shutdown()
        await runner.cleanup()


@asynccontextmanager
async def simulators(
    *, claude_default: Script | None = None, **slack_kw: Any
) -> AsyncIterator[tuple[SlackSim, ClaudeSim]]:
    async with SlackSim(**slack_kw) as slack, ClaudeSim(default=claude_default) as claude:
        slack.add_channel(CHANNEL)
        slack.add_channel(DM, is_im=True)
        slack.add_user(ALICE, "alice", real_name="Alice")
        slack.add_user(BOB, "bob", real_name="Bob")
        slack.add_user(ADMIN, "root", real_name="Ada Admin", is_admin=True)
        yield slack, claude
