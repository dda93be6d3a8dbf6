"""SIGTERM on real `slackstream serve` processes: every answer in flight ends finished, and the
process exits 0 within SHUTDOWN_GRACE_SECONDS plus the final edit's own time, whatever moment
of an answer the signal lands on; a signal during start-up ends the process at once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from bot.sim.claude import Script
from bot.sim.redis import RedisServer, free_port
from bot.sim.replica import Replica
from bot.sim.slack import SimMessage, SlackSim
from tests.harness import CHANNEL, simulators
from tests.test_replicas import ask, final

GRACE = 2.0
# The final edit's own time: one chat.update (and its retry) after the grace period. The drain's
# hard bound is larger (reply.FINISH_SECONDS + HURRY_SECONDS); a healthy Slack never needs it.
FINAL_EDIT_ALLOWANCE = 4.0
# About 80 characters a second for 50 s: any SIGTERM lands while it streams.
SLOW = Script(text="a slow and thorough answer. " * 150, chunk_chars=8, chunk_delay=0.1)
ROUNDS, PER_ROUND = 2, 10  # 20 answers, each SIGTERMed at its own moment


def bot_messages(slack: SlackSim, asked: SimMessage) -> list[SimMessage]:
    return slack.bot_replies(CHANNEL, asked.ts)


def moment(slack: SlackSim, asked: SimMessage, index: int) -> Callable[[], bool]:
    """When replica `index` gets its SIGTERM: as the event arrives (before the placeholder),
    on the placeholder, on the first text, or after a few or many edits."""

    def edits() -> int:
        replies = bot_messages(slack, asked)
        return len(replies[0].history) - 1 if replies else -1

    kind = index % 5
    if kind == 0:
        return lambda: True
    if kind == 1:
        return lambda: edits() >= 0
    if kind == 2:
        return lambda: edits() >= 1
    if kind == 3:
        return lambda: edits() >= 3
    return lambda: edits() >= 4


async def test_sigterm_at_any_moment_finishes_every_answer_and_exits_in_time(
    redis_url: str,
) -> None:
    async with simulators(claude_default=SLOW) as (slack, claude):
        for round_ in range(ROUNDS):
            replicas = [
                Replica(
                    f"term-{round_}-{i}",
                    slack_url=slack.api_url,
                    claude_url=claude.base_url,
                    redis_url=redis_url,
                    shutdown_grace_seconds=GRACE,
                    stream_lease_seconds=15,
                    max_answers_per_user=100,
                    workspace_edits_per_minute=1200,  # 10 answers at once, each edited often
                    workspace_edit_burst=50,
                )
                for i in range(PER_ROUND)
            ]
            try:
                await asyncio.gather(*(r.start() for r in replicas))

                async def one(
                    i: int, replica: Replica, round_: int = round_
                ) -> tuple[SimMessage, float, int]:
                    asked, _ = await ask(replica, slack, f"round {round_} answer {i}")
                    await slack.wait_for(moment(slack, asked, round_ * PER_ROUND + i), timeout=20)
                    replica.signal(signal.SIGTERM)
                    signalled = time.monotonic()
                    code = await replica.exit_code(timeout=GRACE + 20)
                    return asked, time.monotonic() - signalled, code

                results = await asyncio.gather(*(one(i, r) for i, r in enumerate(replicas)))
                for replica, (asked, took, code) in zip(replicas, results, strict=True):
                    logs = replica.logs(tail=None)
                    assert code == 0, logs
                    assert took <= GRACE + FINAL_EDIT_ALLOWANCE, (took, logs)
                    assert "Traceback" not in logs, logs
                    replies = bot_messages(slack, asked)
                    assert len(replies) == 1, (asked.text, [r.visible_text() for r in replies])
                    message = final(slack, asked)
                    assert message is not None, (asked.text, replies[0].visible_text(), logs)
                    last = message.visible_text().strip().splitlines()[-1]
                    assert last.startswith("[interrupted") and "restarted" in last, last
            finally:
                for replica in replicas:
                    await replica.close()


async def test_sigterm_while_slack_is_unreachable_at_start_up_exits_at_once(
    redis_url: str,
) -> None:
    async with simulators() as (_slack, claude):
        replica = Replica(
            "no-slack",
            slack_url=f"http://127.0.0.1:{free_port()}/api/",
            claude_url=claude.base_url,
            redis_url=redis_url,
        )
        try:
            replica.launch()
            await replica.logged("auth.test failed; retrying")
            replica.signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = await replica.exit_code(timeout=10)
            took = time.monotonic() - signalled
            logs = replica.logs(tail=None)
        finally:
            await replica.close()
    assert code == 0, logs
    assert took < 3.0, took
    assert "stopped during start-up" in logs


async def test_sigterm_while_redis_is_frozen_at_start_up_exits_at_once(
    redis_server: RedisServer, redis_url: str
) -> None:
    if not redis_server.managed:
        pytest.skip("needs a redis-server this test may freeze")
    async with simulators() as (slack, claude):
        replica = Replica(
            "frozen-redis", slack_url=slack.api_url, claude_url=claude.base_url, redis_url=redis_url
        )
        redis_server.freeze()
        try:
            replica.launch()
            await replica.logged("connected to Slack")  # now waiting on the frozen store
            replica.signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = await replica.exit_code(timeout=15)
            took = time.monotonic() - signalled
        finally:
            redis_server.thaw()
            await replica.close()
    assert code == 0
    assert took < 5.0, took
