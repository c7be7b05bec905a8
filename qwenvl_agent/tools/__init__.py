"""LangChain tools over image ids: OCR, chart reading, description and zoom, for any vision chat model."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from .base import ImageTool
from .chart import ChartTool
from .chart_data import ChartData, ChartParseError, ChartSeries, parse_chart_json
from .describe import DescribeTool
from .ocr import OcrTool
from .store import ImageInfo, ImageStore, UnknownImageError
from .zoom import ZoomTool


def make_tools(vlm: BaseChatModel, store: ImageStore) -> list[ImageTool]:
    """The four image tools over ``vlm`` (ChatQwenVL, ChatOllama, ChatOpenAI… any chat model that takes
    image blocks) and ``store`` (the conversation's images, by id)."""
    return [
        OcrTool(vlm=vlm, store=store),
        ChartTool(vlm=vlm, store=store),
        DescribeTool(vlm=vlm, store=store),
        ZoomTool(vlm=vlm, store=store),
    ]


__all__ = [
    "ChartData",
    "ChartParseError",
    "ChartSeries",
    "ChartTool",
    "DescribeTool",
    "ImageInfo",
    "ImageStore",
    "ImageTool",
    "OcrTool",
    "UnknownImageError",
    "ZoomTool",
    "make_tools",
    "parse_chart_json",
]
