"""Budgets: a question over one gets a polite line in its thread (which budget, when it
resets) and Claude is not asked; the budget resets at the day's or month's boundary on the
usage calendar (an injected clock); at 80 % the footer says so once; replicas sharing Redis
share the budgets."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from bot.budgets import Budgets, Calendar, Period, time_zone
from bot.sim.claude import Script
from bot.sim.redis import free_port
from bot.store import RedisStore, Spend, SpendView
from tests.harness import ADMIN, ALICE, BOB, Harness, running_bot, simulators

# Every answer: 300 input and 100 output tokens of claude-sonnet-5-5 ($2/$10 per million),
# so 400 tokens and $0.0016.
ANSWER = Script(text="A short answer.", input_tokens=300, output_tokens=100)


class WallClock:
    """The usage calendar's clock: it moves only when the test moves it."""

    def __init__(self, at: datetime.datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime.datetime) -> None:
        self.now = at.timestamp()


def utc(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.UTC)


async def answered(h: Harness, text: str, *, user: str = ALICE) -> str:
    asked = await h.mention(text, user=user)
    return (await h.finished(asked))[-1].visible_text()


async def refused(h: Harness, text: str, *, user: str = ALICE) -> str:
    """Ask, and return the line the bot posts instead of an answer."""
    asked = await h.mention(text, user=user)
    await h.slack.wait_for(lambda: bool(h.replies(asked)))
    [reply] = h.replies(asked)
    assert "Tokens:" not in reply.visible_text()
    return reply.visible_text()


@asynccontextmanager
async def bot(clock: WallClock, **settings: object) -> AsyncIterator[Harness]:
    async with (
        simulators(claude_default=ANSWER) as (slack, claude),
        running_bot(slack, claude, wall_clock=clock, **settings) as h,
    ):
        yield h


# -- the policy (pure) -----------------------------------------------------------------------


def test_days_and_months_end_at_midnight_in_the_usage_time_zone() -> None:
    paris = time_zone("Europe/Paris")
    late = Calendar(paris, lambda: utc(2026, 12, 31, 23, 30).timestamp()).period()
    assert (late.day, late.month) == ("2027-01-01", "2027-01")  # already 00:30 in Paris
    assert late.day_ends == datetime.datetime(2027, 1, 2, tzinfo=paris)
    assert late.month_ends == datetime.datetime(2027, 2, 1, tzinfo=paris)
    december = Period(utc(2026, 12, 31, 12))
    assert december.month_ends == utc(2027, 1, 1)
    keep = december.keep()
    assert (
        keep.day_seconds
        == (utc(2027, 1, 1) + datetime.timedelta(days=90) - utc(2026, 12, 31, 12)).total_seconds()
    )
    assert keep.oldest_day == "2026-10-02"


def test_a_refusal_names_the_budget_and_when_it_resets() -> None:
    budgets = Budgets(user_day_tokens=1_000, user_month_cost_usd=5, workspace_month_cost_usd=100)
    period = Period(utc(2026, 5, 14, 21, 15))
    fine = SpendView(Spend(1, 999, 0), Spend(1, 999, 4_999_999), Spend(1, 999, 99_999_999))
    assert budgets.refusal(fine, period, "UTC") is None
    day = budgets.refusal(SpendView(user_day=Spend(3, 1_000, 10)), period, "UTC")
    assert day is not None and day.budget == "user_day_tokens"
    assert day.line == (
        "You've used today's allowance of 1,000 tokens, so I can't answer this one. "
        "It resets at midnight UTC, in 2 h 45 min."
    )
    month = budgets.refusal(SpendView(user_month=Spend(3, 10, 5_000_000)), period, "UTC")
    assert month is not None and month.line == (
        "You've used your Claude budget for this month ($5.00), so I can't answer this one. "
        "It resets on 1 June (UTC)."
    )
    everyone = SpendView(
        user_day=Spend(9, 5_000, 0), workspace_month=Spend(9, 9, 100_000_000)
    )  # the workspace's budget is named first: nobody can do anything about their own
    workspace = budgets.refusal(everyone, period, "UTC")
    assert workspace is not None and workspace.budget == "workspace_month_cost"
    assert workspace.line.startswith("This workspace has used its Claude budget for this month")
    assert Budgets().refusal(everyone, period, "UTC") is None
    assert budgets.thresholds().as_tuple() == (800, 4_000_000, 80_000_000)


# -- on real wires, on an injected calendar ----------------------------------------------------


