"""The report: the figures against their targets and as Markdown tables, printed and written as
bench/results/overhead.md (its header names the old single file, so reports stay comparable)."""

from __future__ import annotations

from typing import Any

from bench.common import machine_text, markdown_table
from bench.overhead.bare import BARE_LOOPS, BOT_LOOP
from bench.overhead.concurrency import CONCURRENCY_TARGET
from bench.overhead.cpu import RATIO_TARGET
from bench.overhead.memory import HOLD_ARRIVALS
from bench.overhead.redis_commands import IDLE_WINDOW
from bench.overhead.rig import TEAM_SIZE


def report_sections(r: dict[str, Any]) -> list[str]:
    """The figures as Markdown tables (printed, and the body of overhead.md)."""
    out: list[str] = []
    if "cpu" in r:
        out += [
            "## CPU per streamed delta: bot versus bare SDK loop",
            "",
            markdown_table(
                ["workload", "answers", "bot µs/delta", "bot CPU s"]
                + [f"bare `{BARE_LOOPS[k]}` µs/delta (ratio)" for k in BARE_LOOPS]
                + ["edits/answer", "Slack calls/answer", "(bot − bare) ms per Slack call"]
                + ["bot errors"],
                [
                    [c["workload"], c["answers"], c["bot_us_per_delta"], c["bot_cpu_seconds"]]
                    + [
                        f"{c['bare'][k]['us_per_delta']} (**{c['bare'][k]['ratio']}**"
                        f"{_spread(c['bare'][k])})"
                        for k in BARE_LOOPS
                    ]
                    + [c["edits_per_answer"], c["slack_calls_per_answer"]]
                    + [c.get("extra_ms_per_slack_call"), _counts(c["bot_errors"])]
                    for c in r["cpu"]
                ],
            ),
            "",
            f"Ratio = bot µs per delta / bare µs per delta (target ≤ {RATIO_TARGET}, against "
            "the first bare loop). The first bare loop makes the bot's own request with the "
            "bot's own client (raw events from `messages.create(stream=True)` over the SDK's "
            "aiohttp transport, `anthropic.DefaultAioHttpClient`): apples to apples. The second "
            "is a reference: the SDK's `messages.stream()` helper over its default httpx2 "
            "transport, which the bot used before. *(bot − bare) per Slack call* is the bot's CPU "
            "beyond the first bare loop's, divided by the Slack calls it made: the bot's own "
            "work rides on its calls (each edit also takes a budget token from Redis and renders "
            "the text), so at a fixed edit rate it is paid per answer-second, not per delta.",
            "",
        ]
    if "redis" in r:
        rd = r["redis"]
        out += [
            "## Redis commands per answer",
            "",
            markdown_table(
                [
                    "case",
                    "workload",
                    "chars",
                    "duration s",
                    "commands/answer",
                    "round trips/answer",
                    "edits/answer",
                    "by command (per answer)",
                    "bot errors",
                ],
                [
                    [
                        c["case"],
                        c["workload"],
                        c["answer_chars"],
                        c["nominal_seconds"],
                        c["commands_per_answer"],
                        c["round_trips_per_answer"],
                        c["edits_per_answer"],
                        ", ".join(f"{k} {v}" for k, v in c["by_command"].items()),
                        _counts(c["bot_errors"]),
                    ]
                    for c in rd["cases"]
                ],
            ),
            "",
            f"{rd['answers_per_case']} concurrent answers per case. *Commands* counts every "
            "command Redis executed, those inside Lua scripts and transactions included; "
            "*round trips* counts the bot's store calls (one script, command or pipeline each; "
            "its `slackstream_store_latency_seconds_count`), since commandstats cannot tell a "
            "client's SET from one inside a script. Both include "
            "the process's background sweeps (one EVALSHA every 3.75 s). Afterwards, with no "
            f"answer in flight, the bot sent {rd['idle_round_trips_per_second']} round trips/s "
            f"({_counts(rd['idle_by_command'])} in {IDLE_WINDOW:g} s; the janitor alone: "
            "about 0.27/s).",
            "",
        ]
    if "memory" in r:
        m = r["memory"]
        out += [
            "## Memory per in-flight answer",
            "",
            markdown_table(
                ["answers held", "bot RSS MiB", "KiB per answer", "peak RSS so far MiB"],
                [["0 (after warm-up)", m["baseline_rss_mib"], "", ""]]
                + [
                    [
                        row["in_flight"],
                        row["rss_mib"],
                        f"**{row['kib_per_answer']}**",
                        row["peak_rss_mib"],
                    ]
                    for row in m["levels"]
                ],
            ),
            "",
            f"Held answer: {m['held_answer']}; questions arrive at {HOLD_ARRIVALS:g} a second.",
            "",
        ]
    if "concurrency" in r:
        c = r["concurrency"]
        out += [
            "## Concurrent answers versus event acknowledgement",
            "",
            markdown_table(
                [
                    "in flight",
                    "events/s",
                    "deltas/s",
                    "ack p50 ms",
                    "ack p99 ms",
                    "ack max ms",
                    "late p50 s",
                    "late p99 s",
                    "completed",
                    "CPU % bot / sims / redis / driver",
                    "Redis cmds / round trips per answer",
                    "edits/answer",
                    "bot errors",
                    "sustained",
                ],
                [
                    [
                        row["in_flight"],
                        row["events_per_second"],
                        row["deltas_per_second"],
                        row["ack_p50_ms"],
                        row["ack_p99_ms"],
                        row["ack_max_ms"],
                        row["late_p50_s"],
                        row["late_p99_s"],
                        f"{row['completed']}/{row['answers']}",
                        " / ".join(
                            str(row["cpu_percent"][k])
                            for k in ("bot", "simulators", "redis", "driver")
                        ),
                        f"{row['redis_commands_per_answer']} / "
                        f"{row['redis_round_trips_per_answer']}",
                        row["edits_per_answer"],
                        _counts(row["bot_errors"]),
                        "yes" if row["sustained"] else "**no**",
                    ]
                    for row in c["levels"]
                ],
            ),
            "",
            f"**Largest level sustained: {c['largest_sustained']}**"
            + (
                " (every level run passed: the limit is higher)"
                if c["levels"] and c["levels"][-1]["sustained"]
                else ""
            )
            + f" (target ≥ {CONCURRENCY_TARGET}). Each answer: {c['answer_seconds']:g} s at "
            f"{c['deltas_per_second_each']:g} deltas/s. *Sustained*: ack p99 < 250 ms, every "
            "answer completed, no error counted by the bot. *Late* = final edit time − event "
            "time − nominal stream duration. CPU % is of one core, over the measured half of "
            "the level; the bot is one asyncio process, so about 100 % is its ceiling.",
            "",
        ]
    for name in ("delta_heavy", "concurrency"):
        p = r.get("profile", {}).get(name)
        if p is None:
            continue
        if "skipped" in p:
            out += [f"## Profile: {p['title']}", "", f"Skipped: {p['skipped']}", ""]
            continue
        out += [
            f"## Profile: {p['title']} (py-spy, {p['samples']} on-CPU samples)",
            "",
            "CPU by component (the innermost non-stdlib frame of each sample):",
            "",
            markdown_table(["component", "%"], p["components_percent"]),
            "",
            "Bot functions by inclusive time:",
            "",
            markdown_table(["frame", "%"], p["bot_inclusive_percent"]),
            "",
            "Top frames by self time:",
            "",
            markdown_table(["frame", "%"], p["self_percent"]),
            "",
        ]
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in counts.items()) or "none"


