"""Reading one of the bot's answers back from Slack, for the next conversation with Claude.

Slack returns a message's blocks as posted, or a markdown block stored as ``rich_text``, or only
the ``text`` fallback; each is read back to the answer's Markdown without what the bot added
(footer, notes, the interrupted note in any wording) and without a live broadcast token, since
what Claude reads here it may write again.
"""

from __future__ import annotations

import re
from typing import Any

from bot.render.fences import is_blank
from bot.render.notes import NOTE_LINE
from bot.render.payloads import NOTICE_BLOCK_ID


def _unescape(text: str) -> str:
    return re.sub(r"&(amp|lt|gt);", lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m[1]], text)


def _strip_notes(text: str) -> str:
    lines = text.rstrip().split("\n")
    while lines and (is_blank(lines[-1]) or NOTE_LINE.fullmatch(lines[-1].strip())):
        lines.pop()
    return "\n".join(lines).strip()


def _styled(text: str, style: dict[str, Any]) -> str:
    core = text.strip()
    if not core:
        return text
    if style.get("code"):
        core = f"`{core}`"
    else:
        for key, mark in (("bold", "**"), ("italic", "_"), ("strike", "~~")):
            if style.get(key):
                core = f"{mark}{core}{mark}"
    return text[: len(text) - len(text.lstrip())] + core + text[len(text.rstrip()) :]


def _rich_inline(elements: list[dict[str, Any]], *, code: bool = False) -> str:
    out: list[str] = []
    for element in elements:
        kind = element.get("type")
        if kind == "text":
            text = str(element.get("text", ""))
            out.append(text if code else _styled(text, element.get("style") or {}))
        elif kind == "link":
            url, label = str(element.get("url", "")), element.get("text")
            out.append(f"[{label}]({url})" if label and not code else url)
        elif kind == "user":
            out.append(f"<@{element.get('user_id', '')}>")
        elif kind == "channel":
            out.append(f"<#{element.get('channel_id', '')}>")
        elif kind == "usergroup":  # read as plain text: Claude's echo must not broadcast
            out.append(f"@{element.get('usergroup_id', '')}")
        elif kind == "broadcast":
            out.append(f"@{element.get('range', '')}")
        elif kind == "emoji":
            out.append(f":{element.get('name', '')}:")
        elif isinstance(element.get("text"), str):
            out.append(element["text"])
    return "".join(out)


def _rich_text(block: dict[str, Any]) -> str:
    """A rich_text block (what Slack may store a markdown block as) read back as Markdown."""
    parts: list[str] = []
    for element in block.get("elements") or []:
        kind, inner = element.get("type"), element.get("elements") or []
        if kind == "rich_text_section":
            parts.append(_rich_inline(inner))
        elif kind == "rich_text_preformatted":
            parts.append("```\n" + _rich_inline(inner, code=True).strip("\n") + "\n```")
        elif kind == "rich_text_quote":
            quoted = _rich_inline(inner).rstrip("\n").split("\n")
            parts.append("\n".join("> " + line for line in quoted))
        elif kind == "rich_text_list":
            indent = "  " * int(element.get("indent") or 0)
            first = int(element.get("offset") or 0) + 1
            for number, item in enumerate(inner, start=first):
                marker = f"{number}." if element.get("style") == "ordered" else "-"
                item_text = _rich_inline(item.get("elements") or []).strip()
                parts.append(f"{indent}{marker} {item_text}")
    return "\n".join(part.rstrip("\n") for part in parts)


_BROADCAST_TOKEN = re.compile(
    r"<!(?:(here|channel|everyone)|subteam\^([A-Z0-9]*))(?:\|@?([^<>\n]*))?>", re.IGNORECASE
)


def _no_broadcasts(text: str) -> str:
    """Broadcast tokens read back as the plain text the renderer shows for them."""
    if "<!" not in text:
        return text
    return _BROADCAST_TOKEN.sub(lambda m: "@" + (m[1] or (m[3] or "").strip() or m[2]), text)


def visible_answer(message: dict[str, Any]) -> str:
    """The answer body of one of our messages (from conversations.replies), for the history:
    markdown blocks (else rich_text blocks, else ``text``) without footer, notes and the
    interrupted note in any wording (``NOTE_LINE``), with Slack's escapes undone, and never a
    live broadcast token (what Claude reads here it may write again)."""
    blocks = [block for block in message.get("blocks") or [] if isinstance(block, dict)]
    if any(block.get("block_id") == NOTICE_BLOCK_ID for block in blocks):
        return ""
    markdown = [
        block["text"]
        for block in blocks
        if block.get("type") == "markdown" and isinstance(block.get("text"), str)
    ]
    if markdown:
        return _no_broadcasts(_strip_notes(_unescape("\n\n".join(markdown))))
    rich = [_rich_text(block) for block in blocks if block.get("type") == "rich_text"]
    if rich:
        return _no_broadcasts(_strip_notes("\n\n".join(rich)))
    return _no_broadcasts(_strip_notes(_unescape(str(message.get("text") or ""))))
