"""Claude's server tools in the simulated Messages API: the steps a script plays (`Say`,
`Lookup`), the content blocks they become, exactly as the API writes them, and the default
steps the `[sim:search]`-style directives ask for.

A `Lookup` becomes a `server_tool_use` block (`mcp_tool_use` when it names an MCP server) and
its result block (`web_search_tool_result`, `web_fetch_tool_result`, `mcp_tool_result`). A
`Say` becomes a text block whose `cites` point into the results returned so far: every search
result and fetched page of the answer, in order, counting the ones the request sent back in a
trailing assistant message (the turn that paused with `pause_turn`) first. MCP results are not
citable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

PAGE_AGE = "April 30, 2026"
RETRIEVED_AT = "2026-12-01T12:00:00Z"
CITED_TEXT_MAX = 150
TOOL_USE_TYPES = frozenset({"server_tool_use", "mcp_tool_use"})
RESULT_TYPES = frozenset({"web_search_tool_result", "web_fetch_tool_result", "mcp_tool_result"})


@dataclass
class Cite:
    """What a cite index means: `result` counts every search result and fetched page of the
    answer so far, from 0. `Say.cites` holds the plain ints (a `Cite` is accepted too)."""

    result: int


@dataclass
class Say:
    """A text block, cited (one `citations_delta` per cite, before its text) or not."""

    text: str
    cites: list[int] = field(default_factory=list)


@dataclass
class Lookup:
    """One server tool call and its result block.

    `results` are `(url, title)`: web_search's results, or web_fetch's one fetched page; for an
    MCP tool (`server` set) their titles are the lines of the result's text. `error` (an
    `error_code`) makes the result the tool's error instead. `delay` separates the tool use
    from its result, `after` the result from what follows (a reader then sees the result's
    effect, a failed lookup's line say); both with pings every `Script.ping_every`.
    """

    name: str
    input: dict[str, Any]
    results: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    server: str | None = None
    delay: float = 0.0
    after: float = 0.0


Step = Say | Lookup


@dataclass
class Planned:
    """A content block as the final Message holds it, and the pause before it streams."""

    block: dict[str, Any]
    delay: float = 0.0
    after: float = 0.0  # a pause once the block is complete


@dataclass
class Plan:
    """An answer's content blocks, and the server tool requests for `usage.server_tool_use`."""

    blocks: list[Planned]
    server_tool_use: dict[str, int] | None = None


@dataclass
class _Source:
    """A citable result: a search result (with its encrypted_content) or a fetched page."""

    url: str
    title: str
    encrypted_content: str | None = None
    document_index: int = 0


def _opaque(*parts: str) -> str:
    """A base64 blob standing for the API's encrypted fields: unique, stable, meaningless."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return base64.b64encode(b"\x12\x0c" + digest + digest[:14]).decode()


def encrypted_index(encrypted_content: str) -> str:
    """The `encrypted_index` of a citation of the search result with `encrypted_content`."""
    return _opaque("index", encrypted_content)


def _prior_sources(body: dict[str, Any], emitted: set[str]) -> list[_Source]:
    """The results in the request's trailing assistant message (a paused turn goes on)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return []
    sources: list[_Source] = []
    fetched = 0
    blocks = last.get("content")
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        content = block.get("content")
        if block.get("type") == "web_search_tool_result" and isinstance(content, list):
            for result in content:
                if isinstance(result, dict):
                    secret = str(result.get("encrypted_content", ""))
                    emitted.add(encrypted_index(secret))
                    sources.append(
                        _Source(str(result.get("url")), str(result.get("title")), secret)
                    )
        elif block.get("type") == "web_fetch_tool_result" and isinstance(content, dict):
            document = content.get("content")
            title = document.get("title") if isinstance(document, dict) else None
            sources.append(_Source(str(content.get("url")), str(title), None, fetched))
            fetched += 1
    return sources


def _citation(source: _Source, text: str) -> dict[str, Any]:
    cited = text[:CITED_TEXT_MAX]
    if source.encrypted_content is not None:
        return {
            "type": "web_search_result_location",
            "cited_text": cited,
            "url": source.url,
            "title": source.title,
            "encrypted_index": encrypted_index(source.encrypted_content),
        }
    return {
        "type": "char_location",
        "cited_text": cited,
        "document_index": source.document_index,
        "document_title": source.title,
        "start_char_index": 0,
        "end_char_index": len(cited),
        "file_id": None,
    }


def page_text(url: str, title: str) -> str:
    return (
        f"{title}\n\nThis is the simulated text of {url}. It reads the same on every fetch, "
        "so answers that cite it can be checked word for word."
    )


_SPEAKER = re.compile(r"^\[[UW][A-Z0-9]+(?: \([^)]*\))?\]:\s*")


def _result_content(lookup: Lookup, tool_use_id: str) -> Any:
    if lookup.name == "web_fetch":
        if lookup.error is not None:
            return {"type": "web_fetch_tool_result_error", "error_code": lookup.error}
        url, title = lookup.results[0] if lookup.results else (str(lookup.input.get("url")), "")
        document = {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": page_text(url, title)},
            "title": title,
            "citations": {"enabled": True},
        }
        return {
            "type": "web_fetch_result",
            "url": url,
            "retrieved_at": RETRIEVED_AT,
            "content": document,
        }
    if lookup.error is not None:
        return {"type": "web_search_tool_result_error", "error_code": lookup.error}
    return [
        {
            "type": "web_search_result",
            "url": url,
            "title": title,
            "encrypted_content": _opaque("content", tool_use_id, url, str(n)),
            "page_age": PAGE_AGE,
        }
        for n, (url, title) in enumerate(lookup.results)
    ]


def _lookup_blocks(lookup: Lookup, new_id: Callable[[str], str]) -> tuple[Planned, Planned]:
    if lookup.server is not None:
        tool_use_id = new_id("mcptoolu")
        use = {
            "type": "mcp_tool_use",
            "id": tool_use_id,
            "name": lookup.name,
            "server_name": lookup.server,
            "input": lookup.input,
        }
        lines = [title for _, title in lookup.results] or [f"{lookup.name}: done"]
        text = lookup.error if lookup.error is not None else "\n".join(lines)
        result: dict[str, Any] = {
            "type": "mcp_tool_result",
            "tool_use_id": tool_use_id,
            "is_error": lookup.error is not None,
            "content": [{"type": "text", "text": text}],
        }
        return Planned(use), Planned(result, lookup.delay)
    if lookup.name not in ("web_search", "web_fetch"):
        raise ValueError(f"Lookup {lookup.name!r}: a server tool is web_search or web_fetch")
    tool_use_id = new_id("srvtoolu")
    use = {"type": "server_tool_use", "id": tool_use_id, "name": lookup.name, "input": lookup.input}
    result = {
        "type": f"{lookup.name}_tool_result",
        "tool_use_id": tool_use_id,
        "content": _result_content(lookup, tool_use_id),
    }
    return Planned(use), Planned(result, lookup.delay)


def _cite_index(cite: object) -> int:
    return cite.result if isinstance(cite, Cite) else int(str(cite))


def plan_answer(
    steps: Iterable[Step], body: dict[str, Any], new_id: Callable[[str], str], emitted: set[str]
) -> Plan:
    """The content blocks `steps` become; every encrypted value they carry joins `emitted`, so
    the simulator can tell the ones it handed out when a request sends them back."""
    sources = _prior_sources(body, emitted)
    fetched = sum(source.encrypted_content is None for source in sources)
    blocks: list[Planned] = []
    requests = {"web_search_requests": 0, "web_fetch_requests": 0}
    pending = 0.0  # the last lookup's `after`: a pause before the next block
    for step in steps:
        if blocks and pending:
            blocks[-1].after, pending = pending, 0.0
        if isinstance(step, Say):
            block: dict[str, Any] = {"type": "text", "text": step.text}
            if step.cites:
                try:
                    chosen = [sources[_cite_index(cite)] for cite in step.cites]
                except IndexError:
                    raise ValueError(
                        f"Say cites {step.cites}: only {len(sources)} results"
                    ) from None
                block["citations"] = [_citation(source, step.text) for source in chosen]
                emitted.update(
                    c["encrypted_index"] for c in block["citations"] if "encrypted_index" in c
                )
            blocks.append(Planned(block))
            continue
        use, result = _lookup_blocks(step, new_id)
        blocks += [use, result]
        pending = step.after
        if step.server is not None:
            continue
        requests[f"{step.name}_requests"] += 1
        content = result.block["content"]
        if isinstance(content, list):
            for item in content:
                emitted.add(item["encrypted_content"])
                sources.append(_Source(item["url"], item["title"], item["encrypted_content"]))
        elif content["type"] == "web_fetch_result":
            title = content["content"]["title"]
            sources.append(_Source(content["url"], title, None, fetched))
            fetched += 1
    if blocks and pending:
        blocks[-1].after = pending
    return Plan(blocks, requests if any(requests.values()) else None)


def steps_text(steps: Iterable[Step]) -> str:
    """What the model wrote for `steps` (its text and tool inputs), for the output estimate."""
    return "".join(step.text if isinstance(step, Say) else json.dumps(step.input) for step in steps)


# The default steps: `[sim:search N]`, `[sim:fetch]`, `[sim:search-error]`, `[sim:pause]`,
# `[sim:mcp]` (see `bot.sim.claude_scripts`).

_HOSTS = (
    ("docs.example.org", "overview"),
    ("wiki.example.net", "reference"),
    ("blog.example.com", "in practice"),
)
_URL = re.compile(r"https?://[^\s<>|\"']+")
DEFAULT_FETCH_URL = "https://docs.example.org/page"
SEARCH_DELAY = 1.5  # a real search takes a second or two: long enough to see its status line


def _search_results(topic: str, n: int) -> list[tuple[str, str]]:
    slug = re.sub(r"[^a-z0-9]+", "-", topic.lower()).strip("-")[:40] or "answer"
    suffix = f"-{n + 1}" if n else ""
    return [(f"https://{host}/{slug}{suffix}", f"{topic}: {label}") for host, label in _HOSTS]


def _first_server(body: dict[str, Any]) -> str | None:
    servers = body.get("mcp_servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        name = servers[0].get("name")
        return name if isinstance(name, str) else None
    return None


def default_steps(
    directives: dict[str, str], prompt: str, asked: str, body: dict[str, Any], *, fast: bool
) -> tuple[list[Step], str] | None:
    """The steps and stop reason the tool directives in `prompt` ask for, or None."""
    failing = "search-error" in directives  # one search fails, the next one works
    searches = int(directives["search"] or 1) if "search" in directives else int(failing)
    fetch = "fetch" in directives
    server = _first_server(body) if "mcp" in directives else None
    if not (searches or failing or fetch or server):
        return None
    delay = 0.0 if fast else SEARCH_DELAY
    # The question without the speaker label the bot puts before each message.
    topic = _SPEAKER.sub("", asked)[:40].rstrip() or "the question"
    lookups: list[Lookup] = []
    if server is not None:
        ticket = "T-1: replies stream slowly in busy channels (open, assigned to the bot team)"
        lookups.append(Lookup("lookup_ticket", {"id": "T-1"}, [("", ticket)], server=server))
    queries = (f"{topic} ({n + 1})" if n else topic for n in range(searches + failing))
    if failing:
        lookups.append(Lookup("web_search", {"query": next(queries)}, error="too_many_requests"))
    for n in range(searches):
        lookups.append(Lookup("web_search", {"query": next(queries)}, _search_results(topic, n)))
    if fetch:
        found = _URL.search(prompt)
        url = found.group(0).rstrip(".,;:!?)") if found else DEFAULT_FETCH_URL
        lookups.append(Lookup("web_fetch", {"url": url}, [(url, f"Page at {url.split('//')[1]}")]))
    for lookup in lookups:
        lookup.delay = delay
    says: list[Say] = []
    if searches:
        says += [
            Say(f"The sources agree on the basics of “{topic}”.", cites=[0, 1]),
            Say(" The reference pages describe it in more detail.", cites=[0, 3 * searches - 1]),
        ]
    if fetch:
        says.append(Say(" The fetched page says the same in its own words.", cites=[3 * searches]))
    if server is not None:
        says.append(Say(" Ticket T-1 tracks this, and it is still open."))
    says.append(
        Say("\n\nThis answer comes from the *simulated* Claude, so it is the same every time.")
    )
    steps: list[Step] = [Say("Let me look that up. "), *lookups, *says]
    return _turn(steps, body, pause="pause" in directives)


def _turn(steps: list[Step], body: dict[str, Any], *, pause: bool) -> tuple[list[Step], str]:
    """This request's part of `steps`: up to the last lookup when it should pause, the rest
    after the lookups a trailing assistant message already holds when it goes on."""
    at = [i for i, step in enumerate(steps) if isinstance(step, Lookup)]
    last = (body.get("messages") or [{}])[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        content = last.get("content")
        done = sum(
            isinstance(block, dict) and block.get("type") in TOOL_USE_TYPES
            for block in (content if isinstance(content, list) else [])
        )
        return (steps[at[min(done, len(at)) - 1] + 1 :] if done else steps), "end_turn"
    if pause:
        return steps[: at[-1] + 1], "pause_turn"
    return steps, "end_turn"
