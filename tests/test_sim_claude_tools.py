"""Server tools of the simulated Claude, read by the real Anthropic SDK over HTTP: web search,
web fetch and MCP blocks, citations, `pause_turn` and its continuation, and the 400s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from bot.sim.claude import ClaudeSim, Lookup, Say, Script, default_script
from bot.sim.claude_tool_checks import WEB_TOOLS

MODEL = "claude-sonnet-5-5"
SEARCH = {"type": "web_search_20250305", "name": "web_search"}
FETCH = {"type": "web_fetch_20250910", "name": "web_fetch"}
MCP_BETA = "mcp-client-2025-11-20"
SERVERS = [{"type": "url", "url": "https://mcp.example.org/sse", "name": "tickets"}]
TOOLSETS = [{"type": "mcp_toolset", "mcp_server_name": "tickets"}]
RESULTS = [
    ("https://docs.example.org/buckets", "Token buckets"),
    ("https://wiki.example.net/buckets", "Rate limiting"),
]


@pytest.fixture
async def sim() -> AsyncIterator[ClaudeSim]:
    async with ClaudeSim() as server:
        yield server


@pytest.fixture
async def client(sim: ClaudeSim) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.base_url, api_key="x", max_retries=0, timeout=httpx2.Timeout(5.0)
    ) as sdk:
        yield sdk


def _ask(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


async def _events(client: anthropic.AsyncAnthropic, **params: Any) -> list[Any]:
    params.setdefault("messages", _ask("How do token buckets work?"))
    stream = await client.messages.create(model=MODEL, max_tokens=512, stream=True, **params)
    return [event async for event in stream]


def _blocks(events: list[Any]) -> dict[int, tuple[Any, list[Any]]]:
    """Each content block's start and its deltas, by index."""
    blocks: dict[int, tuple[Any, list[Any]]] = {}
    for event in events:
        if event.type == "content_block_start":
            blocks[event.index] = (event.content_block, [])
        elif event.type == "content_block_delta":
            blocks[event.index][1].append(event.delta)
    return blocks


def _assistant(content: list[Any]) -> dict[str, Any]:
    """A response's content as the next request sends it back."""
    return {"role": "assistant", "content": [block.to_dict() for block in content]}


async def test_a_search_answer_streams_as_the_api_does(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    question = {"query": "token bucket rate limiter"}
    sim.enqueue(
        Script(
            text="ignored",
            chunk_chars=5,
            steps=[
                Say("Let me look."),
                Lookup("web_search", question, RESULTS),
                Say("Tokens refill at a fixed rate.", cites=[0, 1]),
                Say(" That is all."),
            ],
        )
    )
    events = await _events(client, tools=[SEARCH])
    blocks = _blocks(events)
    assert [start.type for start, _ in blocks.values()] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
        "text",
    ]
    use, pieces = blocks[1]
    assert use.name == "web_search" and use.id.startswith("srvtoolu_sim") and use.input == {}
    assert len(pieces) >= 3 and pieces[0].partial_json == ""
    assert (
        "".join(piece.partial_json for piece in pieces) == '{"query": "token bucket rate limiter"}'
    )
    result, deltas = blocks[2]
    assert result.tool_use_id == use.id and not deltas
    assert [(r.url, r.title) for r in result.content] == RESULTS
    assert all(r.type == "web_search_result" and r.encrypted_content for r in result.content)
    assert result.content[0].page_age == "April 30, 2026"
    cited, deltas = blocks[3]
    assert cited.text == "" and [d.type for d in deltas[:2]] == ["citations_delta"] * 2
    assert {d.type for d in deltas[2:]} == {"text_delta"} and len(deltas) == 2 + 6
    citation = deltas[0].citation
    assert citation.type == "web_search_result_location"
    assert (citation.url, citation.title) == RESULTS[0]
    assert citation.cited_text == "Tokens refill at a fixed rate." and citation.encrypted_index
    assert deltas[1].citation.url == RESULTS[1][0]
    assert "".join(d.text for d in blocks[4][1]) == " That is all."
    delta = next(event for event in events if event.type == "message_delta")
    assert delta.usage.server_tool_use is not None
    assert delta.usage.server_tool_use.web_search_requests == 1
    assert delta.usage.server_tool_use.web_fetch_requests == 0
    assert delta.usage.output_tokens > 10


