"""Answers that read well: stop reasons, long answers, thinking, footers, long threads, and the
recorded Claude streams — all through the real bot and the simulators."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.render import MARKDOWN_LIMIT
from bot.sim.claude import Script
from tests.harness import ALICE, BOB, CHANNEL, running_bot, simulators
from tests.shared_files import ANTHROPIC_FIXTURES, missing, recorded_streams


@pytest.mark.parametrize(
    ("stop_reason", "details", "expected"),
    [
        ("max_tokens", None, "truncated"),
        ("model_context_window_exceeded", None, "truncated"),
        (
            "refusal",
            {"type": "refusal", "category": None, "explanation": "Not something I help with."},
            "declined",
        ),
        ("tool_use", None, "tool"),
        ("pause_turn", None, "paused"),
        ("stop_sequence", None, None),
        ("a_future_reason", None, "a_future_reason"),
    ],
)
async def test_every_stop_reason_gets_an_honest_ending(
    stop_reason: str, details: dict[str, object] | None, expected: str | None
) -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(text="Here is what I have.", stop_reason=stop_reason, stop_details=details)
        )
        # A paused turn is resumed while continuations are left (tests/test_web_tools.py).
        cap = {"claude_max_continuations": 0} if stop_reason == "pause_turn" else {}
        async with running_bot(slack, claude, **cap) as h:
            asked = await h.mention("go")
            [reply] = await h.finished(asked)
    text = reply.visible_text()
    assert "Here is what I have." in text
    assert "Tokens:" in text and "[interrupted" not in text
    if expected is None:
        body = text.split("Tokens:")[0].strip()
        assert body == "Here is what I have."
    else:
        assert expected in text
    if stop_reason == "refusal":
        assert "Not something I help with." in text


async def test_a_100k_character_answer_arrives_whole_and_in_order() -> None:
    paragraphs = [f"Paragraph {i:04d}: " + "lorem ipsum dolor sit amet " * 6 for i in range(620)]
    code = "```python\n" + "\n".join(f"x_{i} = {i}" for i in range(900)) + "\n```"
    answer = "\n\n".join([*paragraphs[:300], code, *paragraphs[300:]])
    assert len(answer) >= 100_000
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text=answer, chunk_chars=400))
        async with running_bot(slack, claude, edit_interval_seconds=0.05) as h:
            asked = await h.mention("write a lot")
            replies = await h.finished(asked, timeout=60)
    assert len(replies) >= 9
    bodies = []
    for i, reply in enumerate(replies):
        markdown = "".join(b["text"] for b in reply.blocks if b.get("type") == "markdown")
        assert len(markdown) <= MARKDOWN_LIMIT
        assert len(reply.text) <= 4000
        bodies.append(markdown)
        has_footer = "Tokens:" in reply.visible_text()
        assert has_footer == (i == len(replies) - 1)  # the footer once, on the last message
        assert not reply.has_button("stop_answer")
    joined = "\n".join(bodies)
    numbers = [int(n) for n in re.findall(r"Paragraph (\d{4}):", joined)]
    assert numbers == list(range(620))  # every paragraph, in order, once
    assignments = re.findall(r"x_(\d+) = ", joined)
    assert [int(n) for n in assignments] == list(range(900))
    # A code block split across messages is closed and reopened with its language.
    for body in bodies:
        assert body.count("```") % 2 == 0
        assert not body.lstrip().startswith("x_"), body[:80]  # reopened, not plain text
    assert sum(body.lstrip().startswith("```python") for body in bodies) >= 1


async def test_thinking_sets_the_thread_status() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="Done thinking.", thinking="hmm " * 50, thinking_delay=0.3))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("think")
            await h.finished(asked)
    assert slack.statuses and slack.statuses[0][:2] == (CHANNEL, asked.ts)
    assert slack.statuses[0][2] and slack.statuses[-1][2] == ""  # cleared once answered


async def test_footer_shows_cache_time_model_and_cost_unless_disabled() -> None:
    script = Script(
        text="Cached.",
        input_tokens=100,
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=200,
        output_tokens=50,
    )
    async with simulators() as (slack, claude):
        claude.enqueue(script, script)
        async with running_bot(slack, claude) as h:
            first = await h.mention("one")
            [with_cost] = await h.finished(first)
        async with running_bot(slack, claude, show_cost=False) as h:
            second = await h.mention("two")
            [without_cost] = await h.finished(second)
    footer = with_cost.visible_text().splitlines()[-1]
    assert footer.startswith("Tokens: 1,300 in, 50 out")
    assert "cache" in footer and "1,000" in footer
    assert "claude-sonnet-5-5" in footer and re.search(r"\d+(\.\d+)? s", footer)
    assert "$" in footer
    assert "$" not in without_cost.visible_text()


async def test_a_long_thread_is_trimmed_to_the_budget_and_the_footer_says_so() -> None:
    async with simulators() as (slack, claude):
        first = slack.post_user_message(CHANNEL, "<@UBOT> the original question", user=ALICE)
        for i in range(60):
            slack.post_user_message(
                CHANNEL, f"message {i} " + "chatter " * 120, user=BOB, thread_ts=first.ts
            )
        claude.enqueue(Script(text="Answer within budget."))
        async with running_bot(slack, claude, context_token_budget=4000) as h:
            asked = await h.mention("so what now?", thread_ts=first.ts)
            [reply] = await h.finished(asked)
    request = str(claude.requests[0]["messages"])
    assert "the original question" in request  # the first question is kept
    assert "so what now?" in request
    assert "message 0 " not in request and "message 59" in request  # oldest dropped first
    assert len(request) < 4000 * 5
    assert "left out" in reply.visible_text().splitlines()[-1]
    assert "cache_control" in str(claude.requests[0])  # prompt caching marks the prefix


def _fixture_files() -> list[Path]:
    return recorded_streams()


_ENDING_WITH_MESSAGE_DELTA = {p.name for p in _fixture_files() if "message_delta" in p.read_text()}


@pytest.mark.skipif(
    not _fixture_files(), reason=missing(ANTHROPIC_FIXTURES, "the recorded Claude streams")
)
@pytest.mark.parametrize("fixture", _fixture_files(), ids=lambda p: p.name)
async def test_every_recorded_stream_ends_in_a_finished_message(fixture: Path) -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(fixture=str(fixture)))
        async with running_bot(slack, claude) as h:
            asked = await h.mention("replay")
            [reply] = await h.finished(asked)
    text = reply.visible_text()
    assert not reply.has_button("stop_answer")
    assert "Tokens:" in text or "[interrupted" in text or ":warning:" in text
    assert "Traceback" not in text
    assert text.strip() != "Thinking…"
    # Raw events are folded without the SDK's accumulator, which fails on some of these
    # (usage omitted, tool JSON that does not parse): none may end as a bot error.
    assert "an unexpected error" not in text
    if fixture.name in _ENDING_WITH_MESSAGE_DELTA:
        assert "Tokens:" in text and "[interrupted" not in text
