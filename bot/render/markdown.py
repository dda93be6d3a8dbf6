"""Claude's Markdown → the text of Slack's ``markdown`` block (``to_slack_markdown``).

Why a ``markdown`` block: the answer body goes into ONE ``{"type": "markdown"}`` block. Slack
renders standard Markdown there itself (bold, italics, strike, links, lists, headings, quotes,
inline and fenced code), so translating to mrkdwn would only lose information. What Slack does
not do for us is done here, outside code: escaping ``&<>`` (keeping blockquote markers), taming
Slack tokens and misleading links (``tokens``) and drawing tables (``tables``); code, fenced or
inline, is left as written apart from ``fences.defuse_code``.
"""

from __future__ import annotations

import re
import string

from bot.render.fences import (
    code_span_end,
    defuse_code,
    fence_open,
    is_blank,
    may_fence,
    run_length,
    split_lines,
)
from bot.render.tables import table_at
from bot.render.tokens import (
    MD_LINK,
    NO_MENTIONS,
    SLACK_TOKEN,
    Mentions,
    escape_plain,
    misleading,
    tame,
)

_SPECIAL = re.compile(r"[\\`<>&\n\[]")
_QUOTE_MARKERS = re.compile(r"[ \t]*>(?:[ \t]*>)*")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BLOCK_START = re.compile(r"[ \t]*(?:[-+*](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|#{1,6}(?:[ \t]|$)|>)")


def starts_block(line: str) -> bool:
    return _BLOCK_START.match(line) is not None


def _inline_blocks(lines: list[str]) -> list[str]:
    """Group prose lines into blocks (paragraphs, list items, headings, quotes); inline syntax
    such as code spans never crosses a block."""
    blocks: list[list[str]] = []
    previous_blank = True
    for line in lines:
        blank = is_blank(line)
        if previous_blank or blank or starts_block(line):
            blocks.append([line])
        else:
            blocks[-1].append(line)
        previous_blank = blank
    return ["".join(block) for block in blocks]


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
            run = run_length(text, j)
            end = code_span_end(text, j + run, run)
            i = j + run if end < 0 else end
            out.append(defuse_code(text[j:i]))
        elif char == "<" and (token := SLACK_TOKEN.match(text, j)) is not None:
            out.append(tame(token[0], mentions, markdown=True))
            i = token.end()
        elif char == "[":
            link = MD_LINK.match(text, j)
            if link is not None and misleading(link[1], link[2]):
                target = escape_plain(link[2])
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
    lines = split_lines(md)
    if not may_fence(md) and "|" not in md:  # plain prose, the usual case: escaping only
        return "".join(_escape_block(block, mentions) for block in _inline_blocks(lines))
    out: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        out.extend(_escape_block(block, mentions) for block in _inline_blocks(prose))
        prose.clear()

    i = 0
    while i < len(lines):
        fence = fence_open(lines[i].rstrip("\n"))
        if fence is not None:
            flush()
            end = i + 1
            while end < len(lines) and not fence.closed_by(lines[end].rstrip("\n")):
                end += 1
            end = min(end + 1, len(lines))
            out.append(defuse_code("".join(lines[i:end])))
            i = end
            continue
        found = table_at(lines, i)
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
