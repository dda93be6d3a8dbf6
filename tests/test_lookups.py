"""Claude's server tools as the bot sees them: the request that turns them on (`bot.tools`),
and the fold of their blocks (`bot.lookups`): the progress line, the sources and their
numbers, the content sent back after `pause_turn`, the footer's counts and cost.

The fold is driven with the SDK's own event models (built as the SDK builds them from the
wire) and with the recorded streams of the SDK's tests, replayed over HTTP by ClaudeSim.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from bot import render
from bot.app import build_claude
from bot.claude import StreamState, fold_event, stream_answer
from bot.closing import FooterFacts, closing
from bot.config import ConfigError, Settings, load_settings
from bot.sim.claude import ClaudeSim, Script
from bot.tools import known_versions, mcp_beta, tool_request, tool_version
from bot.usage import Usage, estimate_cost
from tests.shared_files import ANTHROPIC_FIXTURES, missing

_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def fold(state: StreamState, *events: dict[str, Any]) -> StreamState:
    for event in events:
        fold_event(state, _EVENT.validate_python(event), 0.0)
    return state


def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def text(index: int, words: str, citations: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    events = [start(index, {"type": "text", "text": ""})]
    events += [delta(index, {"type": "citations_delta", "citation": c}) for c in citations]
    events += [delta(index, {"type": "text_delta", "text": words}), stop(index)]
    return events


def search(index: int, query: str, tool_id: str) -> list[dict[str, Any]]:
    raw = '{"query": "' + query + '"}'
    pieces = [raw[:5], raw[5:12], raw[12:]]
    return [
        start(index, {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {}}),
        *(delta(index, {"type": "input_json_delta", "partial_json": p}) for p in pieces),
        stop(index),
    ]


def results(index: int, tool_id: str, pages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    content = [
        {"type": "web_search_result", "url": url, "title": title, "encrypted_content": f"enc-{i}"}
        for i, (url, title) in enumerate(pages)
    ]
    block = {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": content}
    return [start(index, block), stop(index)]


def cite(url: str, title: str) -> dict[str, Any]:
    return {
        "type": "web_search_result_location",
        "url": url,
        "title": title,
        "cited_text": "…",
        "encrypted_index": "idx-secret",
    }


A = ("https://docs.example.org/a", "Page A")
B = ("https://news.example.net/b", "Page B")


# -- the progress line ------------------------------------------------------------------------


def test_a_search_shows_its_query_once_its_input_is_complete_and_goes_when_text_resumes() -> None:
    state = fold(StreamState(), *text(0, "Let me look."))
    state = fold(state, *search(1, "slack rate limits", "srv_1")[:2])
    assert state.trail.activity is None  # the query is not complete yet: nothing to show
    fold(state, *search(1, "slack rate limits", "srv_1")[2:])
    assert state.trail.activity == "Searching the web: slack rate limits…"
    fold(state, *results(2, "srv_1", [A, B]))
    assert state.trail.activity == "Searching the web: slack rate limits…"
    fold(state, *search(3, "slack rate limits 2026", "srv_2"))
    assert state.trail.activity == "Searching the web (2 searches): slack rate limits 2026…"
    fold(state, *text(4, " Found it."))
    assert state.trail.activity is None
    assert state.text() == "Let me look. Found it."


def test_a_failed_lookup_says_so_and_the_answer_goes_on() -> None:
    error = {"type": "web_search_tool_result_error", "error_code": "too_many_requests"}
    state = fold(
        StreamState(),
        *search(0, "weather", "srv_1"),
        start(1, {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": error}),
        stop(1),
    )
    assert state.trail.activity == "Search failed (too many requests): weather"
    assert state.trail.failures == 1
    fold(state, *text(2, "Without a search: it is usually mild."))
    assert state.trail.activity is None
    assert state.text() == "Without a search: it is usually mild."


def test_reading_a_page_and_an_mcp_tool_show_what_they_do() -> None:
    fetch = {"type": "server_tool_use", "id": "srv_f", "name": "web_fetch", "input": {}}
    state = fold(
        StreamState(),
        start(0, fetch),
        delta(0, {"type": "input_json_delta", "partial_json": '{"url": "https://x.example/p"}'}),
        stop(0),
    )
    assert state.trail.activity == "Reading https://x.example/p…"
    state = StreamState()
    state.trail.start(
        0,
        {"type": "mcp_tool_use", "id": "m1", "name": "lookup", "server_name": "jira", "input": {}},
        0,
    )
    state.trail.stop(0, 0)
    assert state.trail.activity == "Using jira: lookup…"


# -- sources ----------------------------------------------------------------------------------


def test_cited_passages_carry_the_numbers_of_their_distinct_sources() -> None:
    state = fold(
        StreamState(),
        *search(0, "q", "srv_1"),
        *results(1, "srv_1", [A, B]),
        *text(2, "First claim", [cite(*A), cite(*B), cite(*A)]),
        *text(3, ". Second claim", [cite(*B)]),
        *text(4, ". Uncited."),
    )
    assert state.text() == "First claim ¹,². Second claim ². Uncited."
    assert state.trail.sources.listed() == [A, B]
    note = render.sources_note(state.trail.sources.listed())
    assert note == (
        "**Sources**\n1. [Page A](https://docs.example.org/a)\n"
        "2. [Page B](https://news.example.net/b)"
    )
    assert "idx-secret" not in note and "enc-" not in note


def test_a_cited_passage_of_a_read_page_points_at_that_page() -> None:
    page = {
        "type": "web_fetch_result",
        "url": "https://docs.example.org/read",
        "content": {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "page text"},
            "title": "The page",
        },
    }
    passage = {
        "type": "char_location",
        "cited_text": "page",
        "document_index": 0,
        "document_title": "The page",
        "start_char_index": 0,
        "end_char_index": 4,
    }
    state = StreamState()
    state.trail.start(0, {"type": "web_fetch_tool_result", "tool_use_id": "f", "content": page}, 0)
    state.trail.stop(0, 0)
    fold(state, *text(1, "It says so", [passage]))
    assert state.text() == "It says so ¹"
    assert state.trail.sources.listed() == [("https://docs.example.org/read", "The page")]


def test_hostile_titles_and_urls_never_become_links_broadcasts_or_markup() -> None:
    listed = [
        ("javascript:alert(1)", "Click <!channel> me"),
        ("https://ok.example/a_(b)", "A [tricky](https://evil.example) *title*"),
        ("https://x.example/ok", "<@U123|boss> @here"),
    ]
    note = render.sources_note(listed)
    assert note is not None
    shown = render.final_payload("Body", footer=None, notes=[note]).blocks[0]["text"]
    assert "javascript:" not in shown.replace("1. Click", "")  # shown as text, never a link
    assert "](https://evil.example)" not in shown
    assert "<!channel>" not in shown and "<@U123" not in shown
    assert "https://ok.example/a_%28b%29" in shown


def test_a_long_source_list_ends_with_how_many_more_within_one_note() -> None:
    many = [(f"https://example.org/{i}/" + "p" * 80, "T" * 80) for i in range(30)]
    note = render.sources_note(many)
    assert note is not None and len(note) <= 1_000
    assert note.splitlines()[-1].startswith("…and ")


# -- continuing after pause_turn ---------------------------------------------------------------


def test_the_content_sent_back_is_the_assistants_content_as_it_came() -> None:
    state = fold(
        StreamState(),
        *text(0, "Let me check. "),
        *search(1, "q", "srv_1"),
        *results(2, "srv_1", [A]),
        *text(3, "It is", [cite(*A)]),
    )
    content = state.trail.content(state.text())
    assert [block["type"] for block in content] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert content[0]["text"] == "Let me check. "  # as written: only the last block is trimmed
    assert content[1]["input"] == {"query": "q"}
    assert content[2]["content"][0]["encrypted_content"] == "enc-0"  # sent back untouched
    assert content[3] == {"type": "text", "text": "It is", "citations": [cite(*A)]}


# -- usage -------------------------------------------------------------------------------------


def test_the_footer_counts_searches_and_pages_and_the_cost_includes_searches() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100, web_search_requests=3, web_fetch_requests=2)
    footer = render.format_footer(usage, searches=3, pages_read=2)
    assert footer.endswith("· 3 searches · 2 pages read")
    plain = estimate_cost(Usage(input_tokens=1000, output_tokens=100), "claude-sonnet-4-5")
    assert plain is not None
    assert estimate_cost(usage, "claude-sonnet-4-5") == pytest.approx(plain + 0.03)
    assert (usage + usage).web_search_requests == 6 and usage.server_tool_calls == 5


def test_usage_of_every_request_of_an_answer_adds_up() -> None:
    state = StreamState()
    first = {
        "type": "message_start",
        "message": {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-5-5",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 1},
        },
    }
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "pause_turn", "stop_sequence": None},
        "usage": {
            "output_tokens": 40,
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0},
        },
    }
    fold(state, first, end)
    state.earlier_usage = state.usage or Usage()
    fold(state, first, {**end, "delta": {"stop_reason": "end_turn", "stop_sequence": None}})
    assert state.usage == Usage(input_tokens=200, output_tokens=80, web_search_requests=4)
    facts = FooterFacts(model="claude-sonnet-5-5", elapsed=1.0, show_cost=False)
    ending = closing(state, stop=None, stream_error=None, idle_timeout=60, facts=facts)
    assert ending.footer is not None and ending.footer.startswith("Tokens: 200 in, 80 out")
    assert "4 searches" in ending.footer


# -- the request -------------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings(**{"slack_bot_token": "xoxb-x", "anthropic_api_key": "sk-x", **values})


def test_both_web_tools_are_on_by_default_in_the_newest_versions_the_sdk_knows() -> None:
    request = tool_request(settings(), "claude-sonnet-5-5")
    assert [t["name"] for t in request.tools] == ["web_search", "web_fetch"]
    assert request.tools[0]["type"] == known_versions()["web_search"][-1]
    assert request.tools[1]["type"] == known_versions()["web_fetch"][-1]
    assert all(t["max_uses"] == 5 for t in request.tools)
    assert request.kwargs() == {"tools": request.tools}  # no MCP: the plain endpoint


def test_older_models_get_the_first_tool_versions() -> None:
    assert tool_version("web_search", "claude-sonnet-4-5-20250929") == "web_search_20250305"
    assert tool_version("web_fetch", "claude-haiku-4-5") == "web_fetch_20250910"
    assert tool_version("web_search", "claude-opus-4-6") == known_versions()["web_search"][-1]


def test_switches_domains_and_mcp_servers_shape_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKETS_TOKEN", "tok-123")
    request = tool_request(
        settings(
            web_fetch=False,
            web_max_uses=2,
            web_blocked_domains="ads.example.com, Tracker.example",
            mcp_servers='[{"name": "tickets", "url": "https://mcp.example.com/mcp",'
            ' "token_env": "TICKETS_TOKEN"}]',
        ),
        "claude-sonnet-5-5",
    )
    assert request.tools[0]["name"] == "web_search" and request.tools[0]["max_uses"] == 2
    assert request.tools[0]["blocked_domains"] == ["ads.example.com", "tracker.example"]
    assert request.tools[1] == {"type": "mcp_toolset", "mcp_server_name": "tickets"}
    assert request.mcp_servers == [
        {
            "type": "url",
            "url": "https://mcp.example.com/mcp",
            "name": "tickets",
            "authorization_token": "tok-123",
        }
    ]
    assert request.kwargs()["betas"] == [mcp_beta()] and mcp_beta().startswith("mcp-client-")
    assert "tok-123" in settings(mcp_servers=request_json()).secret_values()
    assert tool_request(settings(web_search=False, web_fetch=False), "m").kwargs() == {}


def request_json() -> str:
    return '[{"name": "t", "url": "https://m.example.com", "token_env": "TICKETS_TOKEN"}]'


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"WEB_ALLOWED_DOMAINS": "a.com", "WEB_BLOCKED_DOMAINS": "b.com"}, "not both"),
        ({"MCP_SERVERS": "not json"}, "MCP_SERVERS: must be a JSON list"),
        ({"MCP_SERVERS": '[{"name": "x", "url": "http://plain.example"}]'}, "https://"),
        ({"MCP_SERVERS": '[{"name": "a b", "url": "https://m.example"}]'}, "MCP_SERVERS"),
        ({"WEB_MAX_USES": "0"}, "WEB_MAX_USES"),
    ],
)
def test_tool_settings_mistakes_are_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert "Value error" not in str(caught.value)


# -- recorded streams, replayed on real wires ---------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[ClaudeSim]:
    async with ClaudeSim() as server:
        yield server


async def replay(sim: ClaudeSim, name: str) -> StreamState:
    path = ANTHROPIC_FIXTURES / name
    if not path.is_file():
        pytest.skip(missing(path, "a recorded Claude stream"))
    sim.enqueue(Script(fixture=str(path)))
    config = settings(anthropic_base_url=sim.base_url, claude_max_continuations=0)
    claude = build_claude(config)
    state = StreamState()
    try:
        await stream_answer(
            claude, config, [{"role": "user", "content": "hi"}], state, time.monotonic
        )
    finally:
        await claude.close()
    return state


async def test_the_recorded_server_tool_use_stream_shows_its_search(sim: ClaudeSim) -> None:
    state = await replay(sim, "server_tool_use_response.txt")
    assert state.text() == "Let me search for that."
    assert state.trail.activity == "Searching the web: weather in Paris…"
    assert state.trail.content(state.text())[1]["input"] == {"query": "weather in Paris"}
    assert sim.requests[0]["tools"][0]["name"] == "web_search"


async def test_the_recorded_server_tool_result_stream_folds_every_block(sim: ClaudeSim) -> None:
    state = await replay(sim, "server_tool_result_response.txt")
    assert state.stop_reason == "tool_use" and state.trail.searches == 1
    kinds = [block["type"] for block in state.trail.content(state.text())]
    assert kinds == [
        "server_tool_use",
        "tool_use",
        "web_search_tool_result",
        "code_execution_tool_result",
    ]
