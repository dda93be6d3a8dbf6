"""An image from Slack, made fit for Claude: decoded, scaled down when it is over Claude's limits,
re-encoded. Pure (bytes in, bytes out) and CPU-bound: callers run it in a worker thread.

Claude takes PNG, JPEG, GIF and WebP images up to 5 MB (of base64) each, and scales down any
whose long edge is over 1,568 px itself; sending them already scaled cuts the upload, the
request's size, the tokens (about width × height / 750) and the latency. So:

- an image within the limits goes as it is, once it has been decoded whole (a truncated or
  corrupt file is refused here, not by Claude, which would fail the whole answer);
- a larger one keeps its aspect ratio and is scaled so its long edge is at most 1,568 px,
  turned upright by its EXIF orientation (the re-encoded copy carries no EXIF), resampled
  bicubically (`thumbnail`, which first shrinks by whole factors where it can), then encoded as
  PNG if it has transparency, else as JPEG at quality 85; it shrinks further until it is
  within 5 MB. A JPEG is decoded straight at a reduced scale (libjpeg's DCT scaling), so a
  12-megapixel photo never exists in memory at full size.

`ImageError` says, in a few words for the answer's closing line, why an image was not sent.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_EDGE = 1568  # Claude's recommended long edge: larger images are scaled down by Claude anyway
MAX_BASE64_BYTES = 5 * 1024 * 1024  # Claude's limit per image, on the base64 text it is sent as
# Pixels decoded at most for an image that is not a JPEG (a JPEG is decoded at a reduced scale):
# a small PNG can claim a huge canvas, and decoding it whole would take gigabytes.
MAX_DECODED_PIXELS = 64_000_000
JPEG_QUALITY = 85
PNG_COMPRESS_LEVEL = 3  # speed over the last few percent of size: the image is sent once
SHRINK_STEP = 0.75  # each further step when an encoded image is still over the size limit

MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_ROTATED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """Why an image cannot go to Claude, in a few words (it "cannot be decoded")."""


@dataclass(frozen=True)
class PreparedImage:
    media_type: str
    data: bytes
    width: int
    height: int
    scaled: bool  # re-encoded (scaled down, turned upright or made smaller)

    @property
    def tokens(self) -> int:
        return image_tokens(self.width, self.height)


def image_tokens(width: int, height: int) -> int:
    """Claude's own estimate of an image's input tokens."""
    return max(1, math.ceil(width * height / 750))


def base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def fitted(width: int, height: int, edge: int = MAX_EDGE) -> tuple[int, int]:
    """(width, height) scaled to a long edge of at most `edge`, aspect ratio kept."""
    scale = min(1.0, edge / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare_image(data: bytes) -> PreparedImage:
    """`data` as Claude may take it (see the module docstring); ImageError if it cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _prepare(data)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("cannot be decoded") from None
    except Exception:  # a decoder's own bug on a hostile file (IndexError, struct.error, …)
        raise ImageError("cannot be decoded") from None


def _prepare(data: bytes) -> PreparedImage:
    image = Image.open(io.BytesIO(data))
    fmt = image.format or ""
    if fmt not in MEDIA_TYPES:
        raise ImageError("is not a PNG, JPEG, GIF or WebP")
    width, height = image.size
    if fmt != "JPEG" and width * height > MAX_DECODED_PIXELS:
        raise ImageError("has too many pixels")
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    fits = max(width, height) <= MAX_EDGE and base64_length(len(data)) <= MAX_BASE64_BYTES
    if fits and orientation in (1, None):
        image.load()  # decoded whole: a truncated or corrupt file fails here
        return PreparedImage(MEDIA_TYPES[fmt], data, width, height, scaled=False)
    if fmt == "JPEG":
        image.draft("RGB", fitted(width, height))  # decode at the smallest scale still big enough
    image.load()
    # (`or image`: Pillow before 11.2 types the result as optional.)
    upright = (ImageOps.exif_transpose(image) or image) if orientation not in (1, None) else image
    # Bicubic: within a few percent of Lanczos to the eye, a third faster on a large photo.
    upright.thumbnail((MAX_EDGE, MAX_EDGE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return _encoded(upright)


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA"):
        low = image.getchannel("A").getextrema()[0]  # one band: (lowest, highest)
        return isinstance(low, int | float) and low < 255
    return image.mode == "P" and "transparency" in image.info


def _encoded(image: Image.Image) -> PreparedImage:
    """PNG if transparent, else JPEG; smaller and smaller until within the size limit."""
    transparent = _has_alpha(image)
    if transparent:
        image = image.convert("RGBA")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    while True:
        out = io.BytesIO()
        if transparent:
            image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        else:
            image.save(out, "JPEG", quality=JPEG_QUALITY)
        data = out.getvalue()
        if base64_length(len(data)) <= MAX_BASE64_BYTES or max(image.size) <= 64:
            break
        smaller = (max(1, int(image.width * SHRINK_STEP)), max(1, int(image.height * SHRINK_STEP)))
        image = image.resize(smaller, Image.Resampling.BICUBIC)
    media_type = MEDIA_TYPES["PNG" if transparent else "JPEG"]
    return PreparedImage(media_type, data, image.width, image.height, scaled=True)
