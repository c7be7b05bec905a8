"""``ocr_image``: all the text of an image or of a region of it, in reading order, layout kept.

Three engines read it:
- ``rapidocr`` (the default): PP-OCR models on OpenVINO (ONNX Runtime without it), under a second a page on
  two cores, no network; lines are put back into rows, columns and Markdown tables from their boxes.
- ``vlm``: the vision chat model reads the whole image (minutes per page for a 2B model on a CPU). RapidOCR's
  reading, where it can run, is handed to the model as ``draft_text``: it never sees it, but its reply, which
  mostly says what RapidOCR read, is drafted from it several tokens a pass (the same reply, in fewer passes).
- ``hybrid``: RapidOCR reads the page; the lines it is unsure of go to the vision chat model, each as
  a zoomed crop with RapidOCR's reading, and come back corrected. The model writes a few words per
  uncertain line instead of the whole page.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal

from langchain_core.tools import InjectedToolArg
from PIL import Image
from pydantic import BaseModel, Field

from .base import ImageTool
from .layout import TextPiece, to_text
from .rapid_ocr import prepare as _prepare_rapid_ocr
from .rapid_ocr import read_pieces
from .zoom import Box

log = logging.getLogger(__name__)

OCR_ENGINES = ("vlm", "rapidocr", "hybrid")
DEFAULT_OCR_ENGINE = "rapidocr"


def check_ocr_engine(engine: str) -> str:
    """``engine`` if it is one of ``OCR_ENGINES``; ``ValueError`` naming the choices otherwise. The one check of
    an OCR engine name (the tools and ``DocumentAssistant`` use it)."""
    if engine not in OCR_ENGINES:
        raise ValueError(f"ocr_engine must be one of {', '.join(OCR_ENGINES)}; got {engine!r}.")
    return engine

# Hybrid: lines RapidOCR reads with less confidence than this go to the vision model (at most MAX_CHECKED).
# Chosen from `qwenvl eval --set full` (docs/EVALUATION.md): below 0.98 a third of the lines are not read
# exactly, above it one in twenty; about 1.6 lines a page fall below it.
HYBRID_THRESHOLD = 0.98
MAX_CHECKED = 12

OCR_INSTRUCTION = (
    "Read all the text in this image, exactly as written. Keep the reading order and the layout: one output "
    "line per line of text, label and value on the same line (for example 'Invoice No.: 12345'), tables as "
    "Markdown tables. Do not translate, summarise or add anything. If there is no text, reply: (no text)"
)
CHECK_INSTRUCTION = (
    "Each image above is one line of text from a document, with what an OCR program read in it. Read each "
    "image yourself, exactly as written (do not translate). Reply with one line per image, in order, as "
    "'N: text'."
)
_NUMBERED = re.compile(r"^\s*(\d+)\s*[:.)]\s*(.*?)\s*$")


def prepare_ocr(engine: str) -> bool:
    """Have what ``ocr_engine=engine`` reads with ready now: RapidOCR built and run once, so the first
    ``ocr_image`` does not pay it (for "vlm" it only drafts the model's reply). False where "rapidocr" or "hybrid"
    cannot read (the tool reports why when used)."""
    ready = _prepare_rapid_ocr()
    return check_ocr_engine(engine) == "vlm" or ready


def reading_to_draft_from(vlm: Any, image: Image.Image) -> str | None:
    """RapidOCR's reading of ``image``, as ``draft_text`` for a vision model about to read the same text from it:
    for a local model that drafts its greedy replies (else None, and RapidOCR is not run), and None where RapidOCR
    cannot read (the model then reads without it)."""
    from qwenvl_agent.vlm.chat_model import ChatQwenVL

    drafting = isinstance(vlm, ChatQwenVL) and vlm.prompt_lookup_num_tokens > 0
    if not drafting or vlm.temperature or vlm.sampling != "greedy":
        return None
    try:
        return to_text(read_pieces(image)) or None
    except Exception as exc:  # noqa: BLE001 - only a source of drafts: the model reads the image all the same
        log.debug("No RapidOCR reading to draft the model's reply from: %s", exc)
        return None


class OcrArgs(BaseModel):
    image_id: str = Field(description="Image or page id, for example img-1 or doc-1/page-2.")
    region: Box | None = Field(
        default=None,
        description="Optional part to read: [x1, y1, x2, y2], 0-1000 from the top left.",
    )
    # For programmatic callers and chains; hidden from the planner's view of the tool.
    engine: Annotated[Literal["vlm", "rapidocr", "hybrid"] | None, InjectedToolArg] = Field(
        default=None, description="OCR engine for this call: vlm, rapidocr or hybrid (default: the tool's)."
    )


class OcrTool(ImageTool):
    name: str = "ocr_image"
    description: str = (
        "Read the text of an image or page, line by line, tables as Markdown: numbers, dates, names, totals."
    )
    args_schema: type[BaseModel] = OcrArgs
    max_image_tokens: int = 2048
    max_tokens: int = 1024
    ocr_engine: Literal["vlm", "rapidocr", "hybrid"] = DEFAULT_OCR_ENGINE
    hybrid_threshold: float = HYBRID_THRESHOLD

    def _use(self, image_id: str, region: list[float] | None = None, engine: str | None = None):
        engine = engine or self.ocr_engine
        image = self.store.get(image_id)
        ids = [self.store.info(image_id).id]
        if region is not None:
            image_id = self.store.add_crop(image_id, region, name="region")
            image = self.store.get(image_id)
            ids.append(image_id)
        if engine == "vlm":
            reply = self.ask([image, OCR_INSTRUCTION], draft_text=reading_to_draft_from(self.vlm, image))
            return reply, ids, {"engine": "vlm"}
        pieces = read_pieces(image)
        checked: list[int] = []
        if engine == "hybrid" and self.vlm is not None:
            pieces, checked = self._check_uncertain(image, pieces)
        data = {"engine": engine, "lines": _lines(pieces, image.size), "checked_by_vlm": checked}
        return to_text(pieces) or "(no text)", ids, data

    def _check_uncertain(self, image: Image.Image, pieces: list[TextPiece]) -> tuple[list[TextPiece], list[int]]:
        """Send the lines RapidOCR is unsure of to the vision model; return the pieces with its readings."""
        uncertain = sorted((i for i, p in enumerate(pieces) if p.score < self.hybrid_threshold), key=lambda i: pieces[i].score)
        uncertain = sorted(uncertain[:MAX_CHECKED])
        if not uncertain:
            return pieces, []
        parts: list[Any] = []
        for number, index in enumerate(uncertain, start=1):
            parts += [f"Image {number} (OCR read: {pieces[index].text})", _line_crop(image, pieces[index])]
        parts.append(CHECK_INSTRUCTION)
        reply = self.ask(parts, max_image_tokens=256, max_tokens=40 * len(uncertain))
        readings = {}
        for line in reply.splitlines():
            match = _NUMBERED.match(line)
            if match and match.group(2) and 1 <= int(match.group(1)) <= len(uncertain):
                readings[uncertain[int(match.group(1)) - 1]] = match.group(2)
        fixed = [
            TextPiece(readings[i], p.box, p.score) if i in readings else p for i, p in enumerate(pieces)
        ]
        return fixed, sorted(readings)


def _line_crop(image: Image.Image, piece: TextPiece) -> Image.Image:
    """The piece's box with a margin of half its height, so no stroke is cut off."""
    x1, y1, x2, y2 = piece.box
    margin = max(2.0, piece.height / 2)
    box = (max(0, x1 - margin), max(0, y1 - margin), min(image.width, x2 + margin), min(image.height, y2 + margin))
    return image.crop(tuple(round(v) for v in box))


def _lines(pieces: list[TextPiece], size: tuple[int, int]) -> list[dict[str, Any]]:
    """Each piece for the artifact: text, confidence, and its box in 0-1000 coordinates (zoom_image's)."""
    width, height = size
    return [
        {
            "text": p.text,
            "confidence": round(p.score, 4),
            "box": [round(p.box[0] * 1000 / width), round(p.box[1] * 1000 / height),
                    round(p.box[2] * 1000 / width), round(p.box[3] * 1000 / height)],
        }
        for p in pieces
    ]
