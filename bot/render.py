"""Claude's Markdown → Slack message payloads: rendering, safe partial rendering while the answer
streams, splitting long answers into several messages, the usage footer and the closing notes.

Pure: no I/O, no clock, no network client; the caller decides when to send what.

Why a ``markdown`` block
    The answer body goes into ONE ``{"type": "markdown"}`` block. Slack renders standard Markdown
    there itself (bold, italics, strike, links, lists, headings, quotes, inline and fenced code), so
    translating to mrkdwn would only lose information. What Slack does not do for us:

    * ``&``, ``<`` and ``>`` are control characters in Slack text; outside code they are escaped as
      ``&amp;`` ``&lt;`` ``&gt;``, except blockquote markers and the Slack tokens that are safe to
      keep live: channel links (``<#C1|x>``), dates and links (``<https://…|label>``).
    * Claude's text is not the bot's to broadcast with: ``<!here>``, ``<!channel>``,
      ``<!everyone>`` and user-group mentions become plain ``@here``-style text (plain text never
      notifies: the bot does not set ``link_names``), and a user mention becomes the person's name
      without notifying them unless the caller turns live user mentions on (``Mentions``). Inside
      code, where text is shown as written, an invisible word joiner after ``<`` keeps such a token
      from being one. A link whose label is a URL of another host shows its real destination.
    * Tables are not rendered reliably, so a Markdown table becomes a fenced monospace block with
      aligned columns (CJK and emoji count as two columns).
    * Limits: 12,000 characters of markdown-block text per payload, about 13,000 characters of block
      text per message, 50 blocks, and we keep the ``text`` fallback (notifications, screen readers)
      under 4,000. A message body holds at most ``BODY_LIMIT`` rendered characters, which leaves
      room for the closers of a partial render and for the notes.

Streaming
    ``render_partial`` shows a prefix as if it were complete: it closes an open code fence and holds
    back a trailing construct that would flash up broken (half a link or Slack token, an
    unterminated code span, half a table row, a line that is only a block marker). Unclosed
    emphasis is CLOSED, not held back, so bold text appears while it streams. The final message is
    always rendered from the whole text with ``to_slack_markdown``.

Long answers
    ``next_cut`` says where the current message must end once the text no longer fits, preferring a
    paragraph break, then a line break, then a space, never a word, link, Slack token or grapheme
    cluster unless there is no other way. A cut inside a code fence closes the fence at the end of
    one part and reopens it (same fence, same language) at the start of the next (``part_text``).
    The cut depends only on the text up to the point where it stops fitting, so the parts already
    posted never change as the answer grows; ``split_answer`` is the same cut applied repeatedly and
    ``join_parts`` undoes it. The size check uses a cheap upper bound of the rendered length that is
    exact for tables, so every part renders within the limit.

Finished message, block by block
    1. ``markdown``: the body, then each note (e.g. a stop-reason note) as its own paragraph;
    2. ``context``: the mrkdwn footer (``Tokens: 1,234 in, 567 out · …``);
    3. ``markdown``: ``[interrupted: reason]`` when the answer was cut short: the last line.
    Every payload carries a markdown block, so an edit never replaces rich text with non-rich-text
    blocks only (Slack's ``block_mismatch``).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from bot.usage import Usage
from bot.usage import estimate_cost as estimate_cost  # re-exported for older callers

MARKDOWN_LIMIT = 12_000  # Slack's cap for markdown blocks in one payload
BODY_LIMIT = 11_000  # what we put in one message's body, leaving room for closers and notes
TEXT_FALLBACK_LIMIT = 3_000  # our cap for `text`; Slack rejects more than 4,000
STOP_ACTION_ID = "stop_answer"
NOTICE_BLOCK_ID = "slackstream-notice"  # marks a message that is a notice, not an answer

_NOTE_LIMIT = 1_000  # per note, and for the footer
_CUT_SHORT_NOTE = "_(answer cut short: too long for one Slack message)_"
_NO_TEXT_NOTE = "_(no answer text)_"
_CONTINUED_HINT = ":arrow_down: continued below"
CONTINUED_HINT = _CONTINUED_HINT  # also ends a plain-text part

# ----------------------------------------------------------------------------------------------
# Lines and code fences


def _lines(text: str) -> list[str]:
    """Lines with their ``\\n``; only ``\\n`` ends a line (str.splitlines knows many more)."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


_FENCE_OPEN = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")
_FENCE_LINE_START = re.compile(r"[ \t]*(?:```|~~~)")


