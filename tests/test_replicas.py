"""Fault tests with real processes and a real redis-server: what Slack ends up showing.

Two `slackstream serve` replicas share one Redis, one simulated Slack and one simulated Claude.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.sim.claude import ClaudeSim, Script
from bot.sim.events import block_action_payload, mention_envelope
from bot.sim.redis import RedisServer
from bot.sim.replica import Replica
from bot.sim.slack import SimMessage, SlackSim
from tests.harness import ALICE, BOB, CHANNEL, TEAM, simulators

LEASE = 2.0
SLOW = Script(text="a long and careful answer " * 120, chunk_chars=8, chunk_delay=0.02)


@asynccontextmanager
async def replicas(
    slack: SlackSim, claude: ClaudeSim, redis_url: str, n: int = 2, **env: Any
) -> AsyncIterator[list[Replica]]:
    started = [
        Replica(
            f"replica-{i}",
            slack_url=slack.api_url,
            claude_url=claude.base_url,
            redis_url=redis_url,
            **env,
        )
        for i in range(n)
    ]
    try:
        for r in started:
            await r.start()
        yield started
    finally:
        for r in started:
            await r.close()


async def ask(
    replica: Replica, slack: SlackSim, text: str, *, user: str = ALICE, event_id: str | None = None
) -> tuple[SimMessage, dict[str, Any]]:
    asked = slack.post_user_message(CHANNEL, f"<@UBOT> {text}", user=user)
    envelope = mention_envelope(
        team_id=TEAM,
        channel=CHANNEL,
        user=user,
        text=asked.text,
        ts=asked.ts,
        bot_user_id="UBOT",
        event_id=event_id,
    )
    status, body = await replica.poster.post_event(envelope)
    assert status == 200, body
    return asked, envelope


def final(slack: SlackSim, asked: SimMessage) -> SimMessage | None:
    replies = slack.bot_replies(CHANNEL, asked.ts)
    if not replies or replies[-1].has_button("stop_answer"):
        return None
    text = replies[-1].visible_text()
    return replies[-1] if ("Tokens:" in text or "[interrupted" in text) else None


def streaming(slack: SlackSim, asked: SimMessage, words: str = "careful") -> bool:
    replies = slack.bot_replies(CHANNEL, asked.ts)
    return bool(replies) and words in replies[0].visible_text()


async def test_sigkill_mid_answer_is_finished_by_the_other_replica(redis_url: str) -> None:
    async with simulators(claude_default=SLOW) as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, _b):
            asked, _ = await ask(a, slack, "explain slowly")
            # Let a few edits (and so a heartbeat's checkpoint) happen before the crash.
            await slack.wait_for(
                lambda: (
                    streaming(slack, asked)
                    and len(slack.bot_replies(CHANNEL, asked.ts)[0].history) >= 6
                )
            )
            shown_before_kill = slack.bot_replies(CHANNEL, asked.ts)[0].visible_text()
            a.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await slack.wait_for(lambda: final(slack, asked) is not None, timeout=LEASE * 4)
            recovered_after = time.monotonic() - killed_at
            message = final(slack, asked)
    assert message is not None
    text = message.visible_text()
    assert text.strip().splitlines()[-1].startswith("[interrupted")
    recovered = text.strip().rsplit("\n", 1)[0].strip()
    assert "a long and careful answer" in recovered  # the checkpointed partial answer is kept
    # It is what Slack showed, at most one heartbeat behind.
    assert shown_before_kill.startswith(recovered[: len(recovered) // 2])
    assert recovered_after < LEASE * 2.5, recovered_after
    assert len(slack.bot_replies(CHANNEL, asked.ts)) == 1  # finished in place, not re-posted


async def test_sigterm_drains_answers_and_exits_zero(redis_url: str) -> None:
    async with simulators() as (slack, claude):
        short = Script(text="short and done", chunk_chars=4, chunk_delay=0.05)
        endless = Script(
            text="this will not finish in time " * 400, chunk_chars=8, chunk_delay=0.02
        )
        claude.enqueue(short, endless)
        async with replicas(slack, claude, redis_url, n=1, shutdown_grace_seconds=1.5) as (a,):
            quick, _ = await ask(a, slack, "quick one")
            await slack.wait_for(lambda: len(claude.requests) == 1)
            slow, _ = await ask(a, slack, "slow one")
            await slack.wait_for(lambda: streaming(slack, slow, "not finish"))
            a.signal(signal.SIGTERM)
            ready_status, ready_body = await a.get("/readyz")
            code = await a.exit_code()
            refused_status = 0  # the process is gone; a retry from Slack goes to another replica
    assert ready_status in (503, 0)
    if ready_status == 503:
        assert json.loads(ready_body)["draining"] is True
    assert code == 0, a.logs()
    quick_final = final(slack, quick)
    slow_final = final(slack, slow)
    assert quick_final is not None and "Tokens:" in quick_final.visible_text()
    assert slow_final is not None
    last_line = slow_final.visible_text().strip().splitlines()[-1]
    assert last_line.startswith("[interrupted") and "restarted" in last_line
    assert refused_status == 0


async def test_stop_pressed_on_the_replica_that_does_not_own_the_answer(redis_url: str) -> None:
    async with simulators(claude_default=SLOW) as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, b):
            asked, _ = await ask(a, slack, "keep going")
            await slack.wait_for(lambda: streaming(slack, asked))
            reply = slack.bot_replies(CHANNEL, asked.ts)[0]
            answer_id = f"{TEAM}-{CHANNEL}-{asked.ts}"
            status, _ = await b.poster.post_action(
                block_action_payload(
                    team_id=TEAM,
                    user=ALICE,
                    channel=CHANNEL,
                    message_ts=reply.ts,
                    action_id="stop_answer",
                    value=answer_id,
                )
            )
            pressed = time.monotonic()
            await slack.wait_for(lambda: final(slack, asked) is not None, timeout=5)
            stopped_after = time.monotonic() - pressed
            message = final(slack, asked)
    assert status == 200
    assert message is not None
    assert message.visible_text().strip().endswith("[interrupted: stopped by @alice]")
    assert stopped_after < 1.0, stopped_after


async def test_same_event_to_both_replicas_and_thrice_to_one_is_answered_once(
    redis_url: str,
) -> None:
    async with simulators() as (slack, claude):
        async with replicas(slack, claude, redis_url) as (a, b):
            asked, envelope = await ask(a, slack, "only once", event_id="Ev-dup")
            for replica, retry in ((b, None), (a, 1), (a, 2), (b, 3)):
                status, _ = await replica.poster.post_event(envelope, retry_num=retry)
                assert status == 200
            await slack.wait_for(lambda: final(slack, asked) is not None)
            later, _ = await ask(b, slack, "a fresh question")
            await slack.wait_for(lambda: final(slack, later) is not None)
    assert len(slack.bot_replies(CHANNEL, asked.ts)) == 1
    assert len(claude.requests) == 2


async def test_redis_stopped_and_restarted_mid_answer(
    redis_server: RedisServer, redis_url: str
) -> None:
    if not redis_server.managed:
        pytest.skip("needs a redis-server this test may stop")
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(text="answer through the outage " * 60, chunk_chars=8, chunk_delay=0.02)
        )
        async with replicas(slack, claude, redis_url, n=1) as (a,):
            during, _ = await ask(a, slack, "start before the outage")
            await slack.wait_for(lambda: streaming(slack, during, "outage"))
            redis_server.stop()
            try:
                status, body = await a.get("/readyz")
                assert status == 200 and json.loads(body)["store"]["state"] == "degraded"
                new, _ = await ask(a, slack, "asked while Redis is down")
                await slack.wait_for(lambda: final(slack, new) is not None, timeout=15)
                await slack.wait_for(lambda: final(slack, during) is not None, timeout=15)
            finally:
                redis_server.start()
            after, _ = await ask(a, slack, "asked after Redis came back")
            await slack.wait_for(lambda: final(slack, after) is not None, timeout=15)
            status, body = await a.get("/readyz")
            _, metrics = await a.get("/metrics")
    for asked in (during, new, after):
        message = final(slack, asked)
        assert message is not None and "Tokens:" in message.visible_text(), asked.text
    assert json.loads(body)["store"]["state"] == "ok"
    assert "slackstream_store_errors_total" in metrics


async def test_per_user_cap_holds_across_replicas(redis_url: str) -> None:
    async with simulators(claude_default=SLOW) as (slack, claude):
        async with replicas(slack, claude, redis_url, max_answers_per_user=1) as (a, b):
            first, _ = await ask(a, slack, "first")
            await slack.wait_for(lambda: streaming(slack, first))
            second, _ = await ask(b, slack, "second, on the other replica")
            await slack.wait_for(lambda: bool(slack.bot_replies(CHANNEL, second.ts)))
            refusal = slack.bot_replies(CHANNEL, second.ts)[0].visible_text()
            other, _ = await ask(b, slack, "bob may ask", user=BOB)
            await slack.wait_for(lambda: streaming(slack, other))
    assert "You already have 1 answer in progress" in refusal
