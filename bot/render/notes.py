"""What follows an answer's body: the usage footer and the notes that say how the answer ended.

The wording is written here and recognised here (``NOTE_LINE``), so that reading an answer back
(``readback``) drops exactly what the bot added to it.
"""

from __future__ import annotations

import re
from typing import Any

from bot.usage import Usage

CUT_SHORT_NOTE = "_(answer cut short: too long for one Slack message)_"
NO_TEXT_NOTE = "_(no answer text)_"


def _format_cost(cost: float) -> str:
    if cost < 0.0001:
        return "<$0.0001"
    return f"~${cost:.4f}" if cost < 1 else f"~${cost:.2f}"


def format_footer(
    usage: Usage,
    *,
    elapsed: float | None = None,
    model: str | None = None,
    cost_usd: float | None = None,
    dropped_turns: int = 0,
    searches: int = 0,
    pages_read: int = 0,
) -> str:
    """``Tokens: 1,234 in, 567 out`` then `` · ``-separated extras (cache, time, model, cost,
    left-out history, web lookups) on the same line."""
    parts = [f"Tokens: {usage.total_input:,} in, {usage.output_tokens:,} out"]
    cache = []
    if usage.cache_read_input_tokens:
        cache.append(f"{usage.cache_read_input_tokens:,} read")
    if usage.cache_creation_input_tokens:
        cache.append(f"{usage.cache_creation_input_tokens:,} written")
    if cache:
        parts.append("cache " + ", ".join(cache))
    if elapsed is not None:
        parts.append(f"{elapsed:.1f} s")
    if model:
        parts.append(model)
    if cost_usd is not None:
        parts.append(_format_cost(cost_usd))
    if dropped_turns > 0:
        plural = "s" if dropped_turns != 1 else ""
        parts.append(f"{dropped_turns:,} earlier message{plural} left out")
    if searches > 0:
        parts.append(f"{searches:,} search{'es' if searches != 1 else ''}")
    if pages_read > 0:
        parts.append(f"{pages_read:,} page{'s' if pages_read != 1 else ''} read")
    return " · ".join(parts)


SOURCES_HEADING = "**Sources**"
_SOURCES_LIMIT = 900  # the list is one note: within a note's room, whole entries only
_TITLE_LIMIT = 80
_SAFE_URL = re.compile(r"https?://[^\s<>|\[\]`\\]+")


def sources_note(sources: list[tuple[str, str]]) -> str | None:
    """The numbered list of the pages an answer cites, as Markdown links with their titles;
    None when it cites none. Titles and URLs are the web's: a URL that is not plain http(s)
    is shown as text, and a title loses what could make it Markdown."""
    lines = [SOURCES_HEADING]
    size = len(SOURCES_HEADING)
    for number, (url, title) in enumerate(sources, start=1):
        label = one_line(re.sub(r"[\[\]<>|*_`~\\]", " ", title))[:_TITLE_LIMIT].strip() or "link"
        safe = _SAFE_URL.fullmatch(url) is not None
        url = url.replace("(", "%28").replace(")", "%29")
        line = f"{number}. [{label}]({url})" if safe else f"{number}. {label}"
        if size + len(line) + 1 > _SOURCES_LIMIT:
            lines.append(f"…and {len(sources) - number + 1} more")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) if len(lines) > 1 else None


def one_line(text: str) -> str:
    return " ".join(text.split())


def interrupted_note(reason: str | None) -> str:
    """``[interrupted]`` or ``[interrupted: reason]``: the last line of an interrupted message."""
    reason = one_line(reason or "")
    return f"[interrupted: {reason}]" if reason else "[interrupted]"


def is_interrupted_note(note: str) -> bool:
    return note.startswith("[interrupted")


_STOP_NOTES = {
    "max_tokens": "_(truncated: reached the output limit)_",
    "model_context_window_exceeded": "_(truncated: the conversation is too long)_",
    "tool_use": "_(stopped: Claude asked to use a tool, which this bot does not run)_",
    "pause_turn": "_(paused by Claude before finishing: its lookups took too many rounds)_",
}


def stop_reason_note(stop_reason: str | None, stop_details: dict[str, Any] | None) -> str | None:
    """What a user should read after an answer that stopped for ``stop_reason``; None when it
    finished normally (and for None, which the caller treats as an interruption)."""
    if stop_reason is None or stop_reason in ("end_turn", "stop_sequence"):
        return None
    if stop_reason == "refusal":
        explanation = (stop_details or {}).get("explanation")
        note = "_Claude declined to answer._"
        return f"{note} {one_line(explanation)}" if isinstance(explanation, str) else note
    return _STOP_NOTES.get(stop_reason, f"_(stopped: {one_line(stop_reason)})_")


# A line the bot may have ended an answer with: a note above, the footer or the interrupted note.
# The bot writes `[interrupted: reason]`, but reading a thread back it recognises every form the
# operating contract allows: `[interrupted]` and `_[interrupted]_`, each alone or followed by a
# reason (`_[interrupted]_ (reason)`; also how Slack's rich text reads an italic note back).
NOTE_LINE = re.compile(
    r"\[interrupted: .*\]"
    r"|(?:\[interrupted\]|_\[interrupted\]_)(?: .*)?"
    r"|Tokens: [\d,]+ in, [\d,]+ out.*"
    r"|_\((?:truncated: |stopped: |paused by Claude|answer cut short|no answer text).*\)_"
    r"|_Claude declined to answer\._.*"
)
