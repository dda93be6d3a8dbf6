"""A mention becomes a live, streamed answer: checked from Slack's side, through real wires."""

from __future__ import annotations

import itertools
import re

from bot.sim.claude import Script
from bot.sim.events import dm_envelope, mention_envelope
from tests.harness import ALICE, BOB, CHANNEL, DM, TEAM, running_bot, simulators

FOOTER = re.compile(r"Tokens: ([\d,]+) in, ([\d,]+) out")


def footer_numbers(text: str) -> tuple[int, int]:
    match = FOOTER.search(text)
    assert match, f"no footer in {text!r}"
    return int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))


async def test_mention_gets_placeholder_then_streamed_answer_with_footer() -> None:
    answer = "Token buckets refill at a steady rate. " * 8
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(
                text=answer,
                chunk_chars=10,
                chunk_delay=0.01,
                input_tokens=1200,
                cache_read_input_tokens=34,
                output_tokens=567,
            )
        )
        async with running_bot(slack, claude, edit_interval_seconds=0.1) as h:
            asked = await h.mention("how do token buckets work?")
            [reply] = await h.finished(asked)
    assert reply.thread_ts == asked.ts  # answered in the thread of the mention
    versions = [v for v in reply.history]
    assert versions[0]["text"] == "Thinking…"  # the placeholder came first
    final = reply.visible_text()
    assert answer.strip() in final
    assert footer_numbers(final) == (1234, 567)  # input counts cache reads too
    assert "Tokens: 1,234 in, 567 out" in final
    assert not reply.has_button("stop_answer")
    # While streaming, the message carried a Stop button and showed growing prefixes.
    streaming = [v for v in reply.history[1:-1]]
    assert streaming, "no intermediate edit"
    assert all(any(b.get("type") == "actions" for b in v.get("blocks") or []) for v in streaming)


async def test_edits_are_paced_and_final_edit_is_prompt() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="word " * 300, chunk_chars=5, chunk_delay=0.005))
        async with running_bot(slack, claude, edit_interval_seconds=0.25) as h:
            asked = await h.mention("pace yourself")
            await h.finished(asked)
    updates = [c for c in slack.calls_to("chat.update") if c.ok]
    assert len(updates) >= 3
    # Intermediate edits are sent at least one interval (0.25 s) apart. Slack records when it
    # answered, and a slow response brings two answers closer, so look at the average gap.
    intermediate = updates[1:-1]
    gaps = [b.at - a.at for a, b in itertools.pairwise(intermediate)]
    assert gaps and sum(gaps) / len(gaps) >= 0.2, gaps
    # 300 deltas over ~1.5 s, yet far fewer edits than deltas.
    assert len(updates) < 20


async def test_dm_is_answered_in_its_thread() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="Hi Alice!"))
        async with running_bot(slack, claude) as h:
            asked = await h.dm("hello there")
            [reply] = await h.finished(asked, channel=DM)
    assert "Hi Alice!" in reply.visible_text()
    assert reply.thread_ts == asked.ts


async def test_thread_becomes_conversation_with_roles_labels_and_no_footer() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(text="Paris is the capital of France."), Script(text="About 2.1 million people.")
        )
        async with running_bot(slack, claude) as h:
            first = await h.mention("what is the capital of France?")
            await h.finished(first)
            slack.post_user_message(CHANNEL, "I thought it was Lyon", user=BOB, thread_ts=first.ts)
            second = await h.mention("and how many people live there?", thread_ts=first.ts)
            await slack.wait_for(lambda: len(claude.requests) == 2)
            await slack.wait_for(
                lambda: (
                    "Tokens:"
                    in (h.replies(second)[-1].visible_text() if len(h.replies(second)) == 2 else "")
                )
            )
    messages = claude.requests[1]["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "user"]
    assistant_text = " ".join(b["text"] for b in messages[1]["content"])
    assert "Paris is the capital of France." in assistant_text
    assert "Tokens:" not in assistant_text and "[interrupted" not in assistant_text
    last_user = " ".join(b["text"] for b in messages[2]["content"])
    assert "[U0BOB (bob)]: I thought it was Lyon" in last_user  # labelled by Slack ID
    assert last_user.rstrip().endswith("[U0ALICE (alice)]: and how many people live there?")
    assert "<@UBOT>" not in last_user  # the bot's own mention is stripped
    # The second read of the thread asked Slack only for what came after the cached messages.
    reads = slack.calls_to("conversations.replies")
    assert "oldest" not in reads[0].params
    assert reads[1].params["oldest"] == first.ts
    assert claude.requests[1]["model"] == "claude-sonnet-5-5"
    assert claude.requests[1]["max_tokens"] == 2048


async def test_system_prompt_model_and_max_tokens_are_configurable() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(
            slack,
            claude,
            claude_model="claude-haiku-5-5",
            claude_max_tokens=300,
            system_prompt="Answer in French.",
        ) as h:
            asked = await h.mention("hello")
            await h.finished(asked)
    request = claude.requests[0]
    assert request["model"] == "claude-haiku-5-5"
    assert request["max_tokens"] == 300
    assert "Answer in French." in str(request["system"])


async def test_placeholder_text_is_configurable() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, placeholder_text="Un instant…") as h:
            asked = await h.mention("hello")
            [reply] = await h.finished(asked)
    assert reply.history[0]["text"] == "Un instant…"