def render_markdown(r: dict[str, Any], command: str) -> str:
    m = r["machine"]
    head = [
        "# Cost of the bot itself (`bench.overhead`)",
        "",
        f"Measured {r['date']} on {machine_text(m)}.",
        "",
        f"Command: `{command}` (total {r['elapsed_seconds']:.0f} s).",
        "",
        "How: the bot is a real `python -m bot serve` process on a throwaway redis-server; "
        f"SlackSim (no rate limit, {r['slack_latency_seconds'] * 1000:g} ms latency) and "
        "ClaudeSim run in a separate process, so their CPU is not the bot's. CPU is "
        "utime+stime from `/proc/<pid>/stat` around each workload, after a warm-up; each bare "
        "loop is another process streaming the same scripts through the SDK and iterating "
        f"every event, nothing else. Each CPU case runs {r['plan']['cpu_rounds']} rounds (the "
        "bot, then the bare loops, back to back) and reports medians: the ratio is the median "
        "of the rounds' ratios, with their range, since this machine moves CPU per delta by "
        "20 % between two runs of the same code. Each answer has its own asker; answers are "
        f"spread over workspaces of {TEAM_SIZE} (the default cap per workspace). Bot settings "
        "are the defaults except `WORKSPACE_EDITS_PER_MINUTE=6000` and "
        "`WORKSPACE_EDIT_BURST=100`, so that every answer is edited at the full per-message "
        "pace (1 edit/s): the bot's most expensive case (with Slack's real budget most "
        "intermediate edits are skipped).",
        "",
    ]
    return "\n".join(head + summary(r) + report_sections(r)) + "\n"


def _spread(bare: dict[str, Any]) -> str:
    """The range of a median ratio over the rounds, as ", 1.5–1.7" (nothing for one round)."""
    low, high = bare.get("ratio_range") or (None, None)
    return "" if low is None or low == high else f", {low}–{high}"


def summary(r: dict[str, Any]) -> list[str]:
    """The four figures of the issue against their targets."""
    rows: list[list[Any]] = []
    if "cpu" in r:
        for c in r["cpu"]:
            ratio = c["bare"][BOT_LOOP]["ratio"]
            reference = " / ".join(
                f"{c['bare'][k]['ratio']} vs `{BARE_LOOPS[k]}`" for k in BARE_LOOPS if k != BOT_LOOP
            )
            rows.append(
                [f"CPU ratio, {c['workload']}: bot vs bare loop with the bot's request "
                 f"(`{BARE_LOOPS[BOT_LOOP]}`)",
                 f"**{ratio}**{_spread(c['bare'][BOT_LOOP])} (reference: {reference})",
                 f"≤ {RATIO_TARGET}"]
            )  # fmt: skip
    if "redis" in r:
        trips = ", ".join(
            f"{c['case'].split()[0]} {c['round_trips_per_answer']}" for c in r["redis"]["cases"]
        )
        rows.append(
            ["Redis round trips per answer (cases below)", trips, "not growing with length"]
        )
    if "memory" in r:
        per = ", ".join(
            f"{row['kib_per_answer']} KiB ({row['in_flight']} held)"
            for row in r["memory"]["levels"]
        )
        rows.append(["memory per in-flight answer", per, "—"])
    if "concurrency" in r:
        c = r["concurrency"]
        largest = f"{c['largest_sustained']}"
        if c["levels"] and c["levels"][-1]["sustained"]:
            largest = f"≥ {largest} (every level run passed)"
        rows.append(
            [f"concurrent answers at {c['deltas_per_second_each']:g} deltas/s with ack p99 "
             "< 250 ms", largest, f"≥ {CONCURRENCY_TARGET}"]
        )  # fmt: skip
    return (
        ["## Summary", "", markdown_table(["figure", "measured", "target"], rows), ""]
        if rows
        else []
    )
