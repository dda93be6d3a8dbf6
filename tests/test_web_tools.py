"""Claude's server tools end to end, on real wires: the real slack-sdk and Anthropic clients
against the simulated Slack and the simulated Claude, which streams `server_tool_use`, tool
results, citations and `pause_turn` as the API does (and refuses what the API refuses: a
tampered `encrypted_content`, MCP servers without the beta header, …).

Checked as a reader sees it (the message's versions in the simulated Slack) and as Claude
received it (`claude.requests`)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.demo import run_demo
from bot.logs import JsonFormatter, Redactor
from bot.render import STOP_ACTION_ID, stop_button_answer_id
from bot.sim.claude import Script
from bot.sim.claude_scripts import Lookup, Say
from bot.sim.events import block_action_payload
from bot.sim.slack import SimMessage, SlackSim
from tests.harness import ALICE, CHANNEL, TEAM, running_bot, simulators

A = ("https://docs.example.org/rate-limits", "Rate limits | Example Docs")
B = ("https://news.example.net/2026/edits", "Editing messages in 2026")
C = ("https://blog.example.com/pacing", "Pacing edits")
QUERY = "slack chat.update rate limit"


def status_lines(reply: SimMessage) -> list[str]:
    """Every status line (a context block under the streaming text) the reply ever showed."""
    seen = []
    for version in reply.history:
        blocks = version.get("blocks") or []
        if any(b.get("type") == "actions" for b in blocks):  # still streaming
            for block in blocks:
                if block.get("type") == "context":
                    seen.append(block["elements"][0]["text"])
    return seen


def shows(slack: SlackSim, asked: SimMessage, words: str) -> bool:
    replies = slack.bot_replies(CHANNEL, asked.ts)
    return bool(replies) and any(words in line for line in status_lines(replies[0]))


def searched(steps: list[Any]) -> Script:
    return Script(steps=steps, chunk_chars=8, ping_every=0.5)  # Claude pings while tools run


async def test_a_search_shows_what_it_looks_for_then_cited_text_and_its_sources() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(
            searched(
                [
                    Say("Let me check the current limits. "),
                    Lookup("web_search", {"query": QUERY}, results=[A, B, C], delay=3.0),
                    Say("Slack allows about one edit per second per message", cites=[0, 1]),
                    Say(", and bursts are absorbed", cites=[0]),
                    Say(". Pace your edits."),
                ]
            )
        )
        asked = await h.mention("how often can a bot edit a message?")
        await slack.wait_for(lambda: shows(slack, asked, f"Searching the web: {QUERY}…"))
        [reply] = await h.finished(asked)
    text = reply.visible_text()
    assert "per message ¹,², and bursts are absorbed ¹. Pace your edits." in text
    assert "Sources" in text
    final = reply.history[-1]["blocks"]
    body = final[0]["text"]
    assert "1. [Rate limits Example Docs](https://docs.example.org/rate-limits)" in body
    assert "2. [Editing messages in 2026](https://news.example.net/2026/edits)" in body
    assert "blog.example.com" not in body  # found, never cited: not a source
    # The status line went with the text's return: the finished message shows none.
    assert not any(b["type"] == "context" and "Searching" in str(b) for b in final)
    assert "· 1 search" in text
    tools = {tool["name"]: tool for tool in claude.requests[0]["tools"]}
    assert set(tools) == {"web_search", "web_fetch"}
    assert tools["web_search"]["max_uses"] == 5
    assert "encrypted" not in str(reply.history)


async def test_several_searches_show_as_one_line_with_a_count() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(
            searched(
                [
                    Lookup("web_search", {"query": "first"}, results=[A]),
                    Lookup("web_search", {"query": "second"}, results=[B]),
                    Lookup("web_search", {"query": "third"}, results=[C], delay=3.0),
                    Say("Three sources agree", cites=[0, 1, 2]),
                ]
            )
        )
        asked = await h.mention("compare three docs")
        await slack.wait_for(lambda: shows(slack, asked, "Searching the web (3 searches): third…"))
        [reply] = await h.finished(asked)
    assert "Three sources agree ¹,²,³" in reply.visible_text()
    assert "· 3 searches" in reply.visible_text()


async def test_a_failed_search_says_so_and_the_answer_goes_on() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(
            searched(
                [
                    Lookup("web_search", {"query": QUERY}, error="too_many_requests", after=3.0),
                    Say("I could not search just now, but from what I know: pace your edits."),
                ]
            )
        )
        asked = await h.mention("rate limits?")
        await slack.wait_for(
            lambda: shows(slack, asked, f"Search failed (too many requests): {QUERY}")
        )
        [reply] = await h.finished(asked)
    text = reply.visible_text()
    assert "from what I know: pace your edits." in text
    assert "[interrupted" not in text and "Sources" not in text


async def test_reading_a_page_shows_its_address_and_cites_it() -> None:
    page = "https://docs.example.org/changelog"
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(
            searched(
                [
                    Lookup("web_fetch", {"url": page}, results=[(page, "Changelog")], delay=3.0),
                    Say("Version 3 was released in May", cites=[0]),
                ]
            )
        )
        asked = await h.mention(f"what changed? {page}")
        await slack.wait_for(lambda: shows(slack, asked, f"Reading {page}…"))
        [reply] = await h.finished(asked)
    text = reply.visible_text()
    assert "released in May ¹" in text and "· 1 page read" in text
    assert f"1. [Changelog]({page})" in reply.history[-1]["blocks"][0]["text"]


async def test_a_paused_tool_turn_is_resumed_into_the_same_message() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        asked = await h.mention("what is new in Slack? [sim:search 2] [sim:pause] [sim:fast]")
        replies = await h.finished(asked)
    assert len(replies) == 1
    assert len(claude.requests) == 2
    first, second = claude.requests
    resumed = second["messages"][-1]
    assert resumed["role"] == "assistant"
    kinds = [block["type"] for block in resumed["content"]]
    assert kinds.count("server_tool_use") == 2 and kinds.count("web_search_tool_result") == 2
    assert second["messages"][:-1] == first["messages"]
    text = replies[0].visible_text()
    assert "Sources" in text and "· 2 searches" in text and "paused" not in text
    # The footer adds up both requests' input tokens.
    inputs = text.split("Tokens: ")[1].split(" in")[0]
    assert int(inputs.replace(",", "")) > 0


async def test_a_turn_paused_too_often_ends_with_a_note() -> None:
    async with (
        simulators() as (slack, claude),
        running_bot(slack, claude, claude_max_continuations=0) as h,
    ):
        asked = await h.mention("news? [sim:search] [sim:pause] [sim:fast]")
        [reply] = await h.finished(asked)
    assert len(claude.requests) == 1
    assert "paused by Claude before finishing" in reply.visible_text()


async def test_mcp_servers_go_through_the_connector_with_their_token(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TICKETS_MCP_TOKEN", "mcp-secret-token-123")
    servers = json.dumps(
        [
            {
                "name": "tickets",
                "url": "https://mcp.example.com/mcp",
                "token_env": "TICKETS_MCP_TOKEN",
            }
        ]
    )
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="anthropic")  # whatever an earlier test left it at
    async with (
        simulators() as (slack, claude),
        running_bot(slack, claude, mcp_servers=servers) as h,
    ):
        claude.enqueue(
            searched(
                [
                    Lookup("lookup_ticket", {"id": "T-1"}, server="tickets", delay=3.0),
                    Say("Ticket T-1 is open."),
                ]
            )
        )
        asked = await h.mention("status of T-1?")
        await slack.wait_for(lambda: shows(slack, asked, "Using tickets: lookup_ticket…"))
        [reply] = await h.finished(asked)
    [request] = claude.requests
    assert request["_headers"]["anthropic-beta"].startswith("mcp-client-")
    assert request["mcp_servers"] == [
        {
            "type": "url",
            "url": "https://mcp.example.com/mcp",
            "name": "tickets",
            "authorization_token": "mcp-secret-token-123",
        }
    ]
    assert {"type": "mcp_toolset", "mcp_server_name": "tickets"} in request["tools"]
    assert "Ticket T-1 is open." in reply.visible_text()
    # The SDK logs its request at DEBUG, the server's token in it: the bot's log formatter masks
    # it like the bot's own secrets (it must: the connector takes the token in the body).
    settings = h.bot.settings
    formatter = JsonFormatter(Redactor(settings.secret_values()))
    shown = "\n".join(formatter.format(record) for record in caplog.records)
    assert "mcp-secret-token-123" in caplog.text and "mcp-secret-token-123" not in shown


async def test_the_web_tools_follow_their_switches(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yml"
    channels.write_text(f"channels:\n  {CHANNEL}:\n    web_fetch: false\n", encoding="utf-8")
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, web_search=False) as h:
            await h.finished(await h.mention("no search here"))
        async with running_bot(slack, claude, channel_settings_file=str(channels)) as h:
            await h.finished(await h.mention("no fetch in this channel"))
        async with running_bot(
            slack, claude, web_search=False, channel_settings_file=str(channels)
        ) as h:
            await h.finished(await h.mention("no tools at all"))
    tools = [[tool["name"] for tool in r.get("tools", [])] for r in claude.requests]
    assert tools == [["web_fetch"], ["web_search"], []]


async def test_a_search_in_the_demo() -> None:
    out = io.StringIO()
    final = await run_demo("What is new? [sim:search]", out=out, chunk_delay=0.0)
    text = final.visible_text()
    assert "Sources" in text and "· 1 search" in text


# -- faults around tools: every one ends in one finished message -------------------------------

LOOKING = "Looking this up. "
SEARCH = Lookup("web_search", {"query": QUERY}, results=[A, B])


def paused_first() -> Script:
    """A first request that pauses its tool turn after a search."""
    return replace(searched([Say(LOOKING), SEARCH]), stop_reason="pause_turn")


@pytest.mark.parametrize(
    ("moment", "scripts", "reason"),
    [
        (
            "after a search, before the text resumes",
            lambda: [replace(searched([Say(LOOKING), SEARCH, Say("Never shown")]), drop_after=3)],
            "the connection to Claude was lost",
        ),
        (
            "the continuation is refused",
            lambda: [paused_first(), Script(http_error=(529, "overloaded_error"))],
            "Claude is overloaded",
        ),
        (
            "mid-continuation",
            lambda: [paused_first(), Script(text="The rest streams and then", drop_after=2)],
            "the connection to Claude was lost",
        ),
    ],
)
async def test_a_fault_around_a_tool_ends_in_one_finished_message(
    moment: str, scripts: Any, reason: str
) -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(*scripts())
        asked = await h.mention(f"fault {moment}")
        replies = await h.finished(asked)
        await claude.wait_for_open_streams(0)
    assert len(replies) == 1, moment
    text = replies[0].visible_text()
    assert text.startswith(LOOKING.strip()), moment
    assert text.strip().splitlines()[-1].startswith("[interrupted: ") and reason in text, moment
    assert "Never shown" not in text
    final = replies[0].history[-1]["blocks"]
    assert not any(b["type"] == "context" and "Searching" in str(b) for b in final), moment


async def test_stop_while_a_tool_runs_ends_the_answer_and_its_status_line() -> None:
    slow = Lookup("web_search", {"query": QUERY}, results=[A], delay=60.0)
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(searched([Say(LOOKING), slow, Say("Never shown")]))
        asked = await h.mention("search slowly")
        await slack.wait_for(lambda: shows(slack, asked, "Searching the web"))
        [reply] = h.replies(asked)
        status, _ = await h.poster.post_action(
            block_action_payload(
                team_id=TEAM,
                user=ALICE,
                channel=CHANNEL,
                message_ts=reply.ts,
                action_id=STOP_ACTION_ID,
                value=stop_button_answer_id({"blocks": reply.blocks}) or "",
            )
        )
        assert status == 200
        [reply] = await h.finished(asked)
        await claude.wait_for_open_streams(0)  # Stop closed Claude's stream mid-tool
    text = reply.visible_text()
    assert text.startswith(LOOKING.strip()) and "Never shown" not in text
    assert text.strip().splitlines()[-1] == "[interrupted: stopped by @alice]"
    assert not any(b["type"] == "context" and "Searching" in str(b) for b in reply.blocks)
