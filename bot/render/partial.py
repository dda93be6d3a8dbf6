"""Safe partial rendering: a prefix of the answer, shown while it streams, as if it were complete.

``render_partial`` closes an open code fence and holds back a trailing construct that would flash
up broken (half a link or Slack token, an unterminated code span, half a table row, a line that
is only a block marker). Unclosed emphasis is CLOSED, not held back, so bold text appears while it
streams. The final message is always rendered from the whole text with ``to_slack_markdown``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import partial
from typing import Any

from bot.render.fences import (
    Fence,
    code_span_end,
    fence_open,
    is_blank,
    may_fence,
    run_length,
    split_lines,
)
from bot.render.markdown import starts_block, to_slack_markdown
from bot.render.tables import table_flags
from bot.render.tokens import NO_MENTIONS, SLACK_TOKEN, Mentions, partial_token

_MARKER_ONLY = re.compile(r"[ \t]*(?:[-+*=_#>~`|:]+|\d{1,9}[.)])?[ \t]*")
_TRAILING_MARKS = re.compile(r"[*_~\\]+\Z")


def _punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def _link_end(text: str, i: int, stop: int) -> int | None:
    """For ``[`` (or ``![``) at ``i``: the end of the complete link, -1 when the link may still be
    arriving, None when the brackets turned out to be plain text."""
    j = i + (2 if text[i] == "!" else 1)
    depth = 1
    while j < stop and depth:
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == "`":
            run = run_length(text, j, stop)
            end = code_span_end(text, j + run, run, stop)
            if end < 0:
                return -1
            j = end
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        j += 1
    if depth or j >= stop:
        return -1
    if text[j] != "(":
        return None
    depth = 1
    j += 1
    while j < stop:
        char = text[j]
        if char == "\\":
            j += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        j += 1
        if not depth:
            return j
    return -1


def _delimiter_run(stack: list[list[Any]], text: str, i: int, run: int) -> None:
    """CommonMark's emphasis delimiter rules, simplified: match closers with openers of the
    same character, keep unmatched openers on ``stack`` as ``[position, char, count]``."""
    char = text[i]
    if char == "~" and run != 2:
        return
    before = text[i - 1] if i > 0 else " "
    after = text[i + run] if i + run < len(text) else " "
    left = not after.isspace() and (
        not _punctuation(after) or before.isspace() or _punctuation(before)
    )
    right = not before.isspace() and (
        not _punctuation(before) or after.isspace() or _punctuation(after)
    )
    if char == "_":
        can_open = left and (not right or _punctuation(before))
        can_close = right and (not left or _punctuation(after))
    else:
        can_open, can_close = left, right
    remaining = run
    while can_close and remaining:
        match = next((k for k in range(len(stack) - 1, -1, -1) if stack[k][1] == char), None)
        if match is None:
            break
        del stack[match + 1 :]
        used = min(stack[match][2], remaining)
        stack[match][2] -= used
        remaining -= used
        if not stack[match][2]:
            stack.pop()
    if remaining and can_open:
        stack.append([i, char, remaining])


# The characters `_settle_inline` looks at; it passes over every other one.
_INLINE_SPECIAL = re.compile(r"[\\`<\[!*_~]")


def _settle_inline(block: str) -> str:
    """The current paragraph of a prefix, safe to show: incomplete code spans, links and Slack
    tokens held back from where they start, open emphasis closed (or dropped if still empty)."""
    trailing = _TRAILING_MARKS.search(block)
    stop = trailing.start() if trailing else len(block)
    stack: list[list[Any]] = []
    i = 0
    while i < stop:
        special = _INLINE_SPECIAL.search(block, i, stop)
        if special is None:
            break  # nothing but ordinary characters left
        i = special.start()
        char = block[i]
        if char == "\\":
            i += 2
        elif char == "`":
            run = run_length(block, i, stop)
            end = code_span_end(block, i + run, run, stop)
            if end < 0:
                stop = i
                break
            i = end
        elif char == "<":
            token = SLACK_TOKEN.match(block, i, stop)
            if token is not None:
                i = token.end()
            elif partial_token(block[i + 1 : stop]):
                stop = i
                break
            else:
                i += 1
        elif char == "[" or (char == "!" and block.startswith("[", i + 1)):
            link = _link_end(block, i, stop)
            if link == -1:
                stop = i
                break
            i = i + 1 if link is None else link
        elif char in "*_~":
            run = run_length(block, i, stop)
            _delimiter_run(stack, block, i, run)
            i += run
        else:
            i += 1
    kept = block[:stop]
    for position, char, count in reversed(stack):
        has_text = bool(kept[position + count :].strip())
        kept = kept.rstrip() + char * count if has_text else kept[:position]
    return kept


def _settle_prose(lines: list[str]) -> str:
    """Hold back what would render broken at the end of prose that follows the last fence."""
    lines = list(lines)
    if lines and not lines[-1].endswith("\n"):
        last = lines[-1]
        complete_flags = table_flags(lines[:-1])
        if (
            _MARKER_ONLY.fullmatch(last)
            or last.lstrip().startswith("|")
            or (complete_flags and complete_flags[-1])
        ):
            lines.pop()
    flags = table_flags(lines)
    if lines and not flags[-1] and lines[-1].lstrip().startswith("|"):
        lines.pop()  # a table header still waiting for its delimiter row
        flags.pop()
    if not lines or flags[-1] or is_blank(lines[-1]):
        return "".join(lines)
    start = len(lines) - 1
    while (
        start > 0
        and not flags[start - 1]
        and not is_blank(lines[start - 1])
        and not starts_block(lines[start])
    ):
        start -= 1
    settled = "".join(lines[:start]) + _settle_inline("".join(lines[start:]))
    tail = settled.rfind("\n") + 1
    # What was held back (say a backtick) may have kept the last line from opening a fence.
    return settled[:tail] if fence_open(settled[tail:]) else settled


def render_partial(md_prefix: str, *, mentions: Mentions = NO_MENTIONS) -> str:
    """A streaming prefix rendered as if it were complete.

    Closes an open code fence (same fence), holds back a fence whose opening line or first line is
    still arriving, an unterminated code span, an incomplete link (from its ``[``) or Slack token
    (from its ``<``), an incomplete table row or a table header still waiting for its delimiter row,
    and a last line that is only a block marker; closes unclosed ``**``/``__``/``*``/``_``/``~~``
    emphasis of the current paragraph. Then applies ``to_slack_markdown`` (with ``mentions``).
    Display only.
    """
    show = partial(to_slack_markdown, mentions=mentions)
    lines = split_lines(md_prefix)
    fence: Fence | None = None
    opener = 0
    prose_from = 0  # first line after the last closed fence
    for k, line in enumerate(lines if may_fence(md_prefix) else ()):
        content = line.rstrip("\n")
        if fence is None:
            fence = fence_open(content)
            opener = k
        elif fence.closed_by(content):
            fence = None
            prose_from = k + 1
    if fence is not None and opener < len(lines) - 1:
        last = lines[-1]
        stripped = last.strip()
        if not last.endswith("\n") and stripped == fence.marker[0] * len(stripped):
            lines.pop()  # a closing fence (or nothing visible) still arriving
        code = "".join(lines)
        return show(code + ("" if code.endswith("\n") else "\n") + fence.closer)
    if fence is not None:
        lines = lines[:opener]  # the fence has no content yet
    return show("".join(lines[:prose_from]) + _settle_prose(lines[prose_from:]))
