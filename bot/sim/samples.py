"""Sample files made on the spot, deterministic, for the demo, the tests and the benchmarks:
photos of a given size, images with transparency, PDFs of a given number of pages."""

from __future__ import annotations

import io
import zlib

from PIL import Image, ImageDraw


def photo(width: int = 4000, height: int = 3000, *, quality: int = 92, seed: int = 0) -> bytes:
    """A JPEG with a photo's texture (gradients, shapes and sensor-like noise), so it
    compresses like a camera's picture: about 4 MB for 12 megapixels at quality 92."""
    small = Image.new("RGB", (max(1, width // 8), max(1, height // 8)))
    draw = ImageDraw.Draw(small)
    for y in range(small.height):
        shade = (y * 255) // max(1, small.height - 1)
        draw.line([(0, y), (small.width, y)], fill=(shade, 120 + seed % 100, 255 - shade))
    for i in range(12):
        x, y = (i * 977 + seed * 131) % small.width, (i * 613 + seed * 71) % small.height
        r = 5 + (i * 37) % max(6, small.width // 6)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=((i * 70) % 256, (i * 40) % 256, 90))
    image = small.resize((width, height), Image.Resampling.BILINEAR)
    noise = Image.effect_noise((width, height), 48).convert("RGB")
    image = Image.blend(image, noise, 0.22)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def image(width: int, height: int, fmt: str = "PNG", *, transparent: bool = False) -> bytes:
    """A simple image (a diagonal gradient) in `fmt`; `transparent` makes half of it clear."""
    mode = "RGBA" if transparent else "RGB"
    picture = Image.linear_gradient("L").resize((width, height)).convert(mode)
    if transparent:
        alpha = Image.new("L", (width, height), 255)
        ImageDraw.Draw(alpha).rectangle([0, 0, width // 2, height], fill=0)
        picture.putalpha(alpha)
    out = io.BytesIO()
    picture.save(out, fmt)
    return out.getvalue()


def pdf(pages: int = 2, *, size: int = 0) -> bytes:
    """A PDF of `pages` pages (each a small picture); with `size`, the pictures are photos
    that make the file at least about that many bytes."""
    per_page = max(1, size // pages) if size else 0
    frames: list[Image.Image] = []
    for page in range(pages):
        if per_page:
            edge = max(200, int((per_page / 0.2) ** 0.5))  # a PDF page keeps ~0.2 bytes a pixel
            frames.append(Image.open(io.BytesIO(photo(edge, edge, seed=page))))
        else:
            frames.append(Image.new("RGB", (300, 400), (255, 255, 255 - page % 200)))
    out = io.BytesIO()
    frames[0].save(out, "PDF", save_all=True, append_images=frames[1:], resolution=150)
    return out.getvalue()


def pdf_with_object_streams(pages: int) -> bytes:
    """A PDF (1.5) whose page objects are packed in a compressed object stream, as many
    writers make them: no `/Type /Page` is visible in the file's bytes."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>"]
    objects += ["<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>" for _ in range(pages)]
    numbers = range(2, 3 + pages)
    body = b""
    offsets = []
    for obj in objects:
        offsets.append(len(body))
        body += obj.encode() + b"\n"
    header = " ".join(f"{n} {o}" for n, o in zip(numbers, offsets, strict=True)).encode() + b"\n"
    packed = zlib.compress(header + body)
    stream = (
        f"{pages + 3} 0 obj\n<< /Type /ObjStm /N {len(objects)} /First {len(header)} "
        f"/Filter /FlateDecode /Length {len(packed)} >>\nstream\n"
    ).encode()
    return (
        b"%PDF-1.5\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        + stream
        + packed
        + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
