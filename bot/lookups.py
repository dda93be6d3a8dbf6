"""What Claude's tools did in an answer, folded from its stream: the progress line a reader
sees while a tool runs, the sources its text cites, and the content to send back when Claude
pauses a long tool turn (`pause_turn`).

`claude.fold_event` hands every event that is not a text delta to a `Trail`; text deltas
never come here (they stay O(1) in `StreamState`). Everything Claude's tools return is
untrusted: only a URL, a title and a query ever reach the reader, escaped by `render`;
`encrypted_content` and `encrypted_index` are only ever sent back to Claude, never shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TOOL_USES = ("server_tool_use", "mcp_tool_use")
TOOL_RESULTS = ("web_search_tool_result", "web_fetch_tool_result", "mcp_tool_result")
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_DETAIL_LIMIT = 80
# Why a lookup failed, in a reader's words (the tools' `error_code`s).
_FAILURES = {
    "too_many_requests": "too many requests",
    "max_uses_exceeded": "lookup limit reached",
    "query_too_long": "query too long",
    "request_too_large": "request too large",
    "unavailable": "service unavailable",
    "invalid_tool_input": "invalid input",
    "url_too_long": "address too long",
    "url_not_allowed": "site not allowed",
    "url_not_in_prior_context": "address not from the conversation",
    "url_not_accessible": "page not reachable",
    "unsupported_content_type": "unsupported content",
    "content_too_large": "page too large",
}


def _dump(model: Any) -> dict[str, Any]:
    """A content block or citation as the API takes it back (SDK model or plain dict)."""
    if isinstance(model, dict):
        return {k: v for k, v in model.items() if v is not None}
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return dumped


def _short(text: str) -> str:
    shown = " ".join(str(text).split())
    return shown if len(shown) <= _DETAIL_LIMIT else shown[: _DETAIL_LIMIT - 1] + "…"


def marker(numbers: list[int]) -> str:
    """The superscript numbers a cited passage ends with (never Markdown: `[1](…)` would
    make a link of whatever follows)."""
    return ",".join(str(n).translate(_SUPERSCRIPTS) for n in numbers)


@dataclass
class Block:
    """One block of the assistant's content, kept to send it back after `pause_turn`."""

    data: dict[str, Any]
    parts: list[str] = field(default_factory=list)  # tool input JSON, or thinking text
    start: int = 0  # text blocks: where the block's text begins in the answer's text
    end: int | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""  # tool uses: the query, URL or tool shown while it runs


@dataclass
class Sources:
    """The distinct pages cited, numbered in the order the answer first cites them."""

    numbers: dict[str, int] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)

    def number(self, url: str, title: str) -> int:
        if url not in self.numbers:
            self.numbers[url] = len(self.numbers) + 1
            self.titles[url] = title or url
        return self.numbers[url]

    def listed(self) -> list[tuple[str, str]]:
        """(url, title) in number order."""
        return [(url, self.titles[url]) for url in self.numbers]


