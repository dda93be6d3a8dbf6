"""Usage: every answer's usage lands in the shared counters (per person, channel, model and
day) whichever replica answered it; `slackstream usage` prints them as a table, CSV or JSON;
Prometheus gets totals by model and outcome only."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from bot.lifecycle import stopped_by
from bot.report import as_table, rows
from bot.sim.claude import Script
from bot.sim.events import mention_envelope
from bot.store import RedisStore, UsageCell
from tests.harness import ADMIN, ALICE, BOB, CHANNEL, DM, TEAM, Harness, running_bot, simulators

ROOT = Path(__file__).resolve().parent.parent
# 300 input, 100 output tokens, 50 cache reads: claude-sonnet-5-5 at $2/$10 per million.
ANSWER = Script(text="Counted.", input_tokens=300, output_tokens=100, cache_read_input_tokens=50)
COST = (300 * 2 + 50 * 2 * 0.1 + 100 * 10) / 1_000_000


async def usage(redis_url: str, *args: str) -> tuple[int, str, str]:
    """`slackstream usage ARGS` in its own process, reading the counters in Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "usage",
        *args,
        env={**env, "REDIS_URL": redis_url},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def answer_on(h: Harness, text: str, *, user: str = ALICE, channel: str = CHANNEL) -> None:
    asked = h.slack.post_user_message(channel, f"<@UBOT> {text}", user=user)
    envelope = mention_envelope(
        team_id=TEAM, channel=channel, user=user, text=asked.text, ts=asked.ts, bot_user_id="UBOT"
    )
    status, body = await h.poster.post_event(envelope)
    assert status == 200, body
    await h.finished(asked, channel)


async def test_two_replicas_add_to_the_same_counters_and_the_report_reads_them(
    redis_url: str,
) -> None:
    async with simulators(claude_default=ANSWER) as (slack, claude), AsyncExitStack() as stack:
        slack.add_channel("C0SUPPORT")
        one, two = [
            await stack.enter_async_context(
                running_bot(slack, claude, store=RedisStore.from_url(redis_url), replica_id=name)
            )
            for name in ("replica-a", "replica-b")
        ]
        await asyncio.gather(
            answer_on(one, "a"),
            answer_on(two, "b"),
            answer_on(two, "c", user=BOB),
            answer_on(one, "d", user=BOB, channel="C0SUPPORT"),
        )
        ask_dm = await two.dm("in a DM")
        await two.finished(ask_dm, DM)
        today = one.bot.calendar.period().day
        cells = await one.bot.store.usage_cells(since=today, until=today)
        by_channel = await usage(redis_url, "--by", "channel", "--format", "json")
        by_user_csv = await usage(redis_url, "--format", "csv")
        table = await usage(redis_url, "--by", "channel,model")
        filtered = await usage(redis_url, "--since", "2000-01-01", "--until", "2000-01-31")
        bad = await usage(redis_url, "--since", "last tuesday")
    counts = {(c.user, c.channel): c.counts["answers"] for c in cells}
    assert counts == {(ALICE, CHANNEL): 2, (BOB, CHANNEL): 1, (BOB, "C0SUPPORT"): 1, (ALICE, DM): 1}

    code, out, err = by_channel
    assert code == 0, err
    listed = json.loads(out)
    assert [(r["day"], r["channel"], r["answers"]) for r in listed] == [
        (today, CHANNEL, 3),
        (today, "C0SUPPORT", 1),
        (today, DM, 1),
    ]
    general = listed[0]
    assert general["input_tokens"] == 900 and general["output_tokens"] == 300
    assert general["cache_read_tokens"] == 150
    assert abs(general["cost_usd"] - 3 * COST) < 1e-9
    assert general["team_id"] == TEAM

    code, out, err = by_user_csv
    assert code == 0, err
    read = list(csv.DictReader(io.StringIO(out)))
    assert [(r["user"], r["answers"]) for r in read] == [(ALICE, "3"), (BOB, "2")]
    assert set(read[0]) >= {"day", "user", "answers", "input_tokens", "output_tokens", "cost_usd"}

    code, out, err = table
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["day", "channel", "model"]
    assert any(CHANNEL in line and "claude-sonnet-5-5" in line for line in lines[2:-2])
    assert lines[-1].split()[:2] == ["total", "5"]

    code, out, err = filtered
    assert code == 0 and "(no usage in this period)" in out
    assert "usage is kept 90 days" in err
    code, out, err = bad
    assert code == 2 and not out
    assert err.strip() == "slackstream: --since must be a date like 2026-05-01, got 'last tuesday'"


async def test_the_usage_command_needs_redis() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "usage",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2 and not out
    assert err.decode().strip().startswith("slackstream: usage reads the counters the bot keeps")


async def test_prometheus_gets_totals_by_model_and_outcome_only() -> None:
    async with simulators(claude_default=ANSWER) as (slack, claude):
        async with running_bot(slack, claude) as h:
            for user in (ALICE, BOB, ADMIN):
                await answer_on(h, "count me", user=user)
            claude.enqueue(Script(text="word " * 2000, chunk_chars=10, chunk_delay=0.01))
            stopped = await h.mention("a long one")
            await h.slack.wait_for(
                lambda: any("word" in r.visible_text() for r in h.replies(stopped))
            )
            h.bot.replier.stop(f"{TEAM}-{CHANNEL}-{stopped.ts}", stopped_by(ALICE))
            await h.finished(stopped)
            metrics = h.bot.metrics.render().decode()
    usage_lines = [line for line in metrics.splitlines() if line.startswith("slackstream_usage")]
    assert (
        'slackstream_usage_answers_total{model="claude-sonnet-5-5",outcome="completed"} 3.0'
        in usage_lines
    )
    assert any('outcome="stopped"' in line for line in usage_lines)
    assert (
        'slackstream_usage_tokens_total{kind="input",model="claude-sonnet-5-5",'
        'outcome="completed"} 900.0' in usage_lines
    )
    cost = next(
        line
        for line in usage_lines
        if line.startswith("slackstream_usage_cost_usd_total{") and 'outcome="completed"' in line
    )
    assert abs(float(cost.split()[-1]) - 3 * COST) < 1e-9
    for line in usage_lines:
        assert "U0" not in line and "C0" not in line and "user" not in line.split("{")[-1]


def test_the_report_groups_cells_by_any_key() -> None:
    cells = [
        UsageCell("2026-05-01", TEAM, ALICE, CHANNEL, "m1", {"answers": 2, "cost_micros": 10}),
        UsageCell("2026-05-01", TEAM, BOB, CHANNEL, "m2", {"answers": 1, "cost_micros": 30}),
        UsageCell("2026-05-02", TEAM, BOB, "C0B", "m2", {"answers": 1, "feedback_negative": 1}),
    ]
    by_model = rows(cells, ["model"])
    assert [(r["day"], r["model"], r["answers"]) for r in by_model] == [
        ("2026-05-01", "m2", 1),
        ("2026-05-01", "m1", 2),
        ("2026-05-02", "m2", 1),
    ]
    assert by_model[2]["feedback_negative"] == 1
    by_channel = rows(cells, ["channel"])
    assert [(r["channel"], r["answers"], r["cost_usd"]) for r in by_channel] == [
        (CHANNEL, 3, 0.00004),
        ("C0B", 1, 0.0),
    ]
    table = as_table(by_channel, ["channel"])
    assert table.splitlines()[-1].split()[:2] == ["total", "4"]
