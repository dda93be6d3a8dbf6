"""What the bot remembers is bounded in size and in age: a cached thread is read afresh within
its ttl however busy it is (so an edited or deleted message stops reaching Claude), display
names are bounded and refreshed, and the dedupe fallback holds at its bound."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot import thread as thread_module
from bot.metrics import Metrics
from bot.sim.slack import SlackSim
from bot.slackapi import SlackCalls
from bot.store import MemoryStore
from bot.thread import THREAD_CACHE_SECONDS, ThreadReader
from tests.conftest import ManualClock
from tests.harness import ALICE, BOB, CHANNEL, simulators


@pytest.fixture
async def sim() -> AsyncIterator[SlackSim]:
    async with simulators() as (slack, _claude):
        yield slack


def reader(slack: SlackSim, clock: ManualClock) -> ThreadReader:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    calls = SlackCalls(client, Metrics())
    return ThreadReader(slack=calls, store=MemoryStore(clock=clock), clock=clock)


async def test_a_busy_thread_is_read_afresh_within_its_ttl(sim: SlackSim) -> None:
    clock = ManualClock()
    threads = reader(sim, clock)
    root = sim.post_user_message(CHANNEL, "my password is hunter2", user=ALICE)
    latest = root
    seen: list[str] = []
    # A question every minute for longer than the ttl: each read re-caches the thread.
    for minute in range(int(THREAD_CACHE_SECONDS // 60) + 2):
        if minute == 1:  # the secret is edited out early on
            sim.message(CHANNEL, root.ts).text = "(edited)"
        latest = sim.post_user_message(CHANNEL, f"question {minute}", user=BOB, thread_ts=root.ts)
        messages = await threads.messages(CHANNEL, root.ts, before_ts=latest.ts + "1")
        seen.append(str(messages[0]["text"]))
        clock.advance(60)
    assert seen[0] == "my password is hunter2"
    assert seen[-1] == "(edited)"  # the cache's age is bounded, not renewed by traffic
    first_fresh = seen.index("(edited)")
    assert first_fresh * 60 <= THREAD_CACHE_SECONDS + 60


async def test_names_are_bounded_and_looked_up_again_when_stale(
    sim: SlackSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(thread_module, "MAX_NAMES", 2)
    clock = ManualClock()
    threads = reader(sim, clock)
    for i in range(5):
        sim.add_user(f"U0P{i}", f"person{i}")
    everyone = [f"U0P{i}" for i in range(5)]
    assert await threads.names(everyone) == {u: f"person{u[-1]}" for u in everyone}
    assert list(threads._names) == ["U0P3", "U0P4"]  # only the last two are kept
    sim.add_user("U0P4", "renamed")
    assert await threads.names(["U0P4"]) == {"U0P4": "person4"}  # fresh enough: cached
    clock.advance(thread_module.NAME_CACHE_SECONDS + 1)
    assert await threads.names(["U0P4"]) == {"U0P4": "renamed"}


async def test_the_dedupe_fallback_holds_at_its_bound() -> None:
    fallback = MemoryStore(max_events=3)
    for i in range(10):
        assert (await fallback.claim_event(f"event:{i}", 3600, "t")).first
    assert len(fallback._events) == 3
    assert not (await fallback.claim_event("event:9", 3600, "other")).first  # recent: kept
    assert (await fallback.claim_event("event:0", 3600, "other")).first  # oldest: forgotten