async def test_the_sdk_accumulates_the_answer_and_it_goes_back_valid(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(
        Script(
            steps=[
                Lookup("web_search", {"query": "q"}, RESULTS),
                Say("Cited.", cites=[1]),
            ]
        )
    )
    messages = _ask("q?")
    async with client.messages.stream(
        model=MODEL, max_tokens=64, messages=messages, tools=[SEARCH]
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "server_tool_use" and final.content[0].input == {"query": "q"}
    assert final.content[2].type == "text" and final.content[2].citations
    assert final.usage.server_tool_use is not None
    follow_up = [*messages, _assistant(final.content), {"role": "user", "content": "thanks"}]
    reply = await client.messages.create(
        model=MODEL, max_tokens=64, messages=follow_up, tools=[SEARCH]
    )
    assert reply.content[0].type == "text"


async def test_tool_errors_are_result_blocks(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(
        Script(
            steps=[
                Lookup("web_search", {"query": "q"}, error="too_many_requests"),
                Lookup("web_fetch", {"url": "https://x.example.org/"}, error="url_not_accessible"),
                Say("Nothing found."),
            ]
        )
    )
    blocks = _blocks(await _events(client, tools=[SEARCH, FETCH]))
    search, fetch = blocks[1][0].content, blocks[3][0].content
    assert search.type == "web_search_tool_result_error"
    assert search.error_code == "too_many_requests"
    assert fetch.type == "web_fetch_tool_result_error" and fetch.error_code == "url_not_accessible"


async def test_a_fetched_page_is_a_document_cited_by_characters(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    url = "https://docs.example.org/limits"
    sim.enqueue(
        Script(
            steps=[
                Lookup("web_search", {"query": "q"}, RESULTS),
                Lookup("web_fetch", {"url": url}, [(url, "Limits")]),
                Say("The page says so.", cites=[2, 0]),
            ]
        )
    )
    events = await _events(client, tools=[SEARCH, FETCH])
    blocks = _blocks(events)
    fetched = blocks[3][0]
    assert fetched.type == "web_fetch_tool_result" and fetched.tool_use_id == blocks[2][0].id
    assert fetched.content.type == "web_fetch_result" and fetched.content.url == url
    assert fetched.content.retrieved_at == "2026-12-01T12:00:00Z"
    document = fetched.content.content
    assert document.type == "document" and document.title == "Limits"
    assert document.source.type == "text" and document.source.data
    assert document.citations is not None and document.citations.enabled
    page, search = (delta.citation for delta in blocks[4][1][:2])
    assert page.type == "char_location" and page.document_index == 0
    assert page.document_title == "Limits" and page.cited_text == "The page says so."
    assert (page.start_char_index, page.end_char_index) == (0, len("The page says so."))
    assert search.type == "web_search_result_location"
    usage = next(event for event in events if event.type == "message_delta").usage
    assert usage.server_tool_use is not None
    assert (
        usage.server_tool_use.web_search_requests,
        usage.server_tool_use.web_fetch_requests,
    ) == (
        1,
        1,
    )


async def test_mcp_calls_need_the_beta_and_stream_as_mcp_blocks(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    prompt = _ask("What about T-1? [sim:mcp] [sim:fast]")
    with pytest.raises(anthropic.BadRequestError, match="mcp_servers"):
        await client.beta.messages.create(
            model=MODEL, max_tokens=64, messages=prompt, mcp_servers=SERVERS, tools=TOOLSETS
        )
    assert sim.requests == []
    async with client.beta.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=prompt,
        betas=[MCP_BETA],
        mcp_servers=SERVERS,
        tools=TOOLSETS,
    ) as stream:
        final = await stream.get_final_message()
    use, result = final.content[1], final.content[2]
    assert use.type == "mcp_tool_use" and use.id.startswith("mcptoolu_sim")
    assert (use.name, use.server_name, use.input) == ("lookup_ticket", "tickets", {"id": "T-1"})
    assert result.type == "mcp_tool_result" and result.tool_use_id == use.id
    assert result.is_error is False and not isinstance(result.content, str)
    assert "T-1" in result.content[0].text
    assert final.usage.server_tool_use is None  # MCP calls are not counted there
    assert final.content[-1].type == "text"


async def test_an_mcp_error_is_an_error_result(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    sim.enqueue(Script(steps=[Lookup("find", {}, error="server down", server="tickets")]))
    message = await client.beta.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=_ask("q"),
        betas=[MCP_BETA],
        mcp_servers=SERVERS,
        tools=TOOLSETS,
    )
    result = message.content[1]
    assert result.type == "mcp_tool_result" and result.is_error
    assert not isinstance(result.content, str) and result.content[0].text == "server down"


async def test_pause_turn_then_the_continuation_gets_the_rest(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    messages = _ask("How do token buckets work? [sim:search 2] [sim:pause] [sim:fast]")
    async with client.messages.stream(
        model=MODEL, max_tokens=256, messages=messages, tools=[SEARCH]
    ) as stream:
        paused = await stream.get_final_message()
    assert paused.stop_reason == "pause_turn"
    assert [block.type for block in paused.content] == ["text"] + [
        "server_tool_use",
        "web_search_tool_result",
    ] * 2
    assert paused.content[3].input == {"query": "How do token buckets work? (2)"}
    assert paused.usage.server_tool_use is not None
    assert paused.usage.server_tool_use.web_search_requests == 2
    sent_back = [*messages, _assistant(paused.content)]
    rest = await client.messages.create(
        model=MODEL, max_tokens=256, messages=sent_back, tools=[SEARCH]
    )
    assert rest.stop_reason == "end_turn"
    assert {block.type for block in rest.content} == {"text"}
    assert rest.usage.server_tool_use is None
    urls = [r.url for r in paused.content[2].content] + [r.url for r in paused.content[4].content]
    cited = [c.url for block in rest.content for c in block.citations or []]  # type: ignore[union-attr]
    assert cited == [urls[0], urls[1], urls[0], urls[5]]
    # The whole turn goes back with the next question, its citations included.
    turn = {
        "role": "assistant",
        "content": sent_back[-1]["content"] + _assistant(rest.content)["content"],
    }
    await client.messages.create(
        model=MODEL, max_tokens=64, messages=[*messages, turn, *_ask("and then?")], tools=[SEARCH]
    )


async def test_search_error_directive_retries_and_answers() -> None:
    body = {"model": MODEL, "messages": _ask("Why? [sim:search-error] [sim:fast]")}
    script = default_script(body)
    assert script.steps is not None
    lookups = [step for step in script.steps if isinstance(step, Lookup)]
    assert [lookup.error for lookup in lookups] == ["too_many_requests", None]
    assert all(lookup.delay == 0 for lookup in lookups)
    assert lookups[1].input == {"query": "Why? (2)"}
    assert isinstance(script.steps[-1], Say) and script.stop_reason == "end_turn"


async def test_fetch_directive_fetches_the_questions_url(
    client: anthropic.AsyncAnthropic,
) -> None:
    prompt = "Summarise <https://example.com/spec.html|the spec> [sim:fetch] [sim:fast]"
    message = await client.messages.create(
        model=MODEL, max_tokens=256, messages=_ask(prompt), tools=[FETCH]
    )
    use = message.content[1]
    assert use.type == "server_tool_use" and use.input == {"url": "https://example.com/spec.html"}
    cited = [block for block in message.content if block.type == "text" and block.citations]
    assert cited and cited[0].citations[0].type == "char_location"  # type: ignore[index]
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_fetch_requests == 1


async def test_mcp_directive_without_servers_is_plain_text(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=64, messages=_ask("T-1? [sim:mcp]")
    )
    assert [block.type for block in message.content] == ["text"]


async def test_faults_count_text_deltas_across_says(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    steps: list[Say | Lookup] = [
        Say("ab", cites=[]),
        Lookup("web_search", {"query": "q"}, RESULTS),
        Say("cdef"),
    ]
    sim.enqueue(Script(chunk_chars=1, error_event_after=4, steps=steps))
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        await _events(client, tools=[SEARCH])


async def test_a_lookup_delay_keeps_the_stream_alive_with_pings(sim: ClaudeSim) -> None:
    lookup = Lookup("web_search", {"query": "q"}, RESULTS, delay=0.1)
    sim.enqueue(Script(ping_every=0.02, steps=[lookup, Say("Done.")]))
    body = {"model": MODEL, "max_tokens": 64, "stream": True, "messages": _ask("q")}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base_url}/v1/messages", json=body, headers={"x-api-key": "x"}) as reply,
    ):
        raw = await reply.text()
    kinds = [line.removeprefix("event: ") for line in raw.splitlines() if line.startswith("event:")]
    use_stop = kinds.index("content_block_stop")
    result_start = kinds.index("content_block_start", use_stop)
    assert kinds[use_stop:result_start].count("ping") >= 2


def test_the_sdks_web_tool_versions_are_known() -> None:
    assert {"web_search_20250305", "web_search_20260209", "web_fetch_20250910"} <= set(WEB_TOOLS)
    assert {WEB_TOOLS[kind] for kind in WEB_TOOLS} == {"web_search", "web_fetch"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"tools": [{**SEARCH, "allowed_domains": ["a.org"], "blocked_domains": ["b.org"]}]},
            "both",
        ),
        ({"tools": [{"type": "web_search_29990101", "name": "web_search"}]}, "Input tag"),
        ({"tools": [{**SEARCH, "name": "search"}]}, "name"),
        ({"tools": [{**FETCH, "max_uses": 0}]}, "max_uses"),
        ({"tools": TOOLSETS}, "Input tag 'mcp_toolset'"),
        (
            {
                "messages": [
                    *_ask("q"),
                    {"role": "assistant", "content": [{"type": "text", "text": "So: "}]},
                ]
            },
            "trailing whitespace",
        ),
        (
            {
                "messages": [
                    *_ask("q"),
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "server_tool_use",
                                "id": "s1",
                                "name": "web_search",
                                "input": {},
                            }
                        ],
                    },
                ]
            },
            "without a corresponding result",
        ),
    ],
)
async def test_malformed_tool_requests_get_400(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic, params: dict[str, Any], message: str
) -> None:
    params.setdefault("messages", _ask("q"))
    with pytest.raises(anthropic.BadRequestError, match=message):
        await client.messages.create(model=MODEL, max_tokens=64, **params)
    assert sim.requests == []


async def test_mcp_servers_need_a_toolset_each(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    for tools, message in (
        ([], "no mcp_toolset"),
        ([{**TOOLSETS[0], "mcp_server_name": "x"}], "'x'"),
    ):
        with pytest.raises(anthropic.BadRequestError, match=message):
            await client.beta.messages.create(
                model=MODEL,
                max_tokens=64,
                messages=_ask("q"),
                betas=[MCP_BETA],
                mcp_servers=SERVERS,
                tools=tools,
            )
    assert sim.requests == []


async def test_tampered_encrypted_content_is_refused(
    sim: ClaudeSim, client: anthropic.AsyncAnthropic
) -> None:
    messages = _ask("Buckets? [sim:search] [sim:pause] [sim:fast]")
    paused = await client.messages.create(
        model=MODEL, max_tokens=64, messages=messages, tools=[SEARCH]
    )
    assistant = _assistant(paused.content)
    assistant["content"][2]["content"][1]["encrypted_content"] = "Eo0BCiQ4forged"
    with pytest.raises(anthropic.BadRequestError, match="invalid encrypted_content"):
        await client.messages.create(
            model=MODEL, max_tokens=64, messages=[*messages, assistant], tools=[SEARCH]
        )
    assert len(sim.requests) == 1
