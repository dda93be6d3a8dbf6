"""Lines, code fences and code spans: where Claude's text is code, which is shown as written.

Every other module reads this structure first: the renderer leaves code alone, the streaming
renderer closes a fence still open, and the splitter closes a fence at a cut and reopens it in the
next message. The one change code gets is ``defuse_code``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------
# Lines


def split_lines(text: str) -> list[str]:
    """Lines with their ``\\n``; only ``\\n`` ends a line (str.splitlines knows many more)."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def is_blank(line: str) -> bool:
    return not line.strip()


def run_length(text: str, i: int, stop: int | None = None) -> int:
    """Length of the run of ``text[i]`` starting at ``i`` (before ``stop``)."""
    end = len(text) if stop is None else stop
    j = i
    while j < end and text[j] == text[i]:
        j += 1
    return j - i


# ----------------------------------------------------------------------------------------------
# Code fences


_FENCE_OPEN = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")
FENCE_LINE_START = re.compile(r"[ \t]*(?:```|~~~)")


@dataclass(frozen=True)
class Fence:
    """An open code fence, kept as written so a cut can close it and reopen it the same way."""

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


def may_fence(text: str) -> bool:
    """False when no line of `text` can open or close a code fence: a fast test that lets the
    line-by-line fence scans be skipped for plain prose (they run on every streaming edit)."""
    return "```" in text or "~~~" in text


def fence_open(content: str) -> Fence | None:
    """The fence a line opens (CommonMark: a backtick fence's info string has no backtick)."""
    match = _FENCE_OPEN.fullmatch(content)
    if match is None or (match[2][0] == "`" and "`" in match[3]):
        return None
    return Fence(match[1], match[2], match[3])


def _next_fence(fence: Fence | None, content: str) -> Fence | None:
    if fence is None:
        return fence_open(content)
    return None if fence.closed_by(content) else fence


def fence_at(md: str, pos: int) -> Fence | None:
    """The fence open at ``pos``, judged by the complete lines before it."""
    fence: Fence | None = None
    begin = 0
    while (newline := md.find("\n", begin, pos)) >= 0:
        fence = _next_fence(fence, md[begin:newline])
        begin = newline + 1
    return fence


# ----------------------------------------------------------------------------------------------
# Code spans and code as shown


_TICKS = re.compile(r"`+")


def longest_ticks(text: str) -> int:
    return max((len(run) for run in _TICKS.findall(text)), default=0)


def code_span_end(text: str, begin: int, ticks: int, stop: int | None = None) -> int:
    """End of the code span whose opening run of ``ticks`` backticks ends at ``begin``; -1 if
    it has no closing run (then the backticks are literal)."""
    for run in _TICKS.finditer(text, begin, len(text) if stop is None else stop):
        if len(run[0]) == ticks:
            return run.end()
    return -1


# Code is shown as written, so nothing in it is escaped: an invisible word joiner after "<" keeps
# a broadcast or a mention there from being a Slack token. Case-insensitive and without the
# closing ">", to be safe rather than exact. Sizes count it: see `code_size`.
_TOKEN_IN_CODE = re.compile(r"<(?=!(?:here|channel|everyone|subteam)|@)", re.IGNORECASE)
_WORD_JOINER = "\u2060"


def defuse_code(code: str) -> str:
    return _TOKEN_IN_CODE.sub("<" + _WORD_JOINER, code) if "<" in code else code


def code_size(code: str) -> int:
    """Upper bound of ``len(defuse_code(code))``."""
    return len(code) + code.count("<")
