"""Files in a Slack thread as Claude content blocks, and the line naming the files left out.

Pure policy, no I/O: `bot.files` downloads (and caches) what this module decides to send.

- What a file is (`kind_of`): an image (PNG, JPEG, GIF, WebP: `image` blocks), a PDF (a base64
  `document` block), text-like (plain text, Markdown, CSV, JSON, YAML, logs, source code, by
  MIME type and extension: a text `document` block), or anything else (video, audio, archives,
  Office files …), which is not sent.
- Each becomes an `Attachment` of the Slack message it was posted with: its Claude block (None
  when left out), what it costs in tokens (Claude's own estimates: width × height / 750 for an
  image, about 3,000 a PDF page), and, when it is left out or cut, why.
- The answer ends with one short line naming the files left out and why (`closing_note`).
"""

from __future__ import annotations

import base64
import math
import re
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

Block = dict[str, Any]

PDF_MEDIA_TYPE = "application/pdf"
MAX_PDF_PAGES = 100  # Claude's limit per request, over every PDF of the request
PDF_TOKENS_PER_PAGE = 3_000  # Claude: 1,500-3,000 text tokens a page, plus the page's image
# The base64 of every file sent in one request, within Claude's 32 MB request limit with room
# for the rest of the conversation.
MAX_REQUEST_FILE_BYTES = 30_000_000
MAX_IMAGES = 100  # Claude's limit per request
MAX_NAME = 80  # characters of a file name shown to Claude and in the closing line
MAX_NOTE_NAMES = 5  # file names in the closing line; the rest are counted

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp"})
TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ld+json",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-shellscript",
        "application/sql",
        "application/x-python",
        "application/x-python-code",
        "application/graphql",
    }
)
TEXT_EXTENSIONS = frozenset(
    {
        # prose and data
        "txt", "text", "md", "markdown", "rst", "adoc", "org", "tex", "csv", "tsv", "json",
        "jsonl", "ndjson", "yaml", "yml", "toml", "ini", "cfg", "conf", "env", "properties",
        "xml", "html", "htm", "svg", "log", "out", "err", "diff", "patch", "srt", "vtt",
        # source code
        "py", "pyi", "ipynb", "js", "mjs", "cjs", "jsx", "ts", "tsx", "go", "rs", "java", "kt",
        "kts", "scala", "groovy", "gradle", "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs",
        "fs", "swift", "m", "mm", "rb", "php", "pl", "pm", "lua", "r", "jl", "dart", "ex",
        "exs", "erl", "hs", "ml", "clj", "sh", "bash", "zsh", "fish", "ps1", "bat", "sql",
        "graphql", "proto", "tf", "hcl", "nix", "dockerfile", "makefile", "cmake", "css",
        "scss", "less", "vue", "svelte", "lock",
    }
)  # fmt: skip
# Slack's own `filetype` for snippets and posts it shows as text.
TEXT_FILETYPES = frozenset({"text", "markdown", "post", "csv", "json", "yaml", "xml", "diff"})
_OTHER_KINDS = (
    (("video/",), "a video"),
    (("audio/",), "audio"),
    (
        (
            "application/zip",
            "application/x-zip",
            "application/gzip",
            "application/x-gzip",
            "application/x-tar",
            "application/x-7z",
            "application/x-rar",
            "application/vnd.rar",
            "application/x-bzip",
            "application/x-xz",
        ),
        "an archive",
    ),
    (
        (
            "application/msword",
            "application/vnd.ms-",
            "application/vnd.openxmlformats-officedocument",
            "application/vnd.oasis.opendocument",
            "application/vnd.apple.",
            "application/rtf",
        ),
        "an Office document",
    ),
    (("image/",), "an image type Claude does not read"),
)
_ARCHIVE_EXTENSIONS = frozenset({"zip", "gz", "tgz", "tar", "7z", "rar", "bz2", "xz"})
_OFFICE_EXTENSIONS = frozenset(
    {"doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "rtf", "pages", "key"}
)


class Kind(StrEnum):
    IMAGE = "image"
    PDF = "pdf"
    TEXT = "text"
    OTHER = "other"


@dataclass(frozen=True)
class Attachment:
    """One file of one Slack message, as it goes to Claude (or why it does not)."""

    file_id: str
    name: str
    kind: Kind
    block: Block | None = None  # None: left out
    tokens: int = 0  # estimated input tokens of `block`
    sent_bytes: int = 0  # base64 characters of `block`'s data (toward the request limit)
    pages: int = 0  # a PDF's pages (toward Claude's per-request limit)
    reason: str = ""  # why it was left out, or cut (then `block` is set)

    @property
    def sent(self) -> bool:
        return self.block is not None

    def left_out(self, reason: str) -> Attachment:
        return replace(self, block=None, tokens=0, sent_bytes=0, pages=0, reason=reason)


# -- what a file is ---------------------------------------------------------------------------


def file_name(file: Mapping[str, Any]) -> str:
    """A file's name as people see it, safe to show: one line, no brackets or backticks."""
    raw = str(file.get("name") or file.get("title") or file.get("id") or "file")
    visible = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in raw)
    cleaned = re.sub(r"[\[\]`<>|]", "", " ".join(visible.split()))[:MAX_NAME].strip()
    return cleaned or "file"


