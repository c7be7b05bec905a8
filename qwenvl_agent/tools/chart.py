"""``read_chart``: a chart as data (type, title, axes, series of numbers) and an answer to a question."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .base import ImageTool
from .chart_data import CHART_INSTRUCTIONS, ChartParseError, parse_chart_json
from .ocr import reading_to_draft_from


class ChartArgs(BaseModel):
    image_id: str = Field(description="Id of the chart image, for example img-2.")
    question: str | None = Field(default=None, description="Optional question about the chart.")


class ChartTool(ImageTool):
    name: str = "read_chart"
    description: str = (
        "Read a chart (bar, line, pie): its title, axes and every value as a table; answers the question if given."
    )
    args_schema: type[BaseModel] = ChartArgs
    max_image_tokens: int = 1024
    max_tokens: int = 768
    system_prompt: str | None = "You read charts. " + CHART_INSTRUCTIONS

    def _use(self, image_id: str, question: str | None = None):
        image = self.store.get(image_id)
        instruction = "Read this chart."
        if question:
            instruction += f"\nQuestion: {question}"
        # The title, axes and labels it reads are printed on the chart: RapidOCR's reading drafts them.
        reply = self.ask([image, instruction], draft_text=reading_to_draft_from(self.vlm, image))
        try:
            chart = parse_chart_json(reply)
        except ChartParseError as exc:
            raise ValueError(f"Could not read a chart in {image_id}: {exc}") from exc
        return chart.to_markdown(), [self.store.info(image_id).id], {"chart": chart.model_dump(), "rows": chart.to_rows()}