@dataclass(frozen=True)
class _Fence:
    indent: str
    marker: str
    info: str

    @property
    def opener(self) -> str:
        return self.indent + self.marker + self.info

    @property
    def closer(self) -> str:
        return self.indent + self.marker

    def closed_by(self, content: str) -> bool:
        stripped = content.strip()
        return len(stripped) >= len(self.marker) and stripped == self.marker[0] * len(stripped)


# Code is shown as written, so nothing in it is escaped: an invisible word joiner after "<" keeps
# a broadcast or a mention there from being a Slack token. Case-insensitive and without the
# closing ">", to be safe rather than exact. Sizes count it: see `_code_size`.
_TOKEN_IN_CODE = re.compile(r"<(?=!(?:here|channel|everyone|subteam)|@)", re.IGNORECASE)
_WORD_JOINER = "\u2060"


def _defuse_code(code: str) -> str:
    return _TOKEN_IN_CODE.sub("<" + _WORD_JOINER, code) if "<" in code else code


def _code_size(code: str) -> int:
    """Upper bound of ``len(_defuse_code(code))``."""
    return len(code) + code.count("<")


def _may_fence(text: str) -> bool:
    """False when no line of `text` can open or close a code fence: a fast test that lets the
    line-by-line fence scans be skipped for plain prose (they run on every streaming edit)."""
    return "```" in text or "~~~" in text


def _fence_open(content: str) -> _Fence | None:
    """The fence a line opens (CommonMark: a backtick fence's info string has no backtick)."""
    match = _FENCE_OPEN.fullmatch(content)
    if match is None or (match[2][0] == "`" and "`" in match[3]):
        return None
    return _Fence(match[1], match[2], match[3])


def _next_fence(fence: _Fence | None, content: str) -> _Fence | None:
    if fence is None:
        return _fence_open(content)
    return None if fence.closed_by(content) else fence


def _fence_at(md: str, pos: int) -> _Fence | None:
    """The fence open at ``pos``, judged by the complete lines before it."""
    fence: _Fence | None = None
    begin = 0
    while (newline := md.find("\n", begin, pos)) >= 0:
        fence = _next_fence(fence, md[begin:newline])
        begin = newline + 1
    return fence


# ----------------------------------------------------------------------------------------------
# Tables


_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_SEPARATOR_CELL = re.compile(r":?-+:?")
_TICKS = re.compile(r"`+")


def _indent(content: str) -> str:
    return content[: len(content) - len(content.lstrip())]


def _cells(content: str) -> list[str]:
    row = content.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(row)]


def _separator_aligns(content: str, columns: int) -> list[str] | None:
    """Column alignments when ``content`` is a table's delimiter row for ``columns`` columns."""
    if "|" not in content:
        return None
    cells = _cells(content)
    if len(cells) != columns or not all(_SEPARATOR_CELL.fullmatch(cell) for cell in cells):
        return None
    return [
        ("center" if cell.startswith(":") else "right") if cell.endswith(":") else "left"
        for cell in cells
    ]


