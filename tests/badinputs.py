"""A corpus of bad and awkward inputs, generated on the spot: each a name, the file's bytes, and whether a
careful reader should accept it (an odd but valid image) or refuse it with a clear error."""

from __future__ import annotations

import io
import struct
import zlib

from documents import draw_invoice, draw_text_image, png_bytes
from PIL import Image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def bomb_png(side: int = 30_000) -> bytes:
    """A few hundred bytes that declare a 30000 x 30000 image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    image = draw_text_image(["rotated"], size=(200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    return _jpeg(image, exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [draw_text_image([f"frame {i}"], size=(120, 60)).convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def pdf_bytes(pages: int = 1, password: str | None = None) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=14)
    for number in range(pages):
        pdf.add_page()
        pdf.cell(text=f"Page {number + 1}: invoice total 1,500.00")
    if password:
        pdf.set_encryption(owner_password=password, user_password=password)
    return bytes(pdf.output())


def corpus() -> list[tuple[str, bytes, bool]]:
    """(file name, bytes, acceptable) for each case."""
    page = draw_invoice()
    sixteen_bit = Image.fromarray(__import__("numpy").full((40, 60), 40000, dtype="uint16"))
    rgba = page.convert("RGBA")
    rgba.putalpha(128)
    return [
        ("empty.png", b"", False),
        ("truncated.png", png_bytes(page)[:200], False),
        ("truncated.jpg", _jpeg(page)[:300], False),
        ("notes.png", b"These are my notes, not a picture.\n" * 20, False),
        ("bomb.png", bomb_png(), False),
        ("corrupt.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n%%EOF garbage", False),
        ("locked.pdf", pdf_bytes(password="secret"), False),
        ("strip.png", _png(Image.new("RGB", (10_000, 10), "white")), True),
        ("dot.png", _png(Image.new("RGB", (1, 1), "black")), True),
        ("sixteen-bit.png", _png(sixteen_bit), True),
        ("cmyk.jpg", _jpeg(page.convert("CMYK")), True),
        ("palette.png", _png(page.convert("P")), True),
        ("transparent.png", _png(rgba), True),
        ("animated.gif", animated_gif(), True),
        ("rotated.jpg", exif_rotated_jpeg(), True),
        ("../../etc/escape.png", png_bytes(page), True),
    ]
