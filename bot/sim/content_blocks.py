"""What the simulated Claude accepts in `image` and `document` content blocks, and what they
cost: the checks of the Messages API a bot sending files could fail, with its error messages.

- `image`: `source` `{"type": "base64", "media_type": one of PNG, JPEG, GIF, WebP, "data"}`,
  valid base64 of an image of that very type, at most 5 MB of base64, at most 8,000 px a side;
  at most 100 images a request.
- `document`: a base64 PDF (`application/pdf`, data that starts as a PDF does) or plain text
  (`{"type": "text", "media_type": "text/plain", "data": "…"}`, not empty); optional `title`,
  `context`, `citations`; at most 100 PDF pages a request.
- Either may carry `cache_control`; no other field.

`media_tokens` and `without_media` let the simulated usage count an image as Claude does
(width × height / 750) rather than as the length of its base64.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import re
from typing import Any

from PIL import Image

IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
MAX_IMAGE_BASE64 = 5 * 1024 * 1024
MAX_IMAGE_SIDE = 8000
MAX_IMAGES = 100
MAX_PDF_PAGES = 100
PDF_PAGE_TOKENS = 3000
_IMAGE_FIELDS = frozenset({"type", "source", "cache_control"})
_DOCUMENT_FIELDS = frozenset({"type", "source", "title", "context", "citations", "cache_control"})
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def _decoded(data: Any) -> bytes | None:
    if not isinstance(data, str) or not data:
        return None
    return _decode(data)


@functools.lru_cache(maxsize=8)  # one request's blocks are read by several checks
def _decode(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def block_problem(where: str, block: Any) -> str | None:
    """The API's 400 message for a malformed image or document block at `where`
    (`messages.0.content.1`), else None; other block types are not judged here."""
    if not isinstance(block, dict) or block.get("type") not in ("image", "document"):
        return None
    kind = block["type"]
    extra = set(block) - (_IMAGE_FIELDS if kind == "image" else _DOCUMENT_FIELDS)
    if extra:
        return f"{where}.{kind}.{sorted(extra)[0]}: Extra inputs are not permitted"
    source = block.get("source")
    if not isinstance(source, dict):
        return f"{where}.{kind}.source: Field required"
    if kind == "image":
        return _image_problem(f"{where}.image.source", source)
    return _document_problem(f"{where}.document.source", source, block.get("title"))


def _image_problem(where: str, source: dict[str, Any]) -> str | None:
    if source.get("type") != "base64":
        return f"{where}.type: Input should be 'base64' (this simulator serves no URLs)"
    media_type = source.get("media_type")
    if media_type not in IMAGE_FORMATS:
        return (
            f"{where}.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    data = source.get("data")
    if isinstance(data, str) and len(data) > MAX_IMAGE_BASE64:
        return f"{where}.base64: image exceeds 5 MB maximum: {len(data)} bytes > {MAX_IMAGE_BASE64}"
    raw = _decoded(data)
    if raw is None:
        return f"{where}.base64.data: invalid base64 data"
    try:
        with Image.open(io.BytesIO(raw)) as image:
            found, (width, height) = image.format, image.size
            image.load()
    except Exception:
        return f"{where}.base64.data: Could not process image"
    if found != IMAGE_FORMATS[media_type]:
        return (
            f"{where}.base64.data: The image was specified using the {media_type} media type, "
            f"but it does not appear to be that type of image"
        )
    if max(width, height) > MAX_IMAGE_SIDE:
        limit = f"{MAX_IMAGE_SIDE} pixels"
        return f"{where}.base64.data: image dimensions exceed max allowed size: {limit}"
    return None


def _document_problem(where: str, source: dict[str, Any], title: Any) -> str | None:
    if title is not None and (not isinstance(title, str) or len(title) > 500):
        return f"{where[: -len('.source')]}.title: must be a string of at most 500 characters"
    kind = source.get("type")
    if kind == "text":
        if source.get("media_type") != "text/plain":
            return f"{where}.text.media_type: Input should be 'text/plain'"
        if not isinstance(source.get("data"), str) or not source["data"]:
            return f"{where}.text.data: text content must be non-empty"
        return None
    if kind != "base64":
        return f"{where}.type: Input should be 'base64', 'text' or 'content'"
    if source.get("media_type") != "application/pdf":
        return f"{where}.base64.media_type: Input should be 'application/pdf'"
    raw = _decoded(source.get("data"))
    if raw is None:
        return f"{where}.base64.data: invalid base64 data"
    if not raw.startswith(b"%PDF-"):
        return f"{where}.base64.data: The PDF specified was not valid."
    return None


def _media(body: Any) -> list[dict[str, Any]]:
    messages = body.get("messages") if isinstance(body, dict) else None
    return [
        block
        for message in messages or []
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") in ("image", "document")
    ]


def request_problem(body: Any) -> str | None:
    """The API's 400 message for a request over the per-request limits on files, else None."""
    media = _media(body)
    if sum(block["type"] == "image" for block in media) > MAX_IMAGES:
        return f"messages: too many images and documents: at most {MAX_IMAGES} images"
    if sum(_pdf_pages(block) for block in media) > MAX_PDF_PAGES:
        return f"A maximum of {MAX_PDF_PAGES} PDF pages may be provided."
    return None


def _pdf_pages(block: dict[str, Any]) -> int:
    source = block.get("source") or {}
    if block["type"] != "document" or source.get("media_type") != "application/pdf":
        return 0
    raw = _decoded(source.get("data")) or b""
    return max(1, len(_PAGE.findall(raw)))


def _image_size(block: dict[str, Any]) -> tuple[int, int]:
    raw = _decoded((block.get("source") or {}).get("data")) or b""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    except Exception:
        return 0, 0
    return int(width), int(height)


def media_tokens(body: Any) -> int:
    """Input tokens of the request's images and documents, as Claude estimates them."""
    total = 0
    for block in _media(body):
        if block["type"] == "image":
            width, height = _image_size(block)
            total += math.ceil(width * height / 750)
        elif (block.get("source") or {}).get("type") == "text":
            total += math.ceil(len(str(block["source"].get("data") or "")) / 3.5)
        else:
            total += PDF_PAGE_TOKENS * _pdf_pages(block)
    return total


def without_media(messages: Any) -> Any:
    """`messages` with the data of every image and document left out (for token estimates)."""
    if not isinstance(messages, list):
        return messages
    out = []
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            content = [
                {"type": block["type"]}
                if isinstance(block, dict) and block.get("type") in ("image", "document")
                else block
                for block in message["content"]
            ]
            message = {**message, "content": content}
        out.append(message)
    return out


def describe_media(body: Any) -> str:
    """What the last user message carried, in words ("1 image (image/jpeg, 1568×1176 px)"),
    or "" when it carried no file: the demo's simulated Claude says what it was shown."""
    messages = body.get("messages") if isinstance(body, dict) else None
    last = next(
        (m for m in reversed(messages or []) if isinstance(m, dict) and m.get("role") == "user"),
        None,
    )
    seen: list[str] = []
    for block in _media({"messages": [last]} if last else {}):
        source = block.get("source") or {}
        if block["type"] == "image":
            width, height = _image_size(block)
            seen.append(f"an image ({source.get('media_type')}, {width}×{height} px)")
        elif source.get("type") == "text":
            seen.append(f"a text file “{block.get('title') or 'untitled'}”")
        else:
            pages = _pdf_pages(block)
            seen.append(f"a PDF “{block.get('title') or 'untitled'}” ({pages} pages)")
    return "; ".join(seen)