def _zero_width(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me", "Cf") or "\U0001f3fb" <= char <= "\U0001f3ff"


def _width(text: str) -> int:
    """Columns ``text`` takes in a monospace font: wide East Asian characters and emoji take two."""
    return sum(
        0 if _zero_width(char) else 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        for char in text
    )


def _run(text: str, i: int, stop: int | None = None) -> int:
    """Length of the run of ``text[i]`` starting at ``i`` (before ``stop``)."""
    end = len(text) if stop is None else stop
    j = i
    while j < end and text[j] == text[i]:
        j += 1
    return j - i


def _longest_ticks(text: str) -> int:
    return max((len(run) for run in _TICKS.findall(text)), default=0)


_CELL_CODE = re.compile(r"(`+)(.+?)\1")
_CELL_LINK = re.compile(r"\[([^\]]*)\]\(([^()\s]*)\)")
_CELL_STRONG = re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1")


def _cell_prose(text: str) -> str:
    text = _CELL_LINK.sub(lambda m: f"{m[1]} ({m[2]})" if m[1] and m[1] != m[2] else m[2], text)
    return _CELL_STRONG.sub(r"\2", text)


def _cell_text(cell: str) -> str:
    """A cell as shown in monospace: code spans, links and bold/strike markers unwrapped.
    Never longer than ``_code_size`` of the cell's source (the bound a partial row counts)."""
    out: list[str] = []
    begin = 0
    for span in _CELL_CODE.finditer(cell):
        out.append(_cell_prose(cell[begin : span.start()]))
        out.append(span[2])
        begin = span.end()
    out.append(_cell_prose(cell[begin:]))
    return _defuse_code("".join(out))


def _pad(cell: str, width: int, align: str) -> str:
    gap = width - _width(cell)
    if align == "right":
        return " " * gap + cell
    if align == "center":
        return " " * (gap // 2) + cell + " " * (gap - gap // 2)
    return cell + " " * gap


class _Table:
    """A Markdown table drawn as a fenced monospace block; its length is known without drawing."""

    def __init__(self, indent: str, header: list[str], aligns: list[str]) -> None:
        self.indent = indent
        self.aligns = aligns
        self.rows: list[list[str]] = []
        self.widths = [1] * len(aligns)
        self.extra = 0  # characters beyond display columns (zero-width and wide characters)
        self.ticks = 0
        self.add_row(header)

    def _fit(self, cells: list[str]) -> list[str]:
        """Exactly one cell per column: missing cells are empty, surplus ones join the last."""
        columns = len(self.aligns)
        if len(cells) <= columns:
            return cells + [""] * (columns - len(cells))
        return [*cells[: columns - 1], " | ".join(cells[columns - 1 :])]

    def add_row(self, cells: list[str]) -> None:
        row = self._fit([_cell_text(cell) for cell in cells])
        self.rows.append(row)
        self.widths, self.extra, self.ticks = self._grown(row)

    def _grown(self, row: list[str]) -> tuple[list[int], int, int]:
        widths = list(self.widths)
        extra, ticks = self.extra, self.ticks
        for column, cell in enumerate(row):
            width = _width(cell)
            widths[column] = max(widths[column], width)
            extra += len(cell) - width
            ticks = max(ticks, _longest_ticks(cell))
        return widths, extra, ticks

    def length(self, trailing_newline: bool, extra_row: list[str] | None = None) -> int:
        """len(self.render(...)) in O(columns); with ``extra_row`` (raw cells of a row still
        arriving) an upper bound that only grows as that row grows."""
        widths, extra, ticks, rows = self.widths, self.extra, self.ticks, len(self.rows)
        if extra_row is not None:
            widths, extra, ticks = self._grown(self._fit(extra_row))
            extra += sum(cell.count("<") for cell in extra_row)  # word joiners in its code
            rows += 1
        line = sum(widths) + 3 * (len(widths) - 1)
        lines = rows + 3  # two fence lines and the separator
        fence = max(3, ticks + 1)
        return (
            lines * len(self.indent)
            + 2 * fence
            + (rows + 1) * line
            + extra
            + lines
            - 1
            + trailing_newline
        )

    def render(self, trailing_newline: bool) -> str:
        fence = "`" * max(3, self.ticks + 1)
        lines = [
            fence,
            self._line(self.rows[0]),
            "-+-".join("-" * width for width in self.widths),
            *(self._line(row) for row in self.rows[1:]),
            fence,
        ]
        return "\n".join(self.indent + line for line in lines) + "\n" * trailing_newline

    def _line(self, row: list[str]) -> str:
        return " | ".join(map(_pad, row, self.widths, self.aligns))


def _is_row(content: str) -> bool:
    """A table goes on while lines have a pipe, until a blank line or a code fence (as in GFM;
    it also keeps fences independent of tables)."""
    return "|" in content and _fence_open(content) is None


def _table_at(lines: list[str], i: int) -> tuple[_Table, int] | None:
    """The table starting at line ``i`` (header, delimiter row, rows) and the line after it."""
    header = lines[i].rstrip("\n")
    if not _is_row(header) or i + 1 >= len(lines):
        return None
    cells = _cells(header)
    aligns = _separator_aligns(lines[i + 1].rstrip("\n"), len(cells))
    if aligns is None:
        return None
    table = _Table(_indent(header), cells, aligns)
    end = i + 2
    while end < len(lines) and _is_row(lines[end].rstrip("\n")):
        table.add_row(_cells(lines[end].rstrip("\n")))
        end += 1
    return table, end


def _table_flags(lines: list[str]) -> list[bool]:
    """Which of these (fence-free) lines belong to a table."""
    flags = [False] * len(lines)
    if not any("|" in line for line in lines):
        return flags  # every table row has a pipe
    i = 0
    while i < len(lines):
        found = _table_at(lines, i)
        if found is None:
            i += 1
            continue
        flags[i : found[1]] = [True] * (found[1] - i)
        i = found[1]
    return flags


# ----------------------------------------------------------------------------------------------
# Inline text: escaping outside code, Slack tokens


_SLACK_TOKEN = re.compile(
    r"<(?:[@#][A-Z0-9]+|!(?:here|channel|everyone)|!subteam\^[A-Z0-9]+|!date\^[^<>|\n]+"
    r"|(?:https?://|mailto:)[^\s<>|]+)(?:\|[^<>\n]*)?>"
)
_SPECIAL = re.compile(r"[\\`<>&\n\[]")


@dataclass(frozen=True)
class Mentions:
    """What the caller knows about the people Claude may mention: their display names (user ID →
    name) and whether a mention may notify them (the operator's ``ALLOW_USER_MENTIONS``). The
    default knows no names and notifies nobody: a mention then reads ``@U0ABC``."""

    names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    live_users: bool = False


NO_MENTIONS = Mentions()

_NAME_LIMIT = 64
# Markdown that could turn a display name into formatting or a link.
_MARKDOWN_ACTIVE = re.compile(r"([\\`*_~\[\]])")


def _name_text(name: str, *, markdown: bool) -> str:
    """A display name (or user-group label) as harmless text: one line, capped, escaped."""
    kept = (c if c == "\u200d" or unicodedata.category(c)[0] != "C" else " " for c in name)
    shown = " ".join("".join(kept).split())
    if len(shown) > _NAME_LIMIT:
        shown = shown[: _NAME_LIMIT - 1].rstrip() + "…"
    shown = _escape_plain(shown)
    return _MARKDOWN_ACTIVE.sub(r"\\\1", shown) if markdown else shown


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def _misleading(label: str, target: str) -> bool:
    """Is ``label`` a URL (or ``www.`` name) of another host than the link's ``target``?"""
    shown = label.strip().strip("`*_~<>").strip()
    if shown.lower().startswith("www."):
        shown = "http://" + shown
    elif "://" not in shown:
        return False
    host = _host(shown)
    return host is not None and host != _host(target.strip())


def _tame(token: str, mentions: Mentions, *, markdown: bool) -> str:
    """What a Slack token Claude wrote is shown as: channel links, dates and honest links stay
    live; broadcasts and user-group mentions become plain text; a user mention becomes the
    person's name unless live user mentions are on; a link labelled with another host's URL
    shows its real destination instead."""
    body, _, label = token[1:-1].partition("|")
    if body.startswith("#") or body.startswith("!date^"):
        return token
    if body.startswith("@"):
        if mentions.live_users:
            return token
        user = body[1:]
        return "@" + _name_text(mentions.names.get(user) or user, markdown=markdown)
    if body.startswith("!subteam^"):
        group = label.strip().lstrip("@") or body.removeprefix("!subteam^")
        return "@" + _name_text(group, markdown=markdown)
    if body.startswith("!"):
        return "@" + body[1:]
    return f"<{body}>" if label and _misleading(label, body) else token


_QUOTE_MARKERS = re.compile(r"[ \t]*>(?:[ \t]*>)*")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BLOCK_START = re.compile(r"[ \t]*(?:[-+*](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|#{1,6}(?:[ \t]|$)|>)")


def _is_blank(line: str) -> bool:
    return not line.strip()


def _starts_block(line: str) -> bool:
    return _BLOCK_START.match(line) is not None


def _inline_blocks(lines: list[str]) -> list[str]:
    """Group prose lines into blocks (paragraphs, list items, headings, quotes); inline syntax
    such as code spans never crosses a block."""
    blocks: list[list[str]] = []
    previous_blank = True
    for line in lines:
        blank = _is_blank(line)
        if previous_blank or blank or _starts_block(line):
            blocks.append([line])
        else:
            blocks[-1].append(line)
        previous_blank = blank
    return ["".join(block) for block in blocks]


def _code_span_end(text: str, begin: int, ticks: int, stop: int | None = None) -> int:
    """End of the code span whose opening run of ``ticks`` backticks ends at ``begin``; -1 if
    it has no closing run (then the backticks are literal)."""
    for run in _TICKS.finditer(text, begin, len(text) if stop is None else stop):
        if len(run[0]) == ticks:
            return run.end()
    return -1


def _escape_block(text: str, mentions: Mentions) -> str:
    out: list[str] = []
    i, line_start = 0, True
    while i < len(text):
        if line_start:
            line_start = False
            quote = _QUOTE_MARKERS.match(text, i)
            if quote is not None:
                out.append(quote[0])
                i = quote.end()
                continue
        special = _SPECIAL.search(text, i)
        if special is None:
            out.append(text[i:])
            break
        j = special.start()
        out.append(text[i:j])
        char = text[j]
        i = j + 1
        if char == "\n":
            out.append(char)
            line_start = True
        elif char == "\\":
            follower = text[j + 1 : j + 2]
            if follower in _ENTITIES:  # `\<` means a literal "<": the entity says the same
                out.append(_ENTITIES[follower])
                i = j + 2
            elif follower and follower != "\n" and follower in string.punctuation:
                out.append(text[j : j + 2])
                i = j + 2
            else:
                out.append(char)
        elif char == "`":
            run = _run(text, j)
            end = _code_span_end(text, j + run, run)
            i = j + run if end < 0 else end
            out.append(_defuse_code(text[j:i]))
        elif char == "<" and (token := _SLACK_TOKEN.match(text, j)) is not None:
            out.append(_tame(token[0], mentions, markdown=True))
            i = token.end()
        elif char == "[":
            link = _MD_LINK.match(text, j)
            if link is not None and _misleading(link[1], link[2]):
                target = _escape_plain(link[2])
                out.append(f"[{target}]({target})")  # the label says where it really goes
                i = link.end()
            else:
                out.append(char)
        else:
            out.append(_ENTITIES[char])
    return "".join(out)


def to_slack_markdown(md: str, *, mentions: Mentions = NO_MENTIONS) -> str:
    """Claude Markdown → what Slack's markdown block renders as a user expects.

    Escapes ``&``, ``<``, ``>`` outside code (keeping blockquote markers and the Slack tokens
    that are safe live), shows broadcasts and mentions as ``mentions`` allows, turns tables into
    aligned monospace blocks, and leaves everything else, code above all, as it is.
    """
    lines = _lines(md)
    if not _may_fence(md) and "|" not in md:  # plain prose, the usual case: escaping only
        return "".join(_escape_block(block, mentions) for block in _inline_blocks(lines))
    out: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        out.extend(_escape_block(block, mentions) for block in _inline_blocks(prose))
        prose.clear()

    i = 0
    while i < len(lines):
        fence = _fence_open(lines[i].rstrip("\n"))
        if fence is not None:
            flush()
            end = i + 1
            while end < len(lines) and not fence.closed_by(lines[end].rstrip("\n")):
                end += 1
            end = min(end + 1, len(lines))
            out.append(_defuse_code("".join(lines[i:end])))
            i = end
            continue
        found = _table_at(lines, i)
        if found is not None:
            flush()
            table, end = found
            out.append(table.render(lines[end - 1].endswith("\n")))
            i = end
            continue
        prose.append(lines[i])
        i += 1
    flush()
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Partial rendering while the answer streams


_MARKER_ONLY = re.compile(r"[ \t]*(?:[-+*=_#>~`|:]+|\d{1,9}[.)])?[ \t]*")
_TRAILING_MARKS = re.compile(r"[*_~\\]+\Z")
_URL_STARTS = ("http://", "https://", "mailto:")


def _punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def _partial_token(rest: str) -> bool:
    """Could ``"<" + rest`` still become a Slack token or a ``<https://…>`` link?"""
    if any(char in rest for char in "<>\n"):
        return False
    if not rest or rest[0] in "@#!":
        return True
    return any(start.startswith(rest) or rest.startswith(start) for start in _URL_STARTS)


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
            run = _run(text, j, stop)
            end = _code_span_end(text, j + run, run, stop)
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
            run = _run(block, i, stop)
            end = _code_span_end(block, i + run, run, stop)
            if end < 0:
                stop = i
                break
            i = end
        elif char == "<":
            token = _SLACK_TOKEN.match(block, i, stop)
            if token is not None:
                i = token.end()
            elif _partial_token(block[i + 1 : stop]):
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
            run = _run(block, i, stop)
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
        complete_flags = _table_flags(lines[:-1])
        if (
            _MARKER_ONLY.fullmatch(last)
            or last.lstrip().startswith("|")
            or (complete_flags and complete_flags[-1])
        ):
            lines.pop()
    flags = _table_flags(lines)
    if lines and not flags[-1] and lines[-1].lstrip().startswith("|"):
        lines.pop()  # a table header still waiting for its delimiter row
        flags.pop()
    if not lines or flags[-1] or _is_blank(lines[-1]):
        return "".join(lines)
    start = len(lines) - 1
    while (
        start > 0
        and not flags[start - 1]
        and not _is_blank(lines[start - 1])
        and not _starts_block(lines[start])
    ):
        start -= 1
    settled = "".join(lines[:start]) + _settle_inline("".join(lines[start:]))
    tail = settled.rfind("\n") + 1
    # What was held back (say a backtick) may have kept the last line from opening a fence.
    return settled[:tail] if _fence_open(settled[tail:]) else settled


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
    lines = _lines(md_prefix)
    fence: _Fence | None = None
    opener = 0
    prose_from = 0  # first line after the last closed fence
    for k, line in enumerate(lines if _may_fence(md_prefix) else ()):
        content = line.rstrip("\n")
        if fence is None:
            fence = _fence_open(content)
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


# ----------------------------------------------------------------------------------------------
# Splitting a long answer into messages


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

    def __init__(self, fence: _Fence | None) -> None:
        self.fence = fence
        self.fixed = _code_size(fence.opener) + 1 if fence else 0
        self.table: _Table | None = None
        self.header: str | None = None  # a line a delimiter row would turn into a table header
        self.header_table = 0

    def context(self) -> str:
        """What an incomplete next line is, for choosing cuts: code, table (or maybe), or text."""
        if self.fence is not None:
            return "code"
        return "row" if self.table is not None or self.header is not None else "text"

    def bound(self, partial: str) -> int:
        if self.fence is not None:
            return self.fixed + _code_size(partial) + len(self.fence.closer) + 2
        if self.table is not None:
            size = self.table.length(True) + _escaped_size(partial)
            if "|" in partial:
                size = max(size, self.table.length(False, _cells(partial)))
            return self.fixed + size
        if self.header is not None:  # a delimiter row would make it a table
            as_text = _escaped_size(self.header) + _escaped_size(partial)
            return self.fixed + (max(as_text, self.header_table) if partial else as_text)
        return self.fixed + _escaped_size(partial)

    def add(self, line: str) -> str:
        """Take a complete line; return its kind: open, code, close, row, header, sep, text."""
        content = line[:-1]
        if self.fence is not None:
            self.fixed += _code_size(line)
            if self.fence.closed_by(content):
                self.fence = None
                return "close"
            return "code"
        if self.table is not None:
            if _is_row(content):
                self.table.add_row(_cells(content))
                return "row"
            self.fixed += self.table.length(True)
            self.table = None
        if self.header is not None:
            header, self.header = self.header, None
            cells = _cells(header[:-1])
            aligns = _separator_aligns(content, len(cells))
            if aligns is not None:
                self.table = _Table(_indent(header), cells, aligns)
                return "sep"
            self.fixed += _escaped_size(header)
        fence = _fence_open(content)
        if fence is not None:
            self.fence = fence
            self.fixed += _code_size(line)
            return "open"
        if "|" in content:
            self.header = line
            cells = _cells(content)
            self.header_table = _Table(_indent(content), cells, ["left"] * len(cells)).length(False)
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


def _grapheme_break(md: str, c: int) -> bool:
    """Is ``c`` (0 < c < len(md)) between two grapheme clusters, as far as practical?"""
    before, after = md[c - 1], md[c]
    if _zero_width(after) or before == _ZWJ or (before == "\r" and after == "\n"):
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
                step = _run(content, i)
                ticks = 0 if step == ticks else ticks
        elif token >= 0 and char not in "<>":
            if i - token <= 8 and not _partial_token(content[token + 1 : i + 1]):
                token = -1
                continue  # not a token after all: read this character again
        elif token >= 0:
            token = i if char == "<" else -1
        elif char == "\\":
            step = 2
        elif parens:
            parens += {"(": 1, ")": -1}.get(char, 0)
        elif char == "`":
            ticks = step = _run(content, i)
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
    if previous.kind != "close" and _is_blank(previous.content):
        return 8  # a paragraph break
    return 6


def _first_cuttable(content: str) -> int:
    """Smallest k at which a line may be cut mid-line: never in its indentation or in what is,
    or could still become, a fence line (a part must not open or close a fence by accident)."""
    if _FENCE_LINE_START.match(content):
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
                if not (protected and protected[k]) and _grapheme_break(md, line.start + k):
                    ranked[2 if line.kind != "code" else 1].append(line.start + k)
        for guarded in (False, True):
            for k in range(last, first - 1, -1):
                c = line.start + k
                # the next part must not start with a fence by accident
                if md[c] in " \t`~" or not _grapheme_break(md, c):
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
    fence = _fence_at(md, start)
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
    opened = _fence_at(md, start)
    head = opened.opener + "\n" if opened else ""
    if end is None:
        return head + md[start:]
    closing = _fence_at(md, end)
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
            fence = _fence_at(part, last_start)
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


# ----------------------------------------------------------------------------------------------
# Usage footer and notes


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
) -> str:
    """``Tokens: 1,234 in, 567 out`` then `` · ``-separated extras (cache, time, model, cost,
    left-out history) on the same line."""
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
    return " · ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def interrupted_note(reason: str | None) -> str:
    """``[interrupted]`` or ``[interrupted: reason]``: the last line of an interrupted message."""
    reason = _one_line(reason or "")
    return f"[interrupted: {reason}]" if reason else "[interrupted]"


def _is_interrupted_note(note: str) -> bool:
    return note.startswith("[interrupted")


_STOP_NOTES = {
    "max_tokens": "_(truncated: reached the output limit)_",
    "model_context_window_exceeded": "_(truncated: the conversation is too long)_",
    "tool_use": "_(stopped: Claude asked to use a tool, which this bot does not run)_",
    "pause_turn": "_(paused by Claude before finishing)_",
}


def stop_reason_note(stop_reason: str | None, stop_details: dict[str, Any] | None) -> str | None:
    """What a user should read after an answer that stopped for ``stop_reason``; None when it
    finished normally (and for None, which the caller treats as an interruption)."""
    if stop_reason is None or stop_reason in ("end_turn", "stop_sequence"):
        return None
    if stop_reason == "refusal":
        explanation = (stop_details or {}).get("explanation")
        note = "_Claude declined to answer._"
        return f"{note} {_one_line(explanation)}" if isinstance(explanation, str) else note
    return _STOP_NOTES.get(stop_reason, f"_(stopped: {_one_line(stop_reason)})_")


# ----------------------------------------------------------------------------------------------
# Slack payloads


@dataclass(frozen=True)
class SlackPayload:
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


def _escape_mrkdwn(text: str, mentions: Mentions = NO_MENTIONS) -> str:
    """Escape & < > for mrkdwn text; Slack tokens shown as ``mentions`` allows (``_tame``)."""
    out: list[str] = []
    begin = 0
    for token in _SLACK_TOKEN.finditer(text):
        out.append(_escape_plain(text[begin : token.start()]))
        out.append(_tame(token[0], mentions, markdown=False))
        begin = token.end()
    out.append(_escape_plain(text[begin:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    return re.sub(r"&(amp|lt|gt);", lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m[1]], text)


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
        cut = room
        while 0 < cut < len(text) and not _grapheme_break(text, cut):
            cut -= 1
    for opening, closing in (("&", ";"), ("<", ">")):
        at = text.rfind(opening, 0, cut)
        if at >= 0 and closing not in text[at:cut]:
            cut = at
    return text[:cut].rstrip() + "…"


_FENCE_LINE = re.compile(r"^[ \t]*(?:`{3,}|~{3,}).*\n?", re.MULTILINE)
_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\(([^()\s]*)(?:\s+\"[^\"\n]*\")?\)")
_EMPHASIS = re.compile(r"\*\*|__|~~")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.MULTILINE)


_BLANK_LINES = re.compile(r"\n{3,}")


def _plain(md: str) -> str:
    """Markdown read as plain text, for the ``text`` fallback (notifications, screen readers).
    Each rewrite runs only when its marker occurs: this runs on every streaming edit."""
    text = _FENCE_LINE.sub("", md) if _may_fence(md) else md
    if "](" in text:
        text = _MD_LINK.sub(lambda m: m[2] if not m[1] or _misleading(m[1], m[2]) else m[1], text)
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
    return _truncate(_escape_mrkdwn(_plain(md), mentions), limit)


def _within(render: Callable[[str], str], body_md: str, room: int) -> str:
    """``render(body_md)`` within ``room`` characters; should it not fit (callers split long
    answers first), the body is cut at a clean point and a note says so."""
    out = render(body_md)
    budget = room - len(_CUT_SHORT_NOTE) - 2
    while len(out) > room and budget > 0:
        cut = next_cut(body_md, budget) or len(body_md)
        out = render(part_text(body_md, 0, cut)).rstrip() + "\n\n" + _CUT_SHORT_NOTE
        budget -= max(len(out) - room, 0) + 64
    return out if len(out) <= room else _CUT_SHORT_NOTE


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
    body_md_prefix: str, *, answer_id: str | None, mentions: Mentions = NO_MENTIONS
) -> SlackPayload:
    """An intermediate edit: the answer so far, rendered safely, and the Stop button."""
    shown = _within(partial(render_partial, mentions=mentions), body_md_prefix, MARKDOWN_LIMIT)
    blocks = [_markdown_block(shown if shown.strip() else "…")]
    if answer_id:
        blocks.append(_stop_block(answer_id))
    text = _fallback_text(body_md_prefix, mentions=mentions)
    return SlackPayload(text=text or "…", blocks=blocks)


def final_payload(
    body_md: str,
    *,
    footer: str | None,
    notes: Sequence[str] = (),
    answer_id: str | None = None,
    mentions: Mentions = NO_MENTIONS,
) -> SlackPayload:
    """The finished message: body and notes, footer, then ``[interrupted…]`` if among the notes.

    No Stop button (``answer_id`` is accepted for symmetry with the other payloads). An empty body
    is fine: then only the notes and the footer show. ``mentions`` applies to the notes too (a
    refusal's explanation is Claude's text; ``stopped by <@U…>`` shows the name it gives).
    """
    del answer_id
    show = partial(to_slack_markdown, mentions=mentions)
    ends = [_truncate(_one_line(note), 500) for note in notes if _is_interrupted_note(note)]
    plain_notes = [_truncate(note, _NOTE_LIMIT) for note in notes if not _is_interrupted_note(note)]
    notes_md = _truncate("\n\n".join(map(show, plain_notes)), 2 * _NOTE_LIMIT)
    ends_md = [show(end) for end in ends]
    room = MARKDOWN_LIMIT - len(notes_md) - sum(map(len, ends_md)) - 2
    body = _within(show, body_md.rstrip(), room) if body_md.strip() else ""
    main = "\n\n".join(part for part in (body, notes_md) if part)
    if not main and not ends:
        main = _NO_TEXT_NOTE
    blocks: list[dict[str, Any]] = []
    if main:
        blocks.append(_markdown_block(main))
    if footer:
        blocks.append(_context_block(_escape_mrkdwn(_truncate(footer, _NOTE_LIMIT), mentions)))
    blocks.extend(_markdown_block(end) for end in ends_md)

    tail = "\n".join([*([_truncate(footer, _NOTE_LIMIT)] if footer else []), *ends])
    extras = "\n\n".join(_plain(note) for note in plain_notes)
    fixed = _escape_mrkdwn("\n\n".join(part for part in (extras, tail) if part), mentions)
    excerpt = _fallback_text(body_md, max(TEXT_FALLBACK_LIMIT - len(fixed) - 2, 0), mentions)
    text = "\n\n".join(part for part in (excerpt, fixed) if part) or _plain(_NO_TEXT_NOTE)
    return SlackPayload(text=_truncate(text, TEXT_FALLBACK_LIMIT), blocks=blocks)


def _closed(body_md: str) -> str:
    """``body_md`` with a code fence left open at its end closed."""
    fence = _fence_at(body_md + "\n", len(body_md) + 1)
    if fence is None:
        return body_md
    return body_md + ("" if body_md.endswith("\n") else "\n") + fence.closer


def continued_payload(body_md: str, *, mentions: Mentions = NO_MENTIONS) -> SlackPayload:
    """A finished part of a long answer that goes on in the next message: no footer, a hint."""
    body = _within(partial(to_slack_markdown, mentions=mentions), _closed(body_md), MARKDOWN_LIMIT)
    return SlackPayload(
        text=_fallback_text(body_md, mentions=mentions) or "…",
        blocks=[_markdown_block(body if body.strip() else "…"), _context_block(_CONTINUED_HINT)],
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
    text = _escape_mrkdwn(_plain(md), mentions) or "…"
    pieces: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind("\n\n", 0, limit), text.rfind("\n", 0, limit))
        if cut < limit // 2:
            cut = text.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
            while 0 < cut < len(text) and not _grapheme_break(text, cut):
                cut -= 1
        for opening, closing in (("&", ";"), ("<", ">")):
            at = text.rfind(opening, 0, cut)
            if at > 0 and closing not in text[at:cut]:
                cut = at
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return [piece for piece in pieces if piece] or ["…"]


# ----------------------------------------------------------------------------------------------
# Reading an answer back from Slack


_NOTE_LINE = re.compile(
    r"\[interrupted(?:: .*)?\]"
    r"|Tokens: [\d,]+ in, [\d,]+ out.*"
    r"|_\((?:truncated: |stopped: |paused by Claude|answer cut short|no answer text).*\)_"
    r"|_Claude declined to answer\._.*"
)


def _strip_notes(text: str) -> str:
    lines = text.rstrip().split("\n")
    while lines and (_is_blank(lines[-1]) or _NOTE_LINE.fullmatch(lines[-1].strip())):
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
    markdown blocks (else rich_text blocks, else ``text``) without footer, notes and
    ``[interrupted…]``, with Slack's escapes undone, and never a live broadcast token (what
    Claude reads here it may write again)."""
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