def extension(name: str) -> str:
    suffix = PurePosixPath(name.lower()).suffix.lstrip(".")
    return suffix or PurePosixPath(name.lower()).name  # "Dockerfile", "Makefile"


def kind_of(file: Mapping[str, Any]) -> tuple[Kind, str]:
    """What a file is to Claude, by its MIME type, Slack's filetype and its extension, and for
    one that is not sent, a few words saying what it is ("a video")."""
    mime = str(file.get("mimetype") or "").lower().split(";")[0].strip()
    ext = extension(str(file.get("name") or file.get("title") or ""))
    filetype = str(file.get("filetype") or "").lower()
    if mime in IMAGE_TYPES or (not mime and ext in IMAGE_EXTENSIONS):
        return Kind.IMAGE, ""
    if mime == PDF_MEDIA_TYPE or filetype == "pdf" or (not mime and ext == "pdf"):
        return Kind.PDF, ""
    if (
        mime.startswith("text/")
        or mime in TEXT_TYPES
        or mime.endswith(("+json", "+xml"))
        or filetype in TEXT_FILETYPES
        or ext in TEXT_EXTENSIONS
    ):
        return Kind.TEXT, ""
    for prefixes, what in _OTHER_KINDS:
        if mime.startswith(prefixes):
            return Kind.OTHER, what
    if ext in _ARCHIVE_EXTENSIONS:
        return Kind.OTHER, "an archive"
    if ext in _OFFICE_EXTENSIONS:
        return Kind.OTHER, "an Office document"
    return Kind.OTHER, "a file type Claude does not read"


def unavailable(file: Mapping[str, Any]) -> str | None:
    """Why Slack gives no content for this file (deleted, hidden, stored elsewhere), or None."""
    mode = str(file.get("mode") or "")
    if mode == "tombstone" or file.get("is_deleted"):
        return "deleted"
    if mode == "hidden_by_limit":
        return "hidden by the workspace's plan"
    if mode == "external" or file.get("is_external"):
        return "stored outside Slack"
    return None


# -- blocks -----------------------------------------------------------------------------------


def image_block(media_type: str, data: bytes) -> Block:
    encoded = base64.b64encode(data).decode("ascii")
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": encoded},
    }


def pdf_block(data: bytes, name: str) -> Block:
    encoded = base64.b64encode(data).decode("ascii")
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": PDF_MEDIA_TYPE, "data": encoded},
        "title": name,
    }


def text_block(text: str, name: str) -> Block:
    return {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": text or "(empty file)"},
        "title": name,
    }


