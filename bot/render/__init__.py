"""Claude's Markdown → Slack message payloads, and back.

Pure: no I/O, no clock, no network client; the caller decides when to send what. Callers import
from here; the modules, each leaning only on those above it:

- ``fences``: lines, code fences and code spans (code is shown as written);
- ``tables``: Markdown tables drawn as aligned monospace blocks;
- ``tokens``: Slack tokens, mentions and links, and Slack's ``&<>`` escapes;
- ``markdown``: a whole answer → Slack markdown-block text (``to_slack_markdown``);
- ``partial``: a streaming prefix shown as if complete (``render_partial``);
- ``split``: where a long answer is cut into messages (``next_cut``, ``part_text``, …);
- ``notes``: the usage footer and the notes that close an answer;
- ``payloads``: the Slack payloads of each moment of an answer, and plain-text fallbacks;
- ``readback``: an answer read back from Slack for the next conversation.

``Usage`` and ``estimate_cost`` live in ``bot.usage``; they are re-exported here for callers that
still find them under ``render``.
"""

from __future__ import annotations

from bot.render.markdown import to_slack_markdown
from bot.render.notes import format_footer, interrupted_note, sources_note, stop_reason_note
from bot.render.partial import render_partial
from bot.render.payloads import (
    CONTINUED_HINT,
    FEEDBACK_ACTION_ID,
    MARKDOWN_LIMIT,
    NOTICE_BLOCK_ID,
    PLAIN_TEXT_LIMIT,
    STOP_ACTION_ID,
    TEXT_FALLBACK_LIMIT,
    FeedbackButtons,
    SlackPayload,
    continued_payload,
    error_payload,
    feedback_block,
    final_payload,
    placeholder_payload,
    plain_pieces,
    stop_button_answer_id,
    streaming_payload,
    thinking_payload,
)
from bot.render.readback import visible_answer
from bot.render.split import BODY_LIMIT, join_parts, next_cut, part_text, split_answer
from bot.render.tables import display_width as _width  # tests measure drawn rows with it
from bot.render.tokens import NO_MENTIONS, Mentions
from bot.usage import Usage, estimate_cost

__all__ = [
    "BODY_LIMIT",
    "CONTINUED_HINT",
    "FEEDBACK_ACTION_ID",
    "MARKDOWN_LIMIT",
    "NOTICE_BLOCK_ID",
    "NO_MENTIONS",
    "PLAIN_TEXT_LIMIT",
    "STOP_ACTION_ID",
    "TEXT_FALLBACK_LIMIT",
    "FeedbackButtons",
    "Mentions",
    "SlackPayload",
    "Usage",
    "_width",
    "continued_payload",
    "error_payload",
    "estimate_cost",
    "feedback_block",
    "final_payload",
    "format_footer",
    "interrupted_note",
    "join_parts",
    "next_cut",
    "part_text",
    "placeholder_payload",
    "plain_pieces",
    "render_partial",
    "sources_note",
    "split_answer",
    "stop_button_answer_id",
    "stop_reason_note",
    "streaming_payload",
    "thinking_payload",
    "to_slack_markdown",
    "visible_answer",
]
