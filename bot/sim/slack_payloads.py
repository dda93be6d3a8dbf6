"""What the simulated Slack accepts in a message: Block Kit structure, size limits, metadata.

Every check raises `ApiError` with the error name Slack's method metadata gives for it; where
Slack's behaviour is undocumented, the function that makes the choice says what it does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
MAX_BLOCKS = 50
SECTION_TEXT_LIMIT = 3000
HEADER_TEXT_LIMIT = 150


class ApiError(Exception):
    """A Slack error name, answered as HTTP 200 ``{"ok": false, "error": name}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def text_of(obj: Any) -> str:
    """The ``text`` of a Block Kit text object (or "" when there is none)."""
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return str(obj["text"])
    return ""


def block_texts(block: JsonDict) -> list[str]:
    """The reader-visible texts of one block; interactive blocks (actions) show none."""
    kind = block.get("type")
    if kind == "markdown":
        return [text_of(block)]
    if kind in ("section", "header"):
        texts = [text_of(block.get("text"))]
        texts += [text_of(f) for f in block.get("fields") or []]
        return [t for t in texts if t]
    if kind == "context":
        return [t for t in (text_of(e) for e in block.get("elements") or []) if t]
    return []


def check_block(block: Any) -> None:
    """Structural checks Slack answers with ``invalid_blocks``."""
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        raise ApiError("invalid_blocks")
    kind = block["type"]
    if kind == "markdown" and not isinstance(block.get("text"), str):
        raise ApiError("invalid_blocks")
    if kind == "section":
        text = text_of(block.get("text"))
        if not (text or block.get("fields")) or len(text) > SECTION_TEXT_LIMIT:
            raise ApiError("invalid_blocks")
    if kind == "header" and not 0 < len(text_of(block.get("text"))) <= HEADER_TEXT_LIMIT:
        raise ApiError("invalid_blocks")
    if kind in ("actions", "context"):
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            raise ApiError("invalid_blocks")
        if not all(isinstance(e, dict) and e.get("type") for e in elements):
            raise ApiError("invalid_blocks")
    if kind == "context_actions":
        check_context_actions(block)


@dataclass(frozen=True)
class Limits:
    """How much text a message may carry: in ``text``, in ``markdown_text``, in its blocks."""

    text: int = 4000
    markdown: int = 12000
    blocks_text: int = 13000

    def content(self, p: JsonDict) -> tuple[str | None, list[JsonDict] | None, str | None]:
        """Validated (text, blocks, markdown_text); None means the argument was not passed.

        An empty ``text`` or ``blocks`` does not count as content nor as a markdown conflict.
        """
        text = None if p.get("text") is None else str(p["text"])
        blocks = None if p.get("blocks") is None else self.blocks(p["blocks"])
        markdown = p.get("markdown_text") or None
        if markdown is not None and (text or blocks):
            raise ApiError("markdown_text_conflict")
        if not (text or blocks or markdown):
            raise ApiError("no_text")
        if len(text or "") > self.text or len(markdown or "") > self.markdown:
            raise ApiError("msg_too_long")
        return text, blocks, markdown

    def blocks(self, blocks: Any) -> list[JsonDict]:
        if not isinstance(blocks, list):
            raise ApiError("invalid_blocks_format")
        if len(blocks) > MAX_BLOCKS:
            raise ApiError("invalid_blocks")
        for block in blocks:
            check_block(block)
        total = sum(len(t) for b in blocks for t in block_texts(b))
        markdown_total = sum(len(text_of(b)) for b in blocks if b["type"] == "markdown")
        if total > self.blocks_text or markdown_total > self.markdown:
            raise ApiError("msg_blocks_too_long")
        return blocks


def metadata(value: Any) -> JsonDict | None:
    """Message metadata as posted (a JSON string or an object); invalid shapes are refused."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError("invalid_metadata_format") from None
    if not isinstance(value, dict):
        raise ApiError("invalid_metadata_format")
    if value and (not isinstance(value.get("event_type"), str) or "event_payload" not in value):
        raise ApiError("invalid_metadata_schema")
    return value


def decode_blocks(value: Any) -> Any:
    """Form posts carry ``blocks`` as JSON text; decode it (bad JSON stays a string)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def flag(value: Any) -> bool:
    """A boolean argument, as JSON or as form text."""
    return value is True or str(value).lower() in ("1", "true")


# Slack's AI-app controls (Block Kit reference: context actions block, feedback buttons
# element): 1 to 5 elements, each `feedback_buttons` (two buttons, each with plain text of at
# most 75 characters and a value of at most 2,000) or `icon_button`.
CONTEXT_ACTIONS_MAX = 5
FEEDBACK_TEXT_LIMIT = 75
FEEDBACK_VALUE_LIMIT = 2000


def check_context_actions(block: JsonDict) -> None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= CONTEXT_ACTIONS_MAX:
        raise ApiError("invalid_blocks")
    for element in elements:
        if not isinstance(element, dict):
            raise ApiError("invalid_blocks")
        if element.get("type") == "feedback_buttons":
            for side in ("positive_button", "negative_button"):
                button = element.get(side)
                if not isinstance(button, dict):
                    raise ApiError("invalid_blocks")
                text = button.get("text")
                if not isinstance(text, dict) or text.get("type") != "plain_text":
                    raise ApiError("invalid_blocks")
                if not 0 < len(text_of(text)) <= FEEDBACK_TEXT_LIMIT:
                    raise ApiError("invalid_blocks")
                value = button.get("value")
                if not isinstance(value, str) or not 0 < len(value) <= FEEDBACK_VALUE_LIMIT:
                    raise ApiError("invalid_blocks")
        elif element.get("type") != "icon_button":
            raise ApiError("invalid_blocks")