def block_data_length(block: Block) -> int:
    return len(str((block.get("source") or {}).get("data") or ""))


# -- PDFs -------------------------------------------------------------------------------------

_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm(?![a-zA-Z])")
_STREAM_START = re.compile(rb"(?<!end)stream\r?\n")
_ENCRYPTED = re.compile(rb"/Encrypt\s+(?:\d+\s+\d+\s+R|<<)")


def pdf_problem(data: bytes) -> str | None:
    """Why Claude cannot read this PDF (not a PDF, password-protected), or None."""
    if b"%PDF-" not in data[:1024]:
        return "not a readable PDF"
    if _ENCRYPTED.search(data):
        return "a password-protected PDF"
    return None


def pdf_pages(data: bytes) -> int | None:
    """The pages of a PDF, counted from its page objects, also those packed in compressed
    object streams; None when none are found (an unusual layout: the caller estimates)."""
    pages = len(_PAGE.findall(data))
    for match in _OBJECT_STREAM.finditer(data):
        # The stream's data follows its dictionary, which names its type.
        start = _STREAM_START.search(data, match.end(), match.end() + 2000)
        end = data.find(b"endstream", start.end()) if start else -1
        if start is None or end < 0:
            continue
        try:
            packed = zlib.decompressobj().decompress(data[start.end() : end], 50_000_000)
        except zlib.error:
            continue
        pages += len(_PAGE.findall(packed))
    return pages or None


def pdf_tokens(pages: int) -> int:
    return pages * PDF_TOKENS_PER_PAGE


def estimated_pdf_pages(size: int) -> int:
    """A PDF's pages when they could not be counted: about one for every 50 kB."""
    return max(1, math.ceil(size / 50_000))


# -- text -------------------------------------------------------------------------------------


def decode_text(data: bytes, *, complete: bool) -> str | None:
    """The text of a text-like file (UTF-8, or UTF-16 with its byte-order mark); None for
    binary content. `complete` False: `data` is the start of a longer file, so a character cut
    at its end is dropped rather than shown as a replacement character."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:8192]:
        return None
    text = data.decode("utf-8-sig", errors="replace")
    if not complete and text.endswith("\ufffd"):
        text = text.rstrip("\ufffd")
    return text


def cut_text(text: str, limit: int, *, more: bool) -> tuple[str, bool]:
    """The first `limit` characters of `text`, with a note for Claude when it was cut; `more`
    says the file went on beyond `text`. Returns (text, cut)."""
    if len(text) <= limit and not more:
        return text, False
    kept = text[:limit]
    return kept + f"\n\n[… cut here: only the first {len(kept):,} characters are shown …]", True


# -- the closing line -------------------------------------------------------------------------


def closing_note(attachments: Iterable[Attachment]) -> str | None:
    """One short line naming the files left out, and those cut, each with why, or None:
    ``_Not read: `clip.mp4` (a video). Read in part: `app.log` (cut to 100,000 characters)._``
    """
    named = [a for a in attachments if a.reason]
    if not named:
        return None
    shown = named[:MAX_NOTE_NAMES]
    parts = []
    for heading, files in (
        ("Not read", [a for a in shown if not a.sent]),
        ("Read in part", [a for a in shown if a.sent]),
    ):
        if files:
            parts.append(f"{heading}: " + ", ".join(f"`{a.name}` ({a.reason})" for a in files))
    if len(named) > len(shown):
        parts.append(f"And {len(named) - len(shown)} more")
    return "_" + " ".join(part + "." for part in parts) + "_"


def files_line(attachments: Sequence[Attachment]) -> str:
    """What a message's text tells Claude about its files: their names in order, and for a
    file left out, why (so Claude knows what it was not shown)."""
    if not attachments:
        return ""
    parts = [f"{a.name} ({a.reason})" if a.reason else a.name for a in attachments]
    return f"[attached: {', '.join(parts)}]"
