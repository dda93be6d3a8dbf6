"""Scripts of the simulated Claude: what one answer says, at what pace, with which fault; and
the default script, which answers from the question.

The built-in default answers from the last user message and honours these directives anywhere in
it (they combine):

=====================  =============================================================
``[sim:long N]``       about N characters of Markdown (headings, lists, a code block);
                       N defaults to 5000
``[sim:slow]``         0.05 s between text deltas
``[sim:fast]``         no delay between text deltas (the demo streams at a reading pace)
``[sim:think]``        a thinking block streams before the text
``[sim:refuse]``       stop_reason ``refusal`` with ``stop_details``
``[sim:error]``        an in-stream ``overloaded_error`` event after 3 text deltas
``[sim:drop]``         the connection is cut after 3 text deltas
``[sim:stall]``        the stream goes silent (no pings) after 3 text deltas
``[sim:overloaded]``   HTTP 529 ``overloaded_error`` on every attempt
``[sim:overloaded N]`` HTTP 529 on the first N attempts only (the SDK retries, then it answers)
``[sim:search N]``     N web searches (default 1), 3 results each, 1.5 s before each
                       result (none with ``[sim:fast]``), then text citing them
``[sim:fetch]``        a web fetch of the question's first URL (or a docs.example.org
                       page), then text citing it
``[sim:search-error]`` the first search fails (``too_many_requests``), the next works
``[sim:pause]``        with the above: stop with ``pause_turn`` after the tool calls; a
                       request ending with that assistant content gets the rest
``[sim:mcp]``          a ``lookup_ticket`` call to the request's first MCP server
                       (plain text without ``mcp_servers``)
=====================  =============================================================

A script with `steps` (`Say` text blocks, `Lookup` server tool calls; see
`bot.sim.claude_tools`) plays them instead of its `text`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.sim.claude_tools import Cite, Lookup, Say, default_steps

__all__ = ["Cite", "Lookup", "Say", "Script", "ScriptSource", "default_script", "long_markdown"]


@dataclass
class Script:
    """One scripted answer: its content, its pace and the fault it should show, if any."""

    text: str = "Hello from the simulated Claude."
    chunk_chars: int = 12
    chunk_delay: float = 0.0
    first_delay: float = 0.0
    thinking: str | None = None
    thinking_delay: float = 0.0
    stop_reason: str | None = "end_turn"
    stop_details: dict[str, Any] | None = None
    input_tokens: int | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int | None = None
    model: str | None = None
    ping_every: float | None = None
    # faults
    http_error: tuple[int, str] | None = None  # (status, error type), before any byte of stream
    http_error_times: int = 1_000_000  # failing requests in a row (retries too) before it answers
    error_event_after: int | None = None
    drop_after: int | None = None
    silence_after: int | None = None
    silence_seconds: float = 3600.0
    end_without_message_delta: bool = False
    fixture: str | None = None
    steps: list[Say | Lookup] | None = None  # set: these blocks instead of `text` (thinking first)


ScriptSource = Script | Callable[[dict[str, Any]], Script]


_DIRECTIVE = re.compile(r"\[sim:([\w-]+)(?:\s+(\d+))?\]")
_FAULT_AFTER = 3
_SLOW_DELAY = 0.05
_LONG_DEFAULT = 5000
_LONG_MAX = 200_000


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(block.get("text", ""))
                for block in content
                if isinstance(block, dict) and block.get("type") == "text"
            )
        return ""
    return ""


_TOPICS = ("Pacing", "Rendering", "Leases", "Recovery", "Budgets", "Splitting")
_SENTENCES = (
    "Streaming an answer into Slack means editing one message many times while tokens arrive.",
    "Each edit carries the newest text, so a slow edit never leaves the reader behind.",
    "The workspace shares one budget of edits per minute among every answer in flight.",
    "Partial Markdown is closed safely before it is shown, so a half-written list stays a list.",
    "When a replica dies, another one notices the lapsed lease and finishes the answer.",
    "Long answers continue in further messages of the same thread, and nothing is lost.",
    "Usage arrives in two places: input counts at the start and the output count at the end.",
)


def _long_part(i: int) -> str:
    kind, n = i % 4, i // 4
    topic = _TOPICS[n % len(_TOPICS)]
    if kind == 0:
        return f"## {n + 1}. {topic}"
    if kind == 1:
        return " ".join(_SENTENCES[(n + k) % len(_SENTENCES)] for k in range(3))
    if kind == 2:
        return "\n".join(
            f"- **{topic} {k + 1}:** {_SENTENCES[(n + k + 3) % len(_SENTENCES)]}" for k in range(3)
        )
    return (
        "```python\n"
        f"def {topic.lower()}_step(n: int) -> int:\n"
        f'    """Step {n + 1} of the {topic.lower()} example."""\n'
        f"    return n * {n + 2}\n"
        "```"
    )


def long_markdown(chars: int) -> str:
    """Deterministic Markdown prose of about `chars` characters, made of whole parts.

    Parts (heading, paragraph, list, fenced code block) are never cut, so the result is always
    well-formed Markdown; it is at most `chars` long unless the first part alone is longer.
    """
    parts: list[str] = []
    total = 0
    i = 0
    while True:
        part = _long_part(i)
        added = len(part) + (2 if parts else 0)
        if parts and total + added > chars:
            return "\n\n".join(parts)
        parts.append(part)
        total += added
        i += 1


def default_script(body: dict[str, Any], *, chunk_delay: float = 0.0) -> Script:
    """Answer deterministically from the last user message, honouring `[sim:...]` directives;
    `chunk_delay` paces the text deltas unless the message asks for `[sim:fast]`."""
    prompt = _last_user_text(body)
    directives = {name: number for name, number in _DIRECTIVE.findall(prompt)}
    asked = " ".join(_DIRECTIVE.sub(" ", prompt).split())
    if len(asked) > 200:
        asked = asked[:199] + "…"
    script = Script(
        text=(
            f"You asked: “{asked or '(nothing)'}”\n\n"
            "This answer comes from the *simulated* Claude, so it is the same every time. "
            "It streams in small pieces, the way the real API does."
        )
    )
    if "long" in directives:
        size = int(directives["long"] or _LONG_DEFAULT)
        script.text = long_markdown(min(size, _LONG_MAX))
    script.chunk_delay = 0.0 if "fast" in directives else chunk_delay
    if "slow" in directives:
        script.chunk_delay = max(script.chunk_delay, _SLOW_DELAY)
    if "think" in directives:
        script.thinking = (
            f"The user asked about {asked or 'nothing in particular'}. Answer briefly."
        )
    tools = default_steps(directives, prompt, asked, body, fast="fast" in directives)
    if tools is not None:
        script.steps, script.stop_reason = tools
    if "refuse" in directives:
        script.steps = None
        script.text = ""
        script.stop_reason = "refusal"
        script.stop_details = {"type": "refusal", "category": None, "explanation": None}
    if "error" in directives:
        script.error_event_after = _FAULT_AFTER
    if "drop" in directives:
        script.drop_after = _FAULT_AFTER
    if "stall" in directives:
        script.silence_after = _FAULT_AFTER
    if "overloaded" in directives:
        script.http_error = (529, "overloaded_error")
        if directives["overloaded"]:  # only the first N attempts: the SDK's retry gets through
            script.http_error_times = int(directives["overloaded"])
    return script
