"""LangChain tools over image ids: OCR, chart reading, description and zoom, for any vision chat model."""

from __future__ import annotations

import threading

from langchain_core.language_models import BaseChatModel

from .base import ImageTool
from .chart import ChartTool
from .chart_data import ChartData, ChartParseError, ChartSeries, chart_text, parse_chart_json
from .describe import DescribeTool
from .layout import TextPiece, to_text
from .locate import LocateTool, parse_boxes
from .ocr import DEFAULT_OCR_ENGINE, OCR_ENGINES, OcrTool, check_ocr_engine, prepare_ocr
from .page_index import Hit, IndexedLine, IndexedPage, PageIndex
from .rapid_ocr import OcrEngineError
from .search import ReadPageTool, SearchTool
from .store import ImageInfo, ImageStore, UnknownImageError
from .zoom import ZoomTool


def make_tools(
    vlm: BaseChatModel,
    store: ImageStore,
    *,
    ocr_engine: str = DEFAULT_OCR_ENGINE,
    max_image_tokens: int | None = None,
    max_tokens: int | None = None,
) -> list[ImageTool]:
    """The image tools over ``vlm`` (ChatQwenVL, ChatOllama, ChatOpenAI… any chat model that takes image
    blocks) and ``store`` (the conversation's images, by id): ``ocr_image``, ``read_chart``,
    ``describe_image``, ``zoom_image``, ``locate_in_image``, ``search_document`` and ``read_page_text``. ``ocr_engine``: "rapidocr" (the default:
    fast, offline), "vlm" (the vision model reads the page) or "hybrid" (RapidOCR, with the lines it is
    unsure of checked by the vision model). ``max_image_tokens`` and ``max_tokens``, when given, replace
    every tool's own image budget and reply length (a page's settings, for example)."""
    check_ocr_engine(ocr_engine)
    budgets = {name: value for name, value in (("max_image_tokens", max_image_tokens), ("max_tokens", max_tokens)) if value}
    turn = threading.Lock()
    shared = {"vlm": vlm, "store": store, "turn": turn, **budgets}
    return [
        OcrTool(ocr_engine=ocr_engine, **shared),
        ChartTool(**shared),
        DescribeTool(**shared),
        ZoomTool(**shared),
        LocateTool(**shared),
        SearchTool(**shared),
        ReadPageTool(**shared),
    ]


__all__ = [
    "ChartData",
    "ChartParseError",
    "ChartSeries",
    "ChartTool",
    "DEFAULT_OCR_ENGINE",
    "OCR_ENGINES",
    "OcrEngineError",
    "DescribeTool",
    "ImageInfo",
    "ImageStore",
    "Hit",
    "ImageTool",
    "IndexedLine",
    "IndexedPage",
    "LocateTool",
    "OcrTool",
    "PageIndex",
    "ReadPageTool",
    "SearchTool",
    "TextPiece",
    "UnknownImageError",
    "ZoomTool",
    "chart_text",
    "check_ocr_engine",
    "make_tools",
    "parse_boxes",
    "parse_chart_json",
    "prepare_ocr",
    "to_text",
]
