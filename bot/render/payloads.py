"""The Slack payloads of each moment of an answer: placeholder, thinking, streaming edits, a
finished part of a long answer, the finished message, an error notice, and plain-text pieces
for when Slack refuses the rich payload.

Limits
    12,000 characters of markdown-block text per payload (``MARKDOWN_LIMIT``), about 13,000
    characters of block text per message, 50 blocks, and we keep the ``text`` fallback
    (notifications, screen readers) under 4,000. A message body holds at most ``BODY_LIMIT``
    rendered characters, which leaves room for the closers of a partial render and for the notes.

Finished message, block by block
    1. ``markdown``: the body, then each note (e.g. a stop-reason note) as its own paragraph;
    2. ``context``: the mrkdwn footer (``Tokens: 1,234 in, 567 out · …``);
    3. ``markdown``: ``[interrupted: reason]`` when the answer was cut short: the last line;
    4. ``context_actions``: Slack's feedback buttons (👍 / 👎), when the answer asks for them:
       below everything the reader reads, never on a message with the Stop button, and
       never read back as part of the answer (``readback`` reads markdown blocks only).
    Every payload carries a markdown block, so an edit never replaces rich text with non-rich-text
    blocks only (Slack's ``block_mismatch``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from slack_sdk.models.blocks import (
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
)

from bot.render.fences import fence_at, may_fence
from bot.render.markdown import to_slack_markdown
from bot.render.notes import (
    CUT_SHORT_NOTE,
    NO_TEXT_NOTE,
    is_interrupted_note,
    one_line,
)
from bot.render.partial import render_partial
from bot.render.split import grapheme_break, next_cut, part_text
from bot.render.tokens import MD_LINK, NO_MENTIONS, Mentions, escape_mrkdwn, misleading

MARKDOWN_LIMIT = 12_000  # Slack's cap for markdown blocks in one payload
TEXT_FALLBACK_LIMIT = 3_000  # our cap for `text`; Slack rejects more than 4,000
STOP_ACTION_ID = "stop_answer"
NOTICE_BLOCK_ID = "slackstream-notice"  # marks a message that is a notice, not an answer
CONTINUED_HINT = ":arrow_down: continued below"  # ends a continued part, rich or plain text

_NOTE_LIMIT = 1_000  # per note, and for the footer


@dataclass(frozen=True)
class SlackPayload:
    """What one chat.postMessage or chat.update sends: the blocks, and the ``text`` fallback that
    notifications and screen readers use."""

    text: str
    blocks: list[dict[str, Any]]

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for chat.postMessage / chat.update."""
        return {"text": self.text, "blocks": [dict(block) for block in self.blocks]}


def _markdown_block(text: str) -> dict[str, Any]:
    return {"type": "markdown", "text": text}


def _context_block(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn}]}


def _stop_block(answer_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": STOP_ACTION_ID,
                "text": {"type": "plain_text", "text": "Stop"},
                "style": "danger",
                "value": answer_id,
            }
        ],
    }


def stop_button_answer_id(message: dict[str, Any]) -> str | None:
    """The answer id carried by a message's Stop button, or None: it names the answer a
    message belongs to (Slack returns blocks with each message)."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block.get("type") == "actions" else []:
            if element.get("action_id") == STOP_ACTION_ID:
                value = element.get("value")
                return str(value) if value else None
    return None


def _truncate(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, cut on a word boundary and ended with "…", never
    inside an entity or a Slack token."""
    if len(text) <= limit:
        return text
    if limit < 2:
        return ""
    room = limit - 1
    cut = max(text.rfind(" ", 0, room + 1), text.rfind("\n", 0, room + 1))
    if cut < room // 2:
        cut = _cluster_boundary(text, room)
    return text[: _outside_escapes(text, cut, floor=0)].rstrip() + "…"


def _cluster_boundary(text: str, cut: int) -> int:
    """``cut``, or the start of the grapheme cluster it would split (a cut with no word break)."""
    while 0 < cut < len(text) and not grapheme_break(text, cut):
        cut -= 1
    return cut


def _outside_escapes(text: str, cut: int, *, floor: int) -> int:
    """``cut``, or the start of an entity (``&lt;``) or Slack token (``<…>``) it would split when
    that starts at ``floor`` or later: plain text is cut between them, never inside."""
    for opening, closing in (("&", ";"), ("<", ">")):
        at = text.rfind(opening, 0, cut)
        if at >= floor and closing not in text[at:cut]:
            cut = at
    return cut