async def test_a_daily_token_budget_refuses_without_asking_claude_and_resets_at_midnight() -> None:
    clock = WallClock(utc(2026, 5, 14, 21, 0))
    async with bot(clock, user_daily_token_budget=1_000) as h:
        first = await answered(h, "one")
        second = await answered(h, "two")  # 800 tokens: 80 %
        third = await answered(h, "three")  # 800 < 1,000: still answered
        line = await refused(h, "four")
        asked_claude = len(h.claude.requests)
        bob = await answered(h, "mine is separate", user=BOB)
        clock.set(utc(2026, 5, 14, 23, 59, 59))
        still = await refused(h, "almost midnight")
        clock.set(utc(2026, 5, 15, 0, 0, 1))
        next_day = await answered(h, "a new day")
    assert "% of your daily token allowance used" not in first
    assert second.endswith("· 80% of your daily token allowance used")
    assert "allowance used" not in third and "allowance used" not in next_day  # said once
    assert line == (
        "You've used today's allowance of 1,000 tokens, so I can't answer this one. "
        "It resets at midnight UTC, in 3 h."
    )
    assert asked_claude == 3  # the refused question never reached Claude
    assert "Tokens: 300 in, 100 out" in bob
    assert still.endswith("in 1 min.")
    assert len(h.claude.requests) == 5
    assert h.bot.metrics.budget_refusals.labels("user_day_tokens")._value.get() == 2


async def test_a_monthly_cost_budget_holds_all_month_and_resets_on_the_first() -> None:
    clock = WallClock(utc(2026, 5, 31, 22, 0))
    async with bot(clock, user_monthly_cost_budget_usd=0.004) as h:
        await answered(h, "one")  # $0.0016
        second = await answered(h, "two")  # $0.0032: 80 %
        await answered(h, "three")  # $0.0048
        line = await refused(h, "four")
        clock.set(utc(2026, 6, 1, 0, 0, 1))
        june = await answered(h, "five")
        clock.set(utc(2026, 6, 1, 0, 0, 2))
    assert second.endswith("· 80% of your monthly budget used")
    assert line == (
        "You've used your Claude budget for this month ($0.0040), so I can't answer this "
        "one. It resets on 1 June (UTC)."
    )
    assert "Tokens:" in june


async def test_the_workspace_budget_stops_everyone_until_next_month() -> None:
    clock = WallClock(utc(2026, 5, 20, 12, 0))
    async with bot(clock, workspace_monthly_cost_budget_usd=0.003) as h:
        await answered(h, "one")
        bobs = await answered(h, "two", user=BOB)  # $0.0032 of $0.003
        admins = await refused(h, "three", user=ADMIN)
        alices = await refused(h, "four")
        clock.set(utc(2026, 6, 1, 0, 0, 1))
        await answered(h, "a new month", user=ADMIN)
    assert bobs.endswith("· 106% of the workspace's monthly budget used")
    assert admins == alices
    assert admins.startswith("This workspace has used its Claude budget for this month ($0.0030)")
    assert admins.endswith("It resets on 1 June (UTC).")


async def test_replicas_sharing_redis_share_the_budgets(redis_url: str) -> None:
    """Two bots on one Redis: what one replica counted, the other refuses on."""
    clock = WallClock(utc(2026, 5, 14, 9, 0))
    async with simulators(claude_default=ANSWER) as (slack, claude), AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                running_bot(
                    slack,
                    claude,
                    store=RedisStore.from_url(redis_url),
                    wall_clock=clock,
                    user_daily_token_budget=1_000,
                    replica_id=name,
                )
            )
            for name in ("replica-a", "replica-b")
        ]
        await answered(one, "one")
        crossing = await answered(two, "two")
        await answered(one, "three")
        from_two = await refused(two, "four")
        from_one = await refused(one, "five")
    assert crossing.endswith("· 80% of your daily token allowance used")
    assert from_one == from_two
    assert from_one.startswith("You've used today's allowance of 1,000 tokens")
    assert len(claude.requests) == 3


async def test_answers_run_as_before_when_the_store_cannot_tell_the_spend() -> None:
    """No budget is checked while Redis is unreachable: answering beats refusing blind."""
    clock = WallClock(utc(2026, 5, 14, 9, 0))
    dead = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    async with (
        simulators(claude_default=ANSWER) as (slack, claude),
        running_bot(slack, claude, store=dead, wall_clock=clock, user_daily_token_budget=1) as h,
    ):
        text = await answered(h, "still answered")
    assert "Tokens: 300 in, 100 out" in text
