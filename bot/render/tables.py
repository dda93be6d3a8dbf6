"""Markdown tables drawn as fenced monospace blocks with aligned columns.

Slack's markdown block does not render tables reliably, so a table becomes a code block whose
columns line up: CJK characters and emoji count as two columns, zero-width characters as none.
A table's drawn length is known without drawing it, which lets the splitter size a part exactly.
"""

from __future__ import annotations

import re
import unicodedata

from bot.render.fences import defuse_code, fence_open, longest_ticks

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_SEPARATOR_CELL = re.compile(r":?-+:?")


def indent_of(content: str) -> str:
    return content[: len(content) - len(content.lstrip())]


def split_cells(content: str) -> list[str]:
    row = content.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(row)]


def separator_aligns(content: str, columns: int) -> list[str] | None:
    """Column alignments when ``content`` is a table's delimiter row for ``columns`` columns."""
    if "|" not in content:
        return None
    cells = split_cells(content)
    if len(cells) != columns or not all(_SEPARATOR_CELL.fullmatch(cell) for cell in cells):
        return None
    return [
        ("center" if cell.startswith(":") else "right") if cell.endswith(":") else "left"
        for cell in cells
    ]


def zero_width(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me", "Cf") or "\U0001f3fb" <= char <= "\U0001f3ff"


def display_width(text: str) -> int:
    """Columns ``text`` takes in a monospace font: wide East Asian characters and emoji take two."""
    return sum(
        0 if zero_width(char) else 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        for char in text
    )


_CELL_CODE = re.compile(r"(`+)(.+?)\1")
_CELL_LINK = re.compile(r"\[([^\]]*)\]\(([^()\s]*)\)")
_CELL_STRONG = re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1")


def _cell_prose(text: str) -> str:
    text = _CELL_LINK.sub(lambda m: f"{m[1]} ({m[2]})" if m[1] and m[1] != m[2] else m[2], text)
    return _CELL_STRONG.sub(r"\2", text)


def _cell_text(cell: str) -> str:
    """A cell as shown in monospace: code spans, links and bold/strike markers unwrapped.
    Never longer than ``code_size`` of the cell's source (the bound a partial row counts)."""
    out: list[str] = []
    begin = 0
    for span in _CELL_CODE.finditer(cell):
        out.append(_cell_prose(cell[begin : span.start()]))
        out.append(span[2])
        begin = span.end()
    out.append(_cell_prose(cell[begin:]))
    return defuse_code("".join(out))


def _pad(cell: str, width: int, align: str) -> str:
    gap = width - display_width(cell)
    if align == "right":
        return " " * gap + cell
    if align == "center":
        return " " * (gap // 2) + cell + " " * (gap - gap // 2)
    return cell + " " * gap


class Table:
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
            width = display_width(cell)
            widths[column] = max(widths[column], width)
            extra += len(cell) - width
            ticks = max(ticks, longest_ticks(cell))
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


def is_row(content: str) -> bool:
    """A table goes on while lines have a pipe, until a blank line or a code fence (as in GFM;
    it also keeps fences independent of tables)."""
    return "|" in content and fence_open(content) is None


def table_at(lines: list[str], i: int) -> tuple[Table, int] | None:
    """The table starting at line ``i`` (header, delimiter row, rows) and the line after it."""
    header = lines[i].rstrip("\n")
    if not is_row(header) or i + 1 >= len(lines):
        return None
    cells = split_cells(header)
    aligns = separator_aligns(lines[i + 1].rstrip("\n"), len(cells))
    if aligns is None:
        return None
    table = Table(indent_of(header), cells, aligns)
    end = i + 2
    while end < len(lines) and is_row(lines[end].rstrip("\n")):
        table.add_row(split_cells(lines[end].rstrip("\n")))
        end += 1
    return table, end


def table_flags(lines: list[str]) -> list[bool]:
    """Which of these (fence-free) lines belong to a table."""
    flags = [False] * len(lines)
    if not any("|" in line for line in lines):
        return flags  # every table row has a pipe
    i = 0
    while i < len(lines):
        found = table_at(lines, i)
        if found is None:
            i += 1
            continue
        flags[i : found[1]] = [True] * (found[1] - i)
        i = found[1]
    return flags
