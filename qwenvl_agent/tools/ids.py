"""The ids and boxes of the image store: what an entry is (``ImageInfo``), how a model's spelling of an id is read,
the error for an unknown id, and the 0-1000 relative boxes that crops are given in.

Ids: ``img-N`` for an image, ``doc-N/page-K`` for a rendered PDF page, ``PARENT/zoom-M`` for a crop that
``zoom_image`` made, ``PARENT/region-M`` for the part of an image that ``ocr_image`` read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..vlm.images import RELATIVE_MAX

__all__ = ["Box", "ImageInfo", "UnknownImageError", "clean_id", "clean_label", "describe_line", "inner_box",
           "pixel_box", "relative_box"]

Box = tuple[float, float, float, float]

MAX_LABEL_CHARS = 80
MAX_LISTED_IDS = 30
# Characters a small model wraps around an id ("'img-1'", "[img-1]", "img-1."); no id contains them.
_ID_WRAPPING = " \t\r\n'\"`[](){}<>.,;:#"


class UnknownImageError(KeyError):
    """An image id that the store does not hold; the message lists the ids it does hold."""

    def __init__(self, image_id: str, known: Sequence[str]):
        super().__init__(image_id)
        self.image_id = image_id
        self.known = list(known)

    def __str__(self) -> str:
        if not self.known:
            return f"No image {self.image_id!r}. No images have been added yet."
        listed = ", ".join(self.known[:MAX_LISTED_IDS])
        if len(self.known) > MAX_LISTED_IDS:
            listed += f" … ({len(self.known) - MAX_LISTED_IDS} more)"
        return f"No image {self.image_id!r}. Known ids: {listed}"


@dataclass(frozen=True)
class ImageInfo:
    """Where an image in the store came from.

    ``page`` is the 1-based PDF page for pages and for crops of pages; ``box`` is the crop's
    ``(x1, y1, x2, y2)`` on its parent in 0-1000 relative coordinates; ``size`` is ``(width, height)``.
    """

    id: str
    kind: Literal["image", "page", "crop"]
    label: str
    parent: str | None
    page: int | None
    box: Box | None
    size: tuple[int, int]


def clean_id(image_id: object) -> str:
    """``image_id`` as the store spells it: without the quotes and brackets a model wraps around it, lower case."""
    return str(image_id).strip(_ID_WRAPPING).lower()


def clean_label(name: str | None) -> str | None:
    """One line of at most ``MAX_LABEL_CHARS``: labels go into the model's prompt verbatim. A longer one
    keeps its end, where a file's own name is."""
    if name is None:
        return None
    label = " ".join(str(name).split())
    if len(label) > MAX_LABEL_CHARS:
        label = "…" + label[-(MAX_LABEL_CHARS - 1):]
    return label or None


def describe_line(info: ImageInfo) -> str:
    """The line for ``info`` in the model's prompt, e.g. ``img-1: invoice.png (1240x1754)``."""
    width, height = info.size
    box = ""
    if info.box is not None:
        box = ", box [" + ", ".join(f"{value:g}" for value in info.box) + "]"
    return f"{info.id}: {info.label}{box} ({width}x{height})"


def inner_box(outer: Box, inner: Box) -> Box:
    """``inner`` (0-1000 within ``outer``) as a box on the grid ``outer`` itself is given on."""
    x1, y1, x2, y2 = outer
    width, height = (x2 - x1) / RELATIVE_MAX, (y2 - y1) / RELATIVE_MAX
    return (x1 + inner[0] * width, y1 + inner[1] * height, x1 + inner[2] * width, y1 + inner[3] * height)


def relative_box(box: Any) -> Box:
    """``box`` as four floats clamped to 0-1000, with x1 < x2 and y1 < y2; else ``ValueError``."""
    usage = "box must be [x1, y1, x2, y2]: four numbers from 0 to 1000, with x1 < x2 and y1 < y2"
    if isinstance(box, (str, bytes)) or not isinstance(box, Iterable):
        raise ValueError(f"{usage}; got {box!r}.")
    try:
        values = [float(value) for value in box]
    except (TypeError, ValueError):
        raise ValueError(f"{usage}; got {box!r}, which has a value that is not a number.") from None
    if len(values) != 4 or not all(math.isfinite(value) for value in values):
        raise ValueError(f"{usage}; got {box!r}.")
    x1, y1, x2, y2 = (min(max(value, 0.0), float(RELATIVE_MAX)) for value in values)
    if x1 >= x2 or y1 >= y2:
        raise ValueError(
            f"{usage}; got {box!r}, which selects no area (after limiting it to 0-1000). "
            "Give the left/top corner first and the right/bottom corner second."
        )
    return (x1, y1, x2, y2)


def pixel_box(relative: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box covering ``relative``; rounding outwards keeps every non-empty box non-empty."""
    width, height = size
    x1, y1, x2, y2 = relative
    return (
        math.floor(x1 * width / RELATIVE_MAX),
        math.floor(y1 * height / RELATIVE_MAX),
        math.ceil(x2 * width / RELATIVE_MAX),
        math.ceil(y2 * height / RELATIVE_MAX),
    )