async def test_code_fence_never_shows_unclosed_while_streaming() -> None:
    answer = "Here is code:\n\n```python\n" + "print('hi')\n" * 40 + "```\n\nDone."
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text=answer, chunk_chars=7, chunk_delay=0.004))
        async with running_bot(slack, claude, edit_interval_seconds=0.05) as h:
            asked = await h.mention("show code")
            [reply] = await h.finished(asked)
    shown = [_markdown_of(v) for v in reply.history[1:]]
    mid_fence = [s for s in shown if "```python" in s and "Done." not in s]
    assert mid_fence, "no edit caught the answer inside the code block"
    for text in shown:
        assert text.count("```") % 2 == 0, text


def _markdown_of(version: dict[str, object]) -> str:
    blocks = version.get("blocks") or []
    assert isinstance(blocks, list)
    return "\n".join(str(b.get("text", "")) for b in blocks if b.get("type") == "markdown")


async def test_retried_event_is_answered_once() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        asked = slack.post_user_message(CHANNEL, "<@UBOT> once please", user=ALICE)
        envelope = mention_envelope(
            team_id=TEAM,
            channel=CHANNEL,
            user=ALICE,
            text=asked.text,
            ts=asked.ts,
            bot_user_id="UBOT",
        )
        statuses = [(await h.poster.post_event(envelope, retry_num=n))[0] for n in (None, 1, 2, 3)]
        # The same message under another event id (another subscription) is a duplicate too.
        other = dict(envelope, event_id="Ev-other")
        statuses.append((await h.poster.post_event(other))[0])
        await h.finished(asked)
        later = await h.mention("a different question")
        await h.finished(later)
    assert statuses == [200] * 5
    assert len(h.replies(asked)) == 1
    assert len(claude.requests) == 2


async def test_bot_ignores_itself_other_bots_and_edits() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        own = slack.post_user_message(DM, "I am the bot", user="UBOT", bot_id="BBOT")
        other_bot = slack.post_user_message(DM, "beep", user="U0BOT2", bot_id="B0OTHER")
        for envelope in (
            dm_envelope(
                team_id=TEAM, channel=DM, user="UBOT", text=own.text, ts=own.ts, bot_id="BBOT"
            ),
            dm_envelope(
                team_id=TEAM,
                channel=DM,
                user="U0BOT2",
                text="beep",
                ts=other_bot.ts,
                bot_id="B0OTHER",
            ),
            dm_envelope(
                team_id=TEAM,
                channel=DM,
                user=ALICE,
                text="edited",
                ts=own.ts,
                subtype="message_changed",
            ),
            dm_envelope(
                team_id=TEAM, channel=DM, user=ALICE, text="", ts=own.ts, subtype="message_deleted"
            ),
        ):
            status, _ = await h.poster.post_event(envelope)
            assert status == 200
        asked = await h.dm("a real question")
        await h.finished(asked, channel=DM)
    assert len(claude.requests) == 1  # only the real question reached Claude
    posts = [c for c in slack.calls_to("chat.postMessage") if c.ok]
    assert len(posts) == 1


async def test_slack_calls_share_kept_alive_connections() -> None:
    """One aiohttp session for the whole bot: an answer's calls reuse connections instead of
    opening one per call (slack-sdk's default without a session)."""
    async with simulators() as (slack, claude):
        claude.enqueue(Script(text="word " * 60, chunk_chars=5, chunk_delay=0.01))
        async with running_bot(slack, claude, edit_interval_seconds=0.05) as h:
            asked = await h.mention("many edits please")
            await h.finished(asked)
    calls = [c for c in slack.calls if c.method != "auth.test"]
    assert len(calls) >= 6
    assert len({c.peer for c in calls}) <= 2, [c.peer for c in calls]
