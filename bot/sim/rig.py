"""The one way to run the bot on the simulators: for the tests, the benchmarks and the demo.

Everything crosses a real socket: signed events into the bot's aiohttp server, the real
slack-sdk client into `SlackSim`, the real Anthropic SDK into `ClaudeSim`.

- `simulators()`: a started SlackSim and ClaudeSim with the standard workspace (a channel, a DM
  and three people);
- `sim_settings()`: the bot's settings for them (no real credentials, loopback only), with
  test-sized timings unless `fast=False`; `sim_environment()` is the same as a process's
  environment, for `slackstream serve` in a child process (`bot.sim.replica`);
- `running_bot()`: a started bot serving HTTP on a free loopback port, with a signed event
  poster, as a `Harness` that mentions it, DMs it and waits for its finished answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bot.app import SlackStream
from bot.config import Settings
from bot.pacing import PacingPolicy
from bot.render import STOP_ACTION_ID
from bot.serving import start_http
from bot.sim.claude import ClaudeSim, ScriptSource
from bot.sim.events import EventPoster, dm_envelope, mention_envelope
from bot.sim.slack import DEFAULT_BOT_TOKEN, SimMessage, SlackSim
from bot.store import Store

SECRET = "sim-signing-secret"  # the signing secret the bot is given and events are signed with
TEAM, CHANNEL, DM = "T0001", "C0GENERAL", "D0ALICE"
ALICE, BOB, ADMIN = "U0ALICE", "U0BOB", "U0ADMIN"
BOT_USER = "UBOT"  # SlackSim's default bot user

# Test-sized timings: edits five times a second, a silent stream given up after 2 s, leases that
# lapse within seconds, a short drain. A deployment's defaults (`fast=False`) are minutes long.
FAST: Mapping[str, Any] = MappingProxyType(
    {
        "edit_interval_seconds": 0.2,
        "stream_idle_timeout_seconds": 2.0,
        "stream_lease_seconds": 3.0,
        "shutdown_grace_seconds": 2.0,
        "replica_id": "test-replica",
        "show_cost": True,
    }
)


def sim_values(
    slack_url: str, claude_url: str, *, fast: bool = True, **overrides: Any
) -> dict[str, Any]:
    """`Settings` fields for a bot wired to the simulators at these URLs; overrides win."""
    values: dict[str, Any] = {
        "slack_bot_token": DEFAULT_BOT_TOKEN,
        "slack_signing_secret": SECRET,
        "anthropic_api_key": "sk-sim",
        "slack_api_url": slack_url,
        "anthropic_base_url": claude_url,
        "redis_url": None,
        "host": "127.0.0.1",
        "port": 0,
        **(FAST if fast else {}),
    }
    values.update(overrides)
    return values


def sim_settings(
    slack: SlackSim, claude: ClaudeSim, *, fast: bool = True, **overrides: Any
) -> Settings:
    """The bot's settings for these simulators: test-sized timings, or with `fast=False` the
    defaults a deployment has (the demo's and the benchmarks'); overrides win."""
    wiring = {"slack_bot_token": slack.bot_token, **overrides}
    return Settings(**sim_values(slack.api_url, claude.base_url, fast=fast, **wiring))


def sim_environment(
    slack_url: str, claude_url: str, *, fast: bool = False, **overrides: Any
) -> dict[str, str]:
    """`sim_values` as environment variables (settings left unset are left out)."""
    values = sim_values(slack_url, claude_url, fast=fast, **overrides)
    return {name.upper(): str(value) for name, value in values.items() if value is not None}


@asynccontextmanager
async def simulators(
    *, claude_default: ScriptSource | None = None, **slack_kw: Any
) -> AsyncIterator[tuple[SlackSim, ClaudeSim]]:
    """Started simulators with the standard workspace: CHANNEL, the DM with ALICE, and ALICE,
    BOB and ADMIN (a workspace admin); `slack_kw` goes to `SlackSim`."""
    async with SlackSim(**slack_kw) as slack, ClaudeSim(default=claude_default) as claude:
        slack.add_channel(CHANNEL)
        slack.add_channel(DM, is_im=True)
        slack.add_user(ALICE, "alice", real_name="Alice")
        slack.add_user(BOB, "bob", real_name="Bob")
        slack.add_user(ADMIN, "root", real_name="Ada Admin", is_admin=True)
        yield slack, claude


def event_poster(bot_url: str, *, connection_limit: int = 100) -> EventPoster:
    """Slack's event delivery to a bot served at `bot_url`, signed with SECRET."""
    return EventPoster(f"{bot_url}/slack/events", SECRET, connection_limit=connection_limit)


