"""``locate_in_image``: where things are in an image, as boxes, from Qwen3-VL's own grounding.

Qwen3-VL answers "locate …" with a JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": …}`` in
relative 0-1000 coordinates (the same grid ``zoom_image`` takes), so a located box can be zoomed into.
"""

from __future__ import annotations

import math
import re
from typing import Any

import json_repair
from pydantic import BaseModel, Field

from .base import ImageTool

LOCATE_INSTRUCTION = (
    'Locate every instance that belongs to the following categories: "{what}". Report bbox coordinates in JSON '
    'format: a list of {{"bbox_2d": [x1, y1, x2, y2], "label": "..."}}, with coordinates from 0 to 1000.'
)
_OBJECT = re.compile(r"\{[^{}]*bbox_2d[^{}]*\}")
MAX_BOXES = 30


class LocateArgs(BaseModel):
    image_id: str = Field(description="Image or page id, for example img-1 or doc-1/page-2.")
    what: str = Field(description="What to find, in a few words: 'the total amount'.")


class LocateTool(ImageTool):
    name: str = "locate_in_image"
    description: str = (
        "Find where something is in an image (a table, the total, a stamp). Returns labelled boxes "
        "[x1, y1, x2, y2], 0-1000, to give to zoom_image."
    )
    args_schema: type[BaseModel] = LocateArgs
    max_image_tokens: int = 1024
    max_tokens: int = 512

    def _use(self, image_id: str, what: str):
        what = " ".join(what.split())
        if not what:
            raise ValueError("what: say what to find, for example 'the invoice total'.")
        image = self.store.get(image_id)
        boxes = parse_boxes(self.look(image, LOCATE_INSTRUCTION.format(what=what)))
        canonical = self.store.info(image_id).id
        if not boxes:
            return f"Found nothing for '{what}' in {canonical}.", [canonical], {"boxes": [], "what": what}
        lines = [f"{i}. {b['label']}: [{', '.join(f'{v:g}' for v in b['bbox_2d'])}]" for i, b in enumerate(boxes, 1)]
        text = f"Found in {canonical} (boxes from 0 to 1000, zoom_image takes them):\n" + "\n".join(lines)
        return text, [canonical], {"boxes": boxes, "what": what}


def parse_boxes(reply: str) -> list[dict[str, Any]]:
    """The boxes in a grounding reply: a JSON list or object per line, fenced or not, leniently read."""
    found = _lenient_json(reply)
    whole = _boxes(found if isinstance(found, list) else [found])
    one_by_one = _boxes([_lenient_json(match) for match in _OBJECT.findall(reply)])  # one object per line
    return max(whole, one_by_one, key=len)[:MAX_BOXES]


def _lenient_json(text: str) -> Any:
    try:
        return json_repair.loads(text)
    except (ValueError, RecursionError):  # nested deeper than the repairer recurses: no boxes in it
        return None


def _boxes(items: list[Any]) -> list[dict[str, Any]]:
    boxes = []
    for item in items:
        box = _box(item.get("bbox_2d")) if isinstance(item, dict) else None
        if box is not None:
            boxes.append({"bbox_2d": box, "label": str(item.get("label") or item.get("text_content") or "").strip() or "object"})
    return boxes


def _box(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        return None
    if not all(math.isfinite(v) for v in numbers):  # "nan" and "inf" parse as floats but place nothing
        return None
    x1, y1, x2, y2 = (min(max(v, 0.0), 1000.0) for v in numbers)
    if x1 >= x2 or y1 >= y2:
        return None
    return [x1, y1, x2, y2]