_FENCE_LINE = re.compile(r"^[ \t]*(?:`{3,}|~{3,}).*\n?", re.MULTILINE)
_EMPHASIS = re.compile(r"\*\*|__|~~")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def _plain(md: str) -> str:
    """Markdown read as plain text, for the ``text`` fallback (notifications, screen readers).
    Each rewrite runs only when its marker occurs: this runs on every streaming edit."""
    text = _FENCE_LINE.sub("", md) if may_fence(md) else md
    if "](" in text:
        text = MD_LINK.sub(lambda m: m[2] if not m[1] or misleading(m[1], m[2]) else m[1], text)
    if "**" in text or "__" in text or "~~" in text:
        text = _EMPHASIS.sub("", text)
    if "#" in text:
        text = _HEADING.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _fallback_text(
    md: str, limit: int = TEXT_FALLBACK_LIMIT, mentions: Mentions = NO_MENTIONS
) -> str:
    return _truncate(escape_mrkdwn(_plain(md), mentions), limit)


def _within(render: Callable[[str], str], body_md: str, room: int) -> str:
    """``render(body_md)`` within ``room`` characters; should it not fit (callers split long
    answers first), the body is cut at a clean point and a note says so."""
    out = render(body_md)
    budget = room - len(CUT_SHORT_NOTE) - 2
    while len(out) > room and budget > 0:
        cut = next_cut(body_md, budget) or len(body_md)
        out = render(part_text(body_md, 0, cut)).rstrip() + "\n\n" + CUT_SHORT_NOTE
        budget -= max(len(out) - room, 0) + 64
    return out if len(out) <= room else CUT_SHORT_NOTE


def _status_payload(label: str, answer_id: str | None) -> SlackPayload:
    shown = label.strip() or "…"
    blocks = [_markdown_block(_within(to_slack_markdown, shown, 2_000))]
    if answer_id:
        blocks.append(_stop_block(answer_id))
    return SlackPayload(text=_fallback_text(shown), blocks=blocks)


def placeholder_payload(text: str, *, answer_id: str | None) -> SlackPayload:
    """The placeholder posted as soon as the question arrives; Stop when it has an answer id."""
    return _status_payload(text, answer_id)


def thinking_payload(*, answer_id: str | None, label: str = "Thinking…") -> SlackPayload:
    """Shown while Claude thinks before writing; the thinking itself is never shown."""
    return _status_payload(label, answer_id)


def streaming_payload(
    body_md_prefix: str,
    *,
    answer_id: str | None,
    mentions: Mentions = NO_MENTIONS,
    status: str | None = None,
) -> SlackPayload:
    """An intermediate edit: the answer so far, rendered safely, the status line of a tool
    that runs (``Searching the web: …``) under it, and the Stop button."""
    shown = _within(partial(render_partial, mentions=mentions), body_md_prefix, MARKDOWN_LIMIT)
    blocks = [_markdown_block(shown if shown.strip() else "…")]
    if status:
        blocks.append(_context_block(escape_mrkdwn(_truncate(one_line(status), 200), mentions)))
    if answer_id:
        blocks.append(_stop_block(answer_id))
    text = _fallback_text(body_md_prefix, mentions=mentions) or (status or "")
    return SlackPayload(text=text or "…", blocks=blocks)


def final_payload(
    body_md: str,
    *,
    footer: str | None,
    notes: Sequence[str] = (),
    answer_id: str | None = None,
    mentions: Mentions = NO_MENTIONS,
    feedback: FeedbackButtons | None = None,
) -> SlackPayload:
    """The finished message: body and notes, footer, then ``[interrupted…]`` if among the notes.

    No Stop button (``answer_id`` is accepted for symmetry with the other payloads). An empty body
    is fine: then only the notes and the footer show. ``mentions`` applies to the notes too (a
    refusal's explanation is Claude's text; ``stopped by <@U…>`` shows the name it gives).
    """
    del answer_id
    show = partial(to_slack_markdown, mentions=mentions)
    ends = [_truncate(one_line(note), 500) for note in notes if is_interrupted_note(note)]
    plain_notes = [_truncate(note, _NOTE_LIMIT) for note in notes if not is_interrupted_note(note)]
    notes_md = _truncate("\n\n".join(map(show, plain_notes)), 2 * _NOTE_LIMIT)
    ends_md = [show(end) for end in ends]
    room = MARKDOWN_LIMIT - len(notes_md) - sum(map(len, ends_md)) - 2
    body = _within(show, body_md.rstrip(), room) if body_md.strip() else ""
    main = "\n\n".join(part for part in (body, notes_md) if part)
    if not main and not ends:
        main = NO_TEXT_NOTE
    blocks: list[dict[str, Any]] = []
    if main:
        blocks.append(_markdown_block(main))
    if footer:
        blocks.append(_context_block(escape_mrkdwn(_truncate(footer, _NOTE_LIMIT), mentions)))
    blocks.extend(_markdown_block(end) for end in ends_md)
    if feedback is not None:
        blocks.append(feedback_block(feedback))

    tail = "\n".join([*([_truncate(footer, _NOTE_LIMIT)] if footer else []), *ends])
    extras = "\n\n".join(_plain(note) for note in plain_notes)
    fixed = escape_mrkdwn("\n\n".join(part for part in (extras, tail) if part), mentions)
    excerpt = _fallback_text(body_md, max(TEXT_FALLBACK_LIMIT - len(fixed) - 2, 0), mentions)
    text = "\n\n".join(part for part in (excerpt, fixed) if part) or _plain(NO_TEXT_NOTE)
    return SlackPayload(text=_truncate(text, TEXT_FALLBACK_LIMIT), blocks=blocks)