@dataclass
class Trail:
    """See the module docstring. `activity` is the progress line (None: nothing running);
    `activity_seq` changes whenever it does, so the publisher knows an edit is due."""

    blocks: list[Block] = field(default_factory=list)
    searches: int = 0
    fetches: int = 0
    mcp_calls: int = 0
    failures: int = 0
    activity: str | None = None
    activity_seq: int = 0
    sources: Sources = field(default_factory=Sources)
    fetched: list[tuple[str, str]] = field(default_factory=list)  # (url, title) of read pages
    _open: dict[int, Block] = field(default_factory=dict)
    _uses: dict[str, Block] = field(default_factory=dict)  # tool use id -> its block

    def new_request(self) -> None:
        """A request begins (the first, or one continuing after `pause_turn`): its stream
        numbers its blocks from 0 again."""
        self._open.clear()

    def _show(self, activity: str | None) -> None:
        if activity != self.activity:
            self.activity = activity
            self.activity_seq += 1

    def text_resumed(self) -> None:
        """Claude writes again: the progress line goes."""
        self._show(None)

    # -- events ----------------------------------------------------------------------------------

    def start(self, index: int, content_block: Any, text_at: int) -> None:
        data = _dump(content_block)
        block = Block(data, start=text_at)
        self._open[index] = block
        self.blocks.append(block)
        kind = data.get("type")
        if kind in TOOL_RESULTS:
            self._result(block)

    def delta(self, index: int, delta: Any) -> None:
        block = self._open.get(index)
        if block is None:
            return
        kind = getattr(delta, "type", None)
        if kind == "input_json_delta":
            block.parts.append(getattr(delta, "partial_json", "") or "")
        elif kind == "citations_delta":
            block.citations.append(_dump(delta.citation))
        elif kind == "thinking_delta":
            block.parts.append(getattr(delta, "thinking", "") or "")
        elif kind == "signature_delta":
            block.data["signature"] = getattr(delta, "signature", "") or ""

    def stop(self, index: int, text_at: int) -> list[int]:
        """A block ends; for a text block with citations, the numbers of its sources."""
        block = self._open.pop(index, None)
        if block is None:
            return []
        kind = block.data.get("type")
        if kind == "text":
            block.end = text_at
            return self._cited(block)
        if kind in TOOL_USES:
            self._use(block)
        elif kind == "thinking":
            block.data["thinking"] = "".join(block.parts)
        return []

    # -- tools -----------------------------------------------------------------------------------

    def _use(self, block: Block) -> None:
        """A tool's input is complete: say what it is doing."""
        raw = "".join(block.parts)
        try:
            given = json.loads(raw) if raw.strip() else block.data.get("input") or {}
        except ValueError:
            given = {}
        block.data["input"] = given if isinstance(given, dict) else {}
        self._uses[str(block.data.get("id", ""))] = block
        name = str(block.data.get("name", ""))
        data = block.data["input"]
        if block.data.get("type") == "mcp_tool_use":
            self.mcp_calls += 1
            server = str(block.data.get("server_name", "")) or "a tool server"
            block.detail = f"{_short(server)}: {_short(name)}"
            self._show(f"Using {block.detail}…")
        elif name == "web_search":
            self.searches += 1
            block.detail = _short(str(data.get("query", "")))
            count = f" ({self.searches} searches)" if self.searches > 1 else ""
            self._show(f"Searching the web{count}: {block.detail}…")
        elif name == "web_fetch":
            self.fetches += 1
            block.detail = _short(str(data.get("url", "")))
            count = f" ({self.fetches} pages)" if self.fetches > 1 else ""
            self._show(f"Reading{count} {block.detail}…")
        else:
            block.detail = _short(name)
            self._show(f"Using {block.detail}…")

    def _result(self, block: Block) -> None:
        """A tool's result: remember read pages; a failure shows on the progress line (Claude
        goes on: a failed lookup never ends the answer)."""
        data = block.data
        use = self._uses.get(str(data.get("tool_use_id", "")))
        detail = use.detail if use is not None else ""
        content = data.get("content")
        if data.get("type") == "mcp_tool_result":
            if data.get("is_error"):
                self.failures += 1
                self._show(f"{detail or 'A tool'} failed; Claude goes on without it")
            return
        if isinstance(content, dict) and "error_code" in content:
            self.failures += 1
            code = str(content.get("error_code", ""))
            why = _FAILURES.get(code, code.replace("_", " ") or "error")
            if data.get("type") == "web_search_tool_result":
                self._show(f"Search failed ({why}): {detail}")
            else:
                self._show(f"Could not read {detail} ({why})")
            return
        if data.get("type") == "web_fetch_tool_result" and isinstance(content, dict):
            url = str(content.get("url", ""))
            document = content.get("content") or {}
            title = document.get("title") if isinstance(document, dict) else None
            self.fetched.append((url, str(title or url)))

    def _cited(self, block: Block) -> list[int]:
        numbers: list[int] = []
        for citation in block.citations:
            found = self._page(citation)
            if found is None:
                continue
            number = self.sources.number(*found)
            if number not in numbers:
                numbers.append(number)
        return numbers

    def _page(self, citation: dict[str, Any]) -> tuple[str, str] | None:
        """The (url, title) a citation points at: a search result names its page; a passage
        of a read page names the document, looked up among the pages read."""
        url = citation.get("url")
        if isinstance(url, str) and url:
            return url, str(citation.get("title") or url)
        index = citation.get("document_index")
        title = citation.get("document_title")
        by_title = [page for page in self.fetched if title and page[1] == title]
        if by_title:
            return by_title[-1]
        if isinstance(index, int) and 0 <= index < len(self.fetched):
            return self.fetched[index]
        return self.fetched[-1] if self.fetched else None

    # -- continuing ------------------------------------------------------------------------------

    def content(self, text: str) -> list[dict[str, Any]]:
        """The assistant's content so far, as the next request sends it back after
        `pause_turn`; `text` is the answer's text, which holds the text blocks' words."""
        content: list[dict[str, Any]] = []
        for block in self.blocks:
            data = dict(block.data)
            if data.get("type") == "text":
                end = block.end if block.end is not None else len(text)
                data["text"] = text[block.start : end]
                if block.citations:
                    data["citations"] = block.citations
                else:
                    data.pop("citations", None)
                if not data["text"].strip():
                    continue
            content.append(data)
        if content and content[-1].get("type") == "text":
            content[-1]["text"] = content[-1]["text"].rstrip()  # the API refuses trailing space
        return content
