"""Stop, one answer per thread, and the concurrency caps, seen from Slack (one replica)."""

from __future__ import annotations

from bot.sim.claude import Script
from bot.sim.events import block_action_payload
from tests.harness import ADMIN, ALICE, BOB, CHANNEL, TEAM, running_bot, simulators

SLOW = Script(text="streaming slowly " * 200, chunk_chars=6, chunk_delay=0.02)


async def _press_stop(h, reply_ts: str, user: str, answer_id: str) -> int:  # type: ignore[no-untyped-def]
    status, _ = await h.poster.post_action(
        block_action_payload(
            team_id=TEAM,
            user=user,
            channel=CHANNEL,
            message_ts=reply_ts,
            action_id="stop_answer",
            value=answer_id,
        )
    )
    return status


def _stop_value(message) -> str:  # type: ignore[no-untyped-def]
    for block in message.blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == "stop_answer":
                return str(element["value"])
    raise AssertionError("no Stop button")


async def test_asker_stops_an_answer_and_the_partial_text_stays() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(SLOW)
        async with running_bot(slack, claude) as h:
            asked = await h.mention("go on and on")
            await slack.wait_for(
                lambda: (
                    "streaming slowly" in h.replies(asked)[0].visible_text()
                    if h.replies(asked)
                    else False
                )
            )
            reply = h.replies(asked)[0]
            assert reply.has_button("stop_answer")
            assert await _press_stop(h, reply.ts, ALICE, _stop_value(reply)) == 200
            [reply] = await h.finished(asked, timeout=5)
            await claude.wait_for_open_streams(0)  # Stop closed Claude's stream too
    text = reply.visible_text()
    assert text.strip().splitlines()[-1] == "[interrupted: stopped by @alice]"  # named, not pinged
    assert "streaming slowly" in text
    assert not reply.has_button("stop_answer")
    assert text.count("streaming slowly") < 200  # it really stopped early


async def test_shutdown_interrupts_the_stream_and_closes_every_client() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(SLOW)
        async with running_bot(slack, claude, shutdown_grace_seconds=0.1) as h:
            asked = await h.mention("go on and on")
            await slack.wait_for(
                lambda: bool(h.replies(asked)) and "streaming" in h.replies(asked)[0].visible_text()
            )
            slack_session = h.bot.slack_client.session
            assert slack_session is not None  # one session for every Slack call

            await h.bot.shutdown()

            [reply] = h.replies(asked)
            await claude.wait_for_open_streams(0)
            assert h.bot.claude.is_closed()
            assert slack_session.closed and h.bot.slack_client.session is None
    last = reply.visible_text().strip().splitlines()[-1]
    assert last.startswith("[interrupted") and "restarted" in last


async def test_only_the_asker_or_an_admin_may_stop() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(SLOW)
        async with running_bot(slack, claude) as h:
            asked = await h.mention("long one please")
            await slack.wait_for(lambda: bool(h.replies(asked)))
            reply = h.replies(asked)[0]
            await _press_stop(h, reply.ts, BOB, _stop_value(reply))
            await slack.wait_for(lambda: bool(slack.ephemerals))
            assert h.replies(asked)[0].has_button("stop_answer")  # Bob's press changed nothing
            await _press_stop(h, reply.ts, ADMIN, _stop_value(reply))
            [reply] = await h.finished(asked, timeout=5)
    assert slack.ephemerals[0]["user"] == BOB
    assert "Only the person who asked" in slack.ephemerals[0]["text"]
    assert "stopped by @root" in reply.visible_text()


async def test_second_question_in_a_thread_waits_and_sees_the_first_answer() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(
            Script(text="First answer: forty-two. " * 20, chunk_chars=10, chunk_delay=0.01),
            Script(text="Second answer."),
        )
        async with running_bot(slack, claude) as h:
            first = await h.mention("what is the answer?")
            await slack.wait_for(lambda: len(claude.requests) == 1)
            second = await h.mention("and why?", thread_ts=first.ts)
            await slack.wait_for(
                lambda: (
                    len(h.replies(first)) == 2 and "Tokens:" in h.replies(first)[1].visible_text()
                ),
                timeout=15,
            )
    first_reply, second_reply = h.replies(first)
    assert "forty-two" in first_reply.visible_text()
    assert "Second answer." in second_reply.visible_text()
    # The second question reached Claude only after the first answer was complete.
    context = str(claude.requests[1]["messages"])
    assert context.count("forty-two") == 20
    assert any("Waiting for the answer above" in str(v) for v in second_reply.history)
    assert second.ts != first.ts


async def test_per_user_cap_refuses_politely() -> None:
    async with simulators() as (slack, claude):
        claude.enqueue(SLOW, SLOW)
        async with running_bot(slack, claude, max_answers_per_user=2) as h:
            one = await h.mention("one")
            two = await h.mention("two")
            await slack.wait_for(lambda: len(claude.requests) == 2)
            three = await h.mention("three")
            await slack.wait_for(lambda: bool(h.replies(three)))
            refusal = h.replies(three)[0].visible_text()
            other = await h.mention("bob here", user=BOB)
            await h.finished(other)
            for asked in (one, two):
                await _press_stop(
                    h, h.replies(asked)[0].ts, ALICE, _stop_value(h.replies(asked)[0])
                )
            await h.finished(one)
            await h.finished(two)
    assert "You already have 2 answers in progress" in refusal
    assert len(claude.requests) == 3  # the refused question never reached Claude


async def test_allowlists_ignore_other_channels_and_users() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, allowed_users=frozenset({BOB})) as h:
            ignored = await h.mention("alice is not allowed")
            allowed = await h.mention("bob is", user=BOB)
            await h.finished(allowed)
    assert h.replies(ignored) == []
    assert len(claude.requests) == 1


async def test_a_final_edit_waiting_for_budget_longer_than_a_lease_is_not_taken_over() -> None:
    """Under a scarce workspace budget the final edit may wait for many seconds; the answer's
    lease must stay alive meanwhile, or a janitor would finish it with a false [interrupted]."""
    async with simulators() as (slack, claude):
        claude.enqueue(
            *[Script(text=f"answer {i} " * 30, chunk_chars=6, chunk_delay=0.01) for i in range(3)]
        )
        async with running_bot(
            slack,
            claude,
            stream_lease_seconds=1.0,
            workspace_edits_per_minute=12,
            workspace_edit_burst=2,
        ) as h:
            asked = [
                await h.mention(f"question {i}", user=user)
                for i, user in enumerate((ALICE, BOB, ADMIN))
            ]
            finals = [(await h.finished(a, timeout=30))[-1] for a in asked]
    for i, reply in enumerate(finals):
        text = reply.visible_text()
        assert "[interrupted" not in text, text
        assert f"answer {i}" in text and "Tokens:" in text
    assert h.bot.metrics.janitor_recoveries._value.get() == 0
