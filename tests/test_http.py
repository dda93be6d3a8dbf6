"""The HTTP surface: signatures, bad input, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from bot.app import SlackStream
from bot.serving import run_until_signalled, start_http
from bot.sim.events import mention_envelope, sign
from bot.store import MemoryStore
from tests.harness import (
    ALICE,
    CHANNEL,
    SECRET,
    TEAM,
    running_bot,
    settings_for,
    simulators,
)


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_forged_and_stale_signatures_get_401_and_never_reach_claude() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        envelope = mention_envelope(
            team_id=TEAM,
            channel=CHANNEL,
            user=ALICE,
            text="<@UBOT> hi",
            ts="1700000000.000100",
            bot_user_id="UBOT",
        )
        forged, _ = await h.poster.post_event(envelope, secret="not-the-secret")
        stale, _ = await h.poster.post_event(envelope, timestamp=int(time.time()) - 301)
        unsigned, _ = await h.poster.post_raw(
            json.dumps(envelope).encode(), {"Content-Type": "application/json"}
        )
    assert (forged, stale, unsigned) == (401, 401, 401)
    assert claude.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'{"no_type": true}',
        b"\xff\xfe\x00garbage",
        b"",
    ],
    ids=["broken-json", "array", "no-type", "not-utf8", "empty"],
)
async def test_malformed_signed_body_gets_400(body: bytes) -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        headers = {**sign(body, SECRET, int(time.time())), "Content-Type": "application/json"}
        status, text = await h.poster.post_raw(body, headers)
        alive, _ = await _get(f"{h.url}/healthz")
    assert status == 400, text
    assert alive == 200
    assert claude.requests == []


async def test_unknown_event_types_and_huge_bodies_do_not_crash() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        odd = {
            "type": "event_callback",
            "team_id": TEAM,
            "event_id": "Ev1",
            "event": {"type": "reaction_added", "user": ALICE, "reaction": "👍"},
        }
        status, _ = await h.poster.post_event(odd)
        huge = b'{"type": "event_callback", "pad": "' + b"x" * 2_000_000 + b'"}'
        headers = {**sign(huge, SECRET, int(time.time())), "Content-Type": "application/json"}
        huge_status, _ = await h.poster.post_raw(huge, headers)
        asked = await h.mention("still alive? ✅ ñ 日本語 \u200d\U0001f469\u200d\U0001f4bb")
        [reply] = await h.finished(asked)
    assert status == 200
    assert huge_status == 413
    assert "Tokens:" in reply.visible_text()
    assert "日本語" in str(claude.requests[-1]["messages"])


async def test_url_verification_challenge_is_answered() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        status, body = await h.poster.post_event(
            {"type": "url_verification", "challenge": "abc123", "token": "x"}
        )
    assert status == 200 and "abc123" in body


async def test_health_readiness_and_metrics() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        asked = await h.mention("count me")
        await h.finished(asked)
        health, _ = await _get(f"{h.url}/healthz")
        ready, ready_body = await _get(f"{h.url}/readyz")
        metrics_status, metrics = await _get(f"{h.url}/metrics")
    assert health == 200
    assert ready == 200
    assert json.loads(ready_body)["store"] == {"kind": "memory", "state": "ok"}
    assert metrics_status == 200
    assert 'slackstream_answers_finished_total{outcome="completed"} 1.0' in metrics
    assert "slackstream_time_to_first_text_seconds_count 1.0" in metrics
    assert 'slackstream_edits_total{kind="final"} 1.0' in metrics
    assert 'slackstream_slack_calls_total{method="chat.postMessage"} 1.0' in metrics


async def test_readyz_is_503_while_draining_and_events_are_refused() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        h.bot.draining = True
        ready, body = await _get(f"{h.url}/readyz")
        envelope = mention_envelope(
            team_id=TEAM,
            channel=CHANNEL,
            user=ALICE,
            text="<@UBOT> hi",
            ts="1700000000.000100",
            bot_user_id="UBOT",
        )
        refused, _ = await h.poster.post_event(envelope)
        h.bot.draining = False
    assert ready == 503 and json.loads(body)["draining"] is True
    assert refused == 503


class _ReadyLine(logging.Handler):
    """Sets `event` when the bot logs that it is ready (serving, started, heap frozen)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "ready":
            self.event.set()


async def test_a_served_bot_freezes_its_start_up_heap_and_stops_on_sigterm() -> None:
    """`serve` hides what exists at start-up from the garbage collector (full collections
    then stay short under load), and SIGTERM still drains and stops it."""
    app_log = logging.getLogger("bot.serving")
    ready, level = _ReadyLine(), app_log.level
    app_log.addHandler(ready)
    app_log.setLevel(logging.INFO)
    async with simulators() as (slack, claude):
        bot = SlackStream(settings_for(slack, claude))

        async def setup() -> Callable[[], Awaitable[None]]:
            runner, _ = await start_http(bot)
            return runner.cleanup

        gc.unfreeze()
        serving = asyncio.create_task(run_until_signalled(bot, runner_setup=setup))
        try:
            await asyncio.wait_for(ready.event.wait(), 10)
            assert gc.get_freeze_count() > 0
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(serving, 10)
        finally:
            gc.unfreeze()
            app_log.removeHandler(ready)
            app_log.setLevel(level)
    assert bot.draining


async def test_a_clean_start_logs_no_warnings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment sets SLACK_BOT_TOKEN, which Bolt also reads: its "token will be unused"
    warning (the token is the client's own) must not greet every start."""
    async with simulators() as (slack, claude):
        monkeypatch.setenv("SLACK_BOT_TOKEN", slack.bot_token)
        with caplog.at_level(logging.WARNING):
            async with running_bot(slack, claude, store=MemoryStore()) as h:
                asked = await h.mention("hello")
                await h.finished(asked)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