def is_finished(message: SimMessage) -> bool:
    """Whether a bot message ends an answer: no Stop button, and a footer or a note."""
    text = message.visible_text()
    return not message.has_button(STOP_ACTION_ID) and (
        "Tokens:" in text or "[interrupted" in text or ":warning:" in text
    )


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
        files: list[dict[str, Any]] | None = None,
    ) -> SimMessage:
        """A person mentions the bot (with `files`: file objects of `slack.files.upload`);
        Slack stores the message and delivers the event."""
        asked = self.slack.post_user_message(
            CHANNEL, f"<@{BOT_USER}> {text}", user=user, thread_ts=thread_ts, files=files
        )
        await self._deliver(
            mention_envelope(
                team_id=TEAM,
                channel=CHANNEL,
                user=user,
                text=asked.text,
                ts=asked.ts,
                thread_ts=thread_ts,
                bot_user_id=BOT_USER,
                event_id=event_id,
                files=files,
            )
        )
        return asked

    async def dm(self, text: str, *, user: str = ALICE) -> SimMessage:
        asked = self.slack.post_user_message(DM, text, user=user)
        await self._deliver(
            dm_envelope(team_id=TEAM, channel=DM, user=user, text=text, ts=asked.ts)
        )
        return asked

    async def _deliver(self, envelope: dict[str, Any]) -> None:
        status, body = await self.poster.post_event(envelope)
        if status != 200:
            raise RuntimeError(f"the bot refused the event: HTTP {status} {body}")

    def replies(self, asked: SimMessage, channel: str = CHANNEL) -> list[SimMessage]:
        return self.slack.bot_replies(channel, asked.thread_ts or asked.ts)

    async def finished(
        self,
        asked: SimMessage,
        channel: str = CHANNEL,
        timeout: float = 15.0,  # noqa: ASYNC109 (as SlackSim.wait_for)
    ) -> list[SimMessage]:
        """Wait until the bot's answer to `asked` is final (no Stop button, footer or note)."""

        def done() -> bool:
            replies = self.replies(asked, channel)
            if not replies or any(r.has_button(STOP_ACTION_ID) for r in replies):
                return False
            return is_finished(replies[-1])

        await self.slack.wait_for(done, timeout=timeout)
        return self.replies(asked, channel)


@asynccontextmanager
async def running_bot(
    slack: SlackSim,
    claude: ClaudeSim,
    *,
    store: Store | None = None,
    policy: PacingPolicy | None = None,
    fast: bool = True,
    shutdown_timeout: float | None = None,
    wall_clock: Callable[[], float] = time.time,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A started bot serving HTTP on a free loopback port; drained and closed afterwards.

    Settings are `sim_settings(slack, claude, fast=fast, **overrides)`. `shutdown_timeout`
    bounds the drain, after which the bot is left as it is (None: no bound but the bot's own).
    `wall_clock` is the usage calendar's clock (days and months: budgets, counters).
    """
    settings = sim_settings(slack, claude, fast=fast, **overrides)
    bot = SlackStream(settings, store=store, policy=policy, wall_clock=wall_clock)
    runner, url = await start_http(bot)
    await bot.start()
    poster = event_poster(url)
    try:
        yield Harness(slack, claude, bot, poster, url)
    finally:
        await poster.close()
        if shutdown_timeout is None:
            await bot.shutdown()
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(shutdown_timeout):
                    await bot.shutdown()
        await runner.cleanup()
