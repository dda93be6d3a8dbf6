"""Splitting a long answer into several Slack messages.

``next_cut`` says where the current message must end once the text no longer fits, preferring a
paragraph break, then a line break, then a space, never a word, link, Slack token or grapheme
cluster unless there is no other way. A cut inside a code fence closes the fence at the end of
one part and reopens it (same fence, same language) at the start of the next (``part_text``).
The cut depends only on the text up to the point where it stops fitting, so the parts already
posted never change as the answer grows; ``split_answer`` is the same cut applied repeatedly and
``join_parts`` undoes it. The size check uses a cheap upper bound of the rendered length that is
exact for tables, so every part renders within the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.render.fences import (
    FENCE_LINE_START,
    Fence,
    code_size,
    fence_at,
    fence_open,
    is_blank,
    run_length,
)
from bot.render.tables import (
    Table,
    indent_of,
    is_row,
    separator_aligns,
    split_cells,
    zero_width,
)
from bot.render.tokens import partial_token

BODY_LIMIT = 11_000  # what we put in one message's body, leaving room for closers and notes


def _escaped_size(text: str) -> int:
    """Upper bound of the rendered length of prose (as if every & < > were escaped)."""
    return len(text) + 3 * (text.count("<") + text.count(">")) + 4 * text.count("&")


class _Sizer:
    """Upper bound of ``len(to_slack_markdown(part))`` for a part growing line by line.

    Within one line the bound only grows with the line, so the first position where a part stops
    fitting can be found by checking line ends and bisecting a single line. Prose counts as if
    every ``&<>`` were escaped; tables count exactly as drawn; inside a fence room is kept for the
    closing fence a cut there adds.
    """

    def __init__(self, fence: Fence | None) -> None:
        self.fence = fence
        self.fixed = code_size(fence.opener) + 1 if fence else 0
        self.table: Table | None = None
        self.header: str | None = None  # a line a delimiter row would turn into a table header
        self.header_table = 0

    def context(self) -> str:
        """What an incomplete next line is, for choosing cuts: code, table (or maybe), or text."""
        if self.fence is not None:
            return "code"
        return "row" if self.table is not None or self.header is not None else "text"

    def bound(self, partial: str) -> int:
        if self.fence is not None:
            return self.fixed + code_size(partial) + len(self.fence.closer) + 2
        if self.table is not None:
            size = self.table.length(True) + _escaped_size(partial)
            if "|" in partial:
                size = max(size, self.table.length(False, split_cells(partial)))
            return self.fixed + size
        if self.header is not None:  # a delimiter row would make it a table
            as_text = _escaped_size(self.header) + _escaped_size(partial)
            return self.fixed + (max(as_text, self.header_table) if partial else as_text)
        return self.fixed + _escaped_size(partial)

    def add(self, line: str) -> str:
        """Take a complete line; return its kind: open, code, close, row, header, sep, text."""
        content = line[:-1]
        if self.fence is not None:
            self.fixed += code_size(line)
            if self.fence.closed_by(content):
                self.fence = None
                return "close"
            return "code"
        if self.table is not None:
            if is_row(content):
                self.table.add_row(split_cells(content))
                return "row"
            self.fixed += self.table.length(True)
            self.table = None
        if self.header is not None:
            header, self.header = self.header, None
            cells = split_cells(header[:-1])
            aligns = separator_aligns(content, len(cells))
            if aligns is not None:
                self.table = Table(indent_of(header), cells, aligns)
                return "sep"
            self.fixed += _escaped_size(header)
        fence = fence_open(content)
        if fence is not None:
            self.fence = fence
            self.fixed += code_size(line)
            return "open"
        if "|" in content:
            self.header = line
            cells = split_cells(content)
            as_header = Table(indent_of(content), cells, ["left"] * len(cells))
            self.header_table = as_header.length(False)
            return "header"
        self.fixed += _escaped_size(line)
        return "text"


@dataclass
class _Line:
    start: int
    content: str  # without "\n"; only what is known of the line where the part stops fitting
    kind: str


# A space followed by something that could start a block or fence at the top of the next part
# is no place to cut.
_SPACE_CUT = re.compile(r"[ \t](?=[^\s\-+*#>|`~=0-9])")
_ZWJ = "\u200d"


def _regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def grapheme_break(md: str, c: int) -> bool:
    """Is ``c`` (0 < c < len(md)) between two grapheme clusters, as far as practical?"""
    before, after = md[c - 1], md[c]
    if zero_width(after) or before == _ZWJ or (before == "\r" and after == "\n"):
        return False
    if "\ud800" <= before <= "\udbff":
        return False
    if _regional(before) and _regional(after):
        run = 0
        while c - 1 - run >= 0 and _regional(md[c - 1 - run]):
            run += 1
        return run % 2 == 0
    return True


def _protected(content: str) -> list[bool]:
    """For each k, whether cutting after ``content[:k]`` would fall inside a code span, a link,
    a Slack token or an escape. Decided from ``content[:k + 1]`` only, so cuts stay stable."""
    protected = [False] * (len(content) + 1)
    ticks = brackets = parens = 0
    token = -1  # where something that may still become a Slack token starts
    i = 0
    while i < len(content):
        char, step = content[i], 1
        if ticks:
            if char == "`":
                step = run_length(content, i)
                ticks = 0 if step == ticks else ticks
        elif token >= 0 and char not in "<>":
            if i - token <= 8 and not partial_token(content[token + 1 : i + 1]):
                token = -1
                continue  # not a token after all: read this character again
        elif token >= 0:
            token = i if char == "<" else -1
        elif char == "\\":
            step = 2
        elif parens:
            parens += {"(": 1, ")": -1}.get(char, 0)
        elif char == "`":
            ticks = step = run_length(content, i)
        elif char == "<":
            token = i
        elif char == "[":
            brackets += 1
        elif char == "]" and brackets:
            brackets -= 1
            if content[i + 1 : i + 2] == "(":
                parens, step = 1, 2
        end = min(i + step, len(content))
        for k in range(i + 1, end):
            protected[k] = True
        protected[end] = bool(ticks or brackets or parens) or token >= 0
        i = end
    return protected


def _boundary_rank(previous: _Line) -> int:
    """How good a cut at the start of the line after ``previous`` is (0: never)."""
    if previous.kind == "open":
        return 0  # an empty code block
    if previous.kind in ("code", "row", "sep"):
        return 4  # closes and reopens a fence, or splits a table
    if previous.kind != "close" and is_blank(previous.content):
        return 8  # a paragraph break
    return 6


def _first_cuttable(content: str) -> int:
    """Smallest k at which a line may be cut mid-line: never in its indentation or in what is,
    or could still become, a fence line (a part must not open or close a fence by accident)."""
    if FENCE_LINE_START.match(content):
        return len(content) + 1
    rest = content.lstrip(" \t")
    marks = len(rest) - len(rest.lstrip(rest[:1])) if rest[:1] in ("`", "~") else 0
    return len(content) - len(rest) + marks + 1


def _choose_cut(md: str, start: int, stop: int, lines: list[_Line]) -> int | None:
    """The best cut in (start, stop), where every position fits; None if there is none."""
    ranked: dict[int, list[int]] = {8: [], 6: [], 4: [], 2: [], 1: []}
    hard: dict[bool, int] = {}  # guarded? -> latest hard cut
    for t, line in enumerate(lines):
        if t and start < line.start < stop and (rank := _boundary_rank(lines[t - 1])):
            ranked[rank].append(line.start)
        content = line.content
        first, last = _first_cuttable(content), min(len(content), stop - 1 - line.start)
        if first > last:
            continue
        syntax = line.kind in ("text", "header") and any(char in content for char in "`<[\\")
        protected = _protected(content) if syntax else None
        if line.kind in ("text", "header", "code"):
            for space in _SPACE_CUT.finditer(content, first - 1, last + 1):
                k = space.end()
                if not (protected and protected[k]) and grapheme_break(md, line.start + k):
                    ranked[2 if line.kind != "code" else 1].append(line.start + k)
        for guarded in (False, True):
            for k in range(last, first - 1, -1):
                c = line.start + k
                # the next part must not start with a fence by accident
                if md[c] in " \t`~" or not grapheme_break(md, c):
                    continue
                if guarded or not (protected and protected[k]):
                    hard[guarded] = c
                    break
    for low in (start + (stop - start) // 2, start + 1):
        for rank in (8, 6, 4, 2, 1):
            if ranked[rank] and ranked[rank][-1] >= low:
                return ranked[rank][-1]
    if hard:
        return hard.get(False, hard[True])
    # Only a fence line or a lone grapheme cluster longer than the limit gets here: end the part
    # after its first line even though it is too long; a cut inside a fence line is never safe.
    newline = md.find("\n", start)
    return newline + 1 if 0 <= newline < len(md) - 1 else None


def _first_over(sizer: _Sizer, content: str, limit: int) -> int:
    """Smallest k >= 1 with sizer.bound(content[:k]) > limit (it holds for k = len(content))."""
    low, high = 1, len(content)
    while low < high:
        middle = (low + high) // 2
        if sizer.bound(content[:middle]) > limit:
            high = middle
        else:
            low = middle + 1
    return low


def next_cut(md: str, limit: int = BODY_LIMIT, start: int = 0) -> int | None:
    """Where the message holding ``md[start:]`` must end, or None while all of it fits.

    The part ``part_text(md, start, cut)`` renders within ``limit``. The cut depends only on the
    text up to where the part stops fitting: once it is returned for a prefix, any longer text gets
    the same cut, so posted parts never change. ``start`` must be 0 or an earlier cut of ``md``.
    Streaming loop: ``while (cut := next_cut(md, limit, start)) is not None:`` finish the message
    with ``continued_payload(part_text(md, start, cut))``, post a new one, ``start = cut``; show
    ``part_text(md, start)`` in the current message.
    """
    if start >= len(md):
        return None
    fence = fence_at(md, start)
    sizer = _Sizer(fence)
    lines: list[_Line] = []
    stop: int | None = start if sizer.bound("") > limit else None
    pos = start
    while stop is None:
        newline = md.find("\n", pos)
        content = md[pos:] if newline < 0 else md[pos:newline]
        if sizer.bound(content) > limit:
            lines.append(_Line(pos, content, sizer.context()))
            stop = pos + _first_over(sizer, content, limit)
            break
        if newline < 0:
            return None
        kind = sizer.add(md[pos : newline + 1])
        if kind == "sep":
            lines[-1].kind = "row"
            kind = "row"
        lines.append(_Line(pos, content, kind))
        pos = newline + 1
        if sizer.bound("") > limit:
            stop = pos
    return _choose_cut(md, start, stop, lines)


def part_text(md: str, start: int = 0, end: int | None = None) -> str:
    """The Markdown of the message holding ``md[start:end]``: a fence cut at ``start`` is reopened
    (same fence and language) and one cut at ``end`` is closed."""
    opened = fence_at(md, start)
    head = opened.opener + "\n" if opened else ""
    if end is None:
        return head + md[start:]
    closing = fence_at(md, end)
    if closing is None:
        tail = ""
    elif md[end - 1] == "\n":
        tail = closing.closer
    else:  # a cut inside a code line; the space tells join_parts that "\n" was added too
        tail = "\n" + closing.closer + " "
    return head + md[start:end] + tail


def split_answer(md: str, limit: int = BODY_LIMIT) -> list[str]:
    """The whole answer cut into message parts, each rendering within ``limit``."""
    parts: list[str] = []
    start = 0
    while (cut := next_cut(md, limit, start)) is not None:
        parts.append(part_text(md, start, cut))
        start = cut
    parts.append(part_text(md, start))
    return parts


def join_parts(parts: list[str]) -> str:
    """Inverse of split_answer: drop the fence lines it added at the cuts."""
    pieces: list[str] = []
    reopened = False
    for i, part in enumerate(parts):
        body, closed = part, False
        if i < len(parts) - 1 and not part.endswith("\n"):
            last_start = part.rfind("\n") + 1
            fence = fence_at(part, last_start)
            tail = part[last_start:]
            if fence is not None and tail == fence.closer:
                body, closed = part[:last_start], True
            elif fence is not None and tail == fence.closer + " " and last_start:
                body, closed = part[: last_start - 1], True
        if reopened:
            body = body[body.find("\n") + 1 :]
        pieces.append(body)
        reopened = closed
    return "".join(pieces)
