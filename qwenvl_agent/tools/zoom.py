"""``zoom_image``: crop a region and register it under a new id, so small print can be re-read up close."""

from __future__ import annotations

import json
import re
from typing import Annotated

import json_repair
from pydantic import BaseModel, BeforeValidator, Field

from qwenvl_agent.vlm.images import PIXELS_PER_TOKEN

from .base import ImageTool


def _as_box(value):
    """Small models write boxes as lists, strings ("[10, 20, 300, 400]") or dicts; accept all of them, and a
    box from locate_in_image ({"bbox_2d": [...], "label": ...}), also as JSON text or alone in a list."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = json_repair.loads(text) if text.startswith(("{", "[")) else None
            if not isinstance(value, (list, dict)):
                value = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (list, dict)):
        value = value[0]
    if isinstance(value, dict) and "bbox_2d" in value:
        value = value["bbox_2d"]
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x1", "y1", "x2", "y2")]
    return value


Box = Annotated[list[float], BeforeValidator(_as_box), Field(min_length=4, max_length=4)]


class ZoomArgs(BaseModel):
    image_id: str = Field(description="Image or page id, for example img-1 or doc-1/page-1.")
    box: Box = Field(
        description="Region [x1, y1, x2, y2], 0-1000 from the top left: [500, 0, 1000, 500] is the top right quarter."
    )


class ZoomTool(ImageTool):
    name: str = "zoom_image"
    description: str = (
        "Enlarge a region of an image to read small print. Returns a new image id: call ocr_image on it."
    )
    args_schema: type[BaseModel] = ZoomArgs

    def _use(self, image_id: str, box: list[float]):
        crop_id = self.store.add_crop(image_id, box, target_pixels=self.max_image_tokens * PIXELS_PER_TOKEN)
        info = self.store.info(crop_id)
        width, height = info.size
        text = f"Zoomed image saved as {crop_id} ({width}x{height} px). Read it with ocr_image or describe_image."
        return text, [info.parent, crop_id], {"box": list(info.box), "parent": info.parent}
