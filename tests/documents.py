"""Test documents drawn on the spot (never downloaded): text pages, an invoice, a bar chart."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont


def draw_text_image(lines: list[str], size=(480, 320), color="white") -> Image.Image:
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    for row, line in enumerate(lines):
        draw.text((16, 16 + row * 34), line, fill="black", font=font)
    return image


def draw_invoice() -> Image.Image:
    return draw_text_image(
        ["INVOICE No. 12345678", "Date: 2026-03-14", "Buyer: ACME Ltd", "Total: 1,500.00"], size=(520, 200)
    )


def draw_bar_chart(values=(0.8, 0.9, 1.2, 1.0)) -> Image.Image:
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=16)
    draw.text((150, 8), "Quarterly sales (M)", fill="black", font=font)
    for i, value in enumerate(values):
        left = 60 + i * 100
        draw.rectangle([left, 290 - int(value * 200), left + 60, 290], fill=(60, 110, 200))
        draw.text((left + 18, 296), f"Q{i + 1}", fill="black", font=font)
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()