def _closed(body_md: str) -> str:
    """``body_md`` with a code fence left open at its end closed."""
    fence = fence_at(body_md + "\n", len(body_md) + 1)
    if fence is None:
        return body_md
    return body_md + ("" if body_md.endswith("\n") else "\n") + fence.closer


def continued_payload(body_md: str, *, mentions: Mentions = NO_MENTIONS) -> SlackPayload:
    """A finished part of a long answer that goes on in the next message: no footer, a hint."""
    body = _within(partial(to_slack_markdown, mentions=mentions), _closed(body_md), MARKDOWN_LIMIT)
    return SlackPayload(
        text=_fallback_text(body_md, mentions=mentions) or "…",
        blocks=[_markdown_block(body if body.strip() else "…"), _context_block(CONTINUED_HINT)],
    )


def error_payload(message: str, *, mentions: Mentions = NO_MENTIONS) -> SlackPayload:
    """Replaces the placeholder when the answer failed before any text: one clear line.

    It is a notice, not an answer: a section block marked with NOTICE_BLOCK_ID (Slack keeps a
    section's block_id), which `visible_answer` reads as no answer at all, so a failure never
    becomes an assistant turn in the next conversation.
    """
    line = message.strip() or ":warning: Something went wrong. Please try again."
    shown = _within(partial(to_slack_markdown, mentions=mentions), line, 2_000)
    return SlackPayload(
        text=_fallback_text(line, mentions=mentions),
        blocks=[
            {
                "type": "section",
                "block_id": NOTICE_BLOCK_ID,
                "text": {"type": "mrkdwn", "text": shown},
            }
        ],
    )


PLAIN_TEXT_LIMIT = 3_900  # per plain message: Slack refuses `text` over 4,000 characters


def plain_pieces(
    md: str, limit: int = PLAIN_TEXT_LIMIT, *, mentions: Mentions = NO_MENTIONS
) -> list[str]:
    """All of ``md`` as plain ``text`` pieces of at most ``limit`` characters, cut at
    paragraph, line or word boundaries and never inside an entity or a Slack token: what is
    sent when Slack refuses the rich payload, so nothing of the answer is cut off."""
    text = escape_mrkdwn(_plain(md), mentions) or "…"
    pieces: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind("\n\n", 0, limit), text.rfind("\n", 0, limit))
        if cut < limit // 2:
            cut = text.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = _cluster_boundary(text, limit)
        cut = _outside_escapes(text, cut, floor=1)  # floor 1: every piece holds something
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return [piece for piece in pieces if piece] or ["…"]


# -- feedback buttons -------------------------------------------------------------------------

FEEDBACK_ACTION_ID = "answer_feedback"


@dataclass(frozen=True)
class FeedbackButtons:
    """What each of Slack's feedback buttons sends back when clicked (at most 2,000
    characters each; ``bot.feedback`` writes and reads them)."""

    positive_value: str
    negative_value: str


def feedback_block(buttons: FeedbackButtons) -> dict[str, Any]:
    """A ``context_actions`` block holding one ``feedback_buttons`` element (Slack's AI-app
    feedback control), built with slack-sdk's models so Slack's limits are checked here."""
    return ContextActionsBlock(
        elements=[
            FeedbackButtonsElement(
                action_id=FEEDBACK_ACTION_ID,
                positive_button=FeedbackButtonObject(
                    text="👍",
                    accessibility_label="Good answer",
                    value=buttons.positive_value,
                ),
                negative_button=FeedbackButtonObject(
                    text="👎",
                    accessibility_label="Bad answer",
                    value=buttons.negative_value,
                ),
            )
        ]
    ).to_dict()
