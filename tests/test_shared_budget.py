"""The workspace edit budget, end to end: two replicas sharing one Redis and one rate-limited Slack.

Each replica is a whole bot (its own HTTP server, Slack and Claude clients, RedisStore) running in
this process; what is checked is what Slack recorded: the calls it answered, and when.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bot.sim.claude import ClaudeSim, Script
from bot.sim.slack import SimMessage, SlackSim
from bot.store import RedisStore
from tests.harness import ALICE, BOB, Harness, running_bot, simulators

# About three seconds of streaming: many more edits wanted than the budget allows.
STREAM = Script(text="steady words for the reader " * 20, chunk_chars=6, chunk_delay=0.03)


@asynccontextmanager
async def two_replicas(
    slack: SlackSim, claude: ClaudeSim, redis_url: str, **overrides: Any
) -> AsyncIterator[list[Harness]]:
    async with AsyncExitStack() as stack:
        bots = [
            await stack.enter_async_context(
                running_bot(
                    slack,
                    claude,
                    store=RedisStore.from_url(redis_url),
                    replica_id=f"replica-{i}",
                    **overrides,
                )
            )
            for i in range(2)
        ]
        yield bots


def metric(h: Harness, name: str) -> float:
    pattern = rf"^slackstream_{re.escape(name)} (\S+)$"
    found = re.search(pattern, h.bot.metrics.render().decode(), re.M)
    return float(found[1]) if found else 0.0


def complete(reply: SimMessage) -> bool:
    return STREAM.text.strip() in reply.visible_text() and "Tokens:" in reply.visible_text()


async def test_replicas_share_one_budget_so_slacks_limit_is_never_hit(redis_url: str) -> None:
    """Six answers on two replicas want ~30 edits a second; Slack allows 2. Each replica alone
    would stay under Slack's limit, both together would not, unless they share the budget."""
    limits = {"chat.update": (120.0, 5.0)}
    async with simulators(claude_default=STREAM, rate_limits=limits) as (slack, claude):
        async with two_replicas(
            slack, claude, redis_url, workspace_edits_per_minute=110, workspace_edit_burst=5
        ) as bots:
            asked = [
                await bots[i % 2].mention(f"question {i}", user=(ALICE, BOB)[i // 3])
                for i in range(6)
            ]
            replies = [(await bots[i % 2].finished(q, timeout=30))[0] for i, q in enumerate(asked)]

    assert all(complete(r) for r in replies)
    updates = slack.calls_to("chat.update")
    assert [c for c in updates if c.status == 429] == []
    # The shared budget, not Slack, held the edits back: both replicas skipped refreshes.
    assert all(metric(b, 'edits_skipped_total{reason="budget"}') > 0 for b in bots)
    span = updates[-1].at - updates[0].at
    assert len(updates) <= 5 + 110 / 60 * span + 1


async def test_a_429_pauses_edits_on_every_replica_until_retry_after(redis_url: str) -> None:
    async with simulators(claude_default=STREAM) as (slack, claude):
        async with two_replicas(slack, claude, redis_url) as bots:
            asked = [await bots[i].mention(f"question {i}", user=(ALICE, BOB)[i]) for i in (0, 1)]

            def both_streaming() -> bool:
                replies = [b.replies(q) for b, q in zip(bots, asked, strict=True)]
                return all(r and len(r[0].history) >= 3 for r in replies)

            await slack.wait_for(both_streaming, timeout=10)
            slack.fail_next["chat.update"] = ["ratelimited"]  # answered with Retry-After: 1
            replies = [
                (await b.finished(q, timeout=20))[0] for b, q in zip(bots, asked, strict=True)
            ]

    assert all(complete(r) for r in replies)
    updates = slack.calls_to("chat.update")
    [limited] = [c for c in updates if c.status == 429]
    after = [c.at - limited.at for c in updates if c.at > limited.at]
    # Neither replica edits during the pause (a call already on its way may land just after
    # the 429); both resume once it is over.
    assert [t for t in after if 0.1 < t < 0.95] == []
    resumed = {c.params.get("ts") for c in updates if c.at >= limited.at + 0.95}
    assert resumed == {r.ts for r in replies}
    assert sum(metric(b, "slack_rate_limit_pauses_total") for b in bots) == 1
    assert sum(metric(b, "slack_rate_limit_pause_seconds_total") for b in bots) == 1.0
