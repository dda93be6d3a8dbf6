"""Slack calls through the bot's own client and shared session: failures become SlackFailure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.app import build_slack_client, slack_session
from bot.config import Settings
from bot.metrics import Metrics
from bot.sim.redis import free_port
from bot.sim.slack import SlackSim
from bot.slackapi import SlackCalls, SlackFailure


def calls_to(url: str) -> SlackCalls:
    settings = Settings(slack_bot_token="xoxb-sim", slack_api_url=url)
    client = build_slack_client(settings)
    client.session = slack_session(client)
    return SlackCalls(client, Metrics())


async def close(calls: SlackCalls) -> None:
    assert calls.client.session is not None
    await calls.client.session.close()


@pytest.fixture
async def hang_up() -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads each request and closes the connection without answering."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/api/", accepted


async def test_a_server_that_hangs_up_is_a_transient_connection_failure(
    hang_up: tuple[str, list[int]],
) -> None:
    url, accepted = hang_up
    calls = calls_to(url)
    try:
        with pytest.raises(SlackFailure) as caught:
            await calls.call("chat.update", channel="C1", ts="1.000100", text="hi")
    finally:
        await close(calls)
    assert caught.value.error.startswith("connection_error")
    assert not caught.value.permanent  # a final edit keeps retrying it
    assert len(accepted) == 3  # slack-sdk's connection-error retries (2) happened first


async def test_an_unreachable_slack_is_a_transient_connection_failure() -> None:
    calls = calls_to(f"http://127.0.0.1:{free_port()}/api/")
    try:
        with pytest.raises(SlackFailure) as caught:
            await calls.call("auth.test")
    finally:
        await close(calls)
    assert caught.value.error.startswith("connection_error") and not caught.value.permanent


async def test_calls_reuse_one_connection() -> None:
    async with SlackSim() as slack:
        slack.add_channel("C1")
        calls = calls_to(slack.api_url)
        calls.client.token = slack.bot_token
        try:
            posted = await calls.call("chat.postMessage", channel="C1", text="one")
            for n in range(5):
                await calls.call("chat.update", channel="C1", ts=posted["ts"], text=f"edit {n}")
        finally:
            await close(calls)
    assert len(slack.calls) == 6 and len({c.peer for c in slack.calls}) == 1
