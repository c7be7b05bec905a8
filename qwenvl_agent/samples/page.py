"""What every sample document is drawn with: a white page written row by row, and the ``Document`` it makes."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from . import fonts


@dataclass
class Document:
    """A drawn document: its image, its text in reading order (the ground truth for OCR) and its facts."""

    kind: str
    lang: str
    image: Image.Image
    text: str
    facts: dict[str, Any] = field(default_factory=dict)


class Page:
    """A page written row by row; it remembers each row's text for the ground truth."""

    def __init__(self, size: tuple[int, int], lang: str = "en", color: Any = "white"):
        self.image = Image.new("RGB", size, color)
        self.draw = ImageDraw.Draw(self.image)
        self.lang = lang
        self.rows: list[str] = []

    def font(self, size: int):
        return fonts.cjk(size) if self.lang == "zh" else fonts.latin(size)

    def row(self, y: float, *cells: tuple[float, str], size: int = 22, color: str = "black") -> None:
        """Write ``cells`` (x, text) at height ``y``, left to right."""
        for x, text in cells:
            self.draw.text((x, y), text, fill=color, font=self.font(size))
        self.rows.append(" ".join(text for _, text in cells))

    def text(self) -> str:
        return "\n".join(self.rows)


def money(value: float) -> str:
    """An amount as documents print it: ``1,234.50``."""
    return f"{value:,.2f}"


def text_image(lines: list[str], size: tuple[int, int] = (480, 320), color: Any = "white") -> Image.Image:
    """A page with ``lines`` of text on it, one below the other: the smallest document there is."""
    page = Page(size, color=color)
    for row, line in enumerate(lines):
        page.row(16 + row * 34, (16, line))
    return page.image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    """The image encoded as a file (PNG unless ``fmt`` says otherwise), as an upload carries it."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()
