"""``ocr_image``: all the text of an image or of a region of it, in reading order, layout kept."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .base import ImageTool
from .zoom import Box

OCR_INSTRUCTION = (
    "Read all the text in this image, exactly as written. Keep the reading order and the layout: one output "
    "line per line of text, label and value on the same line (for example 'Invoice No.: 12345'), tables as "
    "Markdown tables. Do not translate, summarise or add anything. If there is no text, reply: (no text)"
)


class OcrArgs(BaseModel):
    image_id: str = Field(description="Id of the image or page to read, for example img-1 or doc-1/page-2.")
    region: Box | None = Field(
        default=None,
        description="Optional part to read: [x1, y1, x2, y2] from 0 to 1000 (0,0 = top left). Leave empty for all.",
    )


class OcrTool(ImageTool):
    name: str = "ocr_image"
    description: str = (
        "Read all the text in an image (invoices, receipts, forms, pages, screenshots). Returns the text line by "
        "line, tables as Markdown. Use it to find numbers, dates, names and totals."
    )
    args_schema: type[BaseModel] = OcrArgs
    max_image_tokens: int = 2048
    max_tokens: int = 1024

    def _use(self, image_id: str, region: list[float] | None = None):
        image = self.store.get(image_id)
        ids = [self.store.info(image_id).id]
        if region is not None:
            image_id = self.store.add_crop(image_id, region)
            image = self.store.get(image_id)
            ids.append(image_id)
        return self.look(image, OCR_INSTRUCTION), ids, None
