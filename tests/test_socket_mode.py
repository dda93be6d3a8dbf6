"""`slackstream socket`: the same bot over Socket Mode, against the simulator's WebSocket."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

from bot.app import SlackStream
from bot.serving import connect_socket_mode, run_until_signalled, start_http
from bot.sim.claude import Script
from bot.sim.events import block_action_payload, mention_envelope
from tests.harness import ALICE, CHANNEL, TEAM, settings_for, simulators


async def test_mention_over_socket_mode_is_acknowledged_and_answered() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(text="Hello over the socket.", chunk_chars=4, chunk_delay=0.01),
            Script(text="never finished " * 300, chunk_chars=5, chunk_delay=0.02),
        )
        settings = settings_for(
            slack, claude, slack_signing_secret=None, slack_app_token="xapp-sim"
        )
        bot = SlackStream(settings)
        runner, _ = await start_http(bot, with_events=False)
        try:
            await bot.start()
            await connect_socket_mode(bot)
            await slack.wait_for(lambda: slack.socket_connections == 1)
            asked = slack.post_user_message(CHANNEL, "<@UBOT> hi", user=ALICE)
            envelope_id = await slack.push_socket(
                mention_envelope(
                    team_id=TEAM,
                    channel=CHANNEL,
                    user=ALICE,
                    text=asked.text,
                    ts=asked.ts,
                    bot_user_id="UBOT",
                )
            )
            await slack.wait_for(lambda: envelope_id in slack.socket_acks)

            def done(ts: str) -> bool:
                replies = slack.bot_replies(CHANNEL, ts)
                return bool(replies) and "Tokens:" in replies[-1].visible_text()

            await slack.wait_for(lambda: done(asked.ts))
            long = slack.post_user_message(CHANNEL, "<@UBOT> go long", user=ALICE)
            await slack.push_socket(
                mention_envelope(
                    team_id=TEAM,
                    channel=CHANNEL,
                    user=ALICE,
                    text=long.text,
                    ts=long.ts,
                    bot_user_id="UBOT",
                )
            )
            await slack.wait_for(lambda: bool(slack.bot_replies(CHANNEL, long.ts)))
            reply = slack.bot_replies(CHANNEL, long.ts)[0]
            await slack.push_socket(
                block_action_payload(
                    team_id=TEAM,
                    user=ALICE,
                    channel=CHANNEL,
                    message_ts=reply.ts,
                    action_id="stop_answer",
                    value=f"{TEAM}-{CHANNEL}-{long.ts}",
                ),
                kind="interactive",
            )
            await slack.wait_for(
                lambda: (
                    "[interrupted: stopped by"
                    in slack.bot_replies(CHANNEL, long.ts)[0].visible_text()
                )
            )
        finally:
            await bot.shutdown()
            await runner.cleanup()
    assert "Hello over the socket." in slack.bot_replies(CHANNEL, asked.ts)[0].visible_text()
    assert slack.socket_connections == 0  # shutdown closed the connection before draining


async def test_no_event_is_acknowledged_before_the_bot_can_answer_it() -> None:
    """The connection opens only once the bot has started (auth.test passed, its earlier
    answers recovered): an event Slack pushes can never be acknowledged and then lost."""
    async with simulators() as (slack, claude):
        settings = settings_for(
            slack, claude, slack_signing_secret=None, slack_app_token="xapp-sim"
        )
        bot = SlackStream(settings)
        slack.fail_next["auth.test"] = ["http_500", "http_500"]  # Slack slow to let us in

        async def setup() -> Callable[[], Awaitable[None]]:
            runner, _ = await start_http(bot, with_events=False)
            return runner.cleanup

        serving = asyncio.create_task(
            run_until_signalled(bot, runner_setup=setup, open_intake=connect_socket_mode)
        )
        try:
            await slack.wait_for(lambda: len(slack.calls_to("auth.test")) >= 2)
            assert slack.socket_connections == 0 and not bot.ready
            await slack.wait_for(lambda: slack.socket_connections == 1, timeout=10)
            assert bot.ready
            asked = slack.post_user_message(CHANNEL, "<@UBOT> hi", user=ALICE)
            envelope_id = await slack.push_socket(
                mention_envelope(
                    team_id=TEAM,
                    channel=CHANNEL,
                    user=ALICE,
                    text=asked.text,
                    ts=asked.ts,
                    bot_user_id="UBOT",
                )
            )
            await slack.wait_for(lambda: envelope_id in slack.socket_acks)
            await slack.wait_for(
                lambda: any(
                    "Tokens:" in r.visible_text() for r in slack.bot_replies(CHANNEL, asked.ts)
                )
            )
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(serving, 30)
    assert slack.socket_connections == 0
