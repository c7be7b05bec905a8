"""RapidOCR: PP-OCR text detection and recognition on ONNX Runtime, a page in about a second on two cores.

The ``rapidocr`` wheel carries its detection, recognition and orientation models; they are named to it
explicitly, so it never reaches for the network (it would download any model it does not find). The
recognition model reads Chinese and English (and many Latin-script languages) alike.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from qwenvl_agent.vlm.errors import QwenVLError

from .layout import TextPiece

# Longest image side the detector works at: larger pages are scaled down to it, smaller ones are not
# scaled up (RapidOCR's default scales the short side up to 736 px, several times slower on small images).
DETECTION_SIDE = 1600
# Pieces below this recognition confidence are dropped as noise.
MIN_SCORE = 0.3

# The recogniser often drops the space between a date and the time after it ("2026-04-0820:09"); a full date
# (day of two digits) directly followed by a time cannot be anything else, so the space is put back.
_DATE_TIME = re.compile(r"(?<!\d)(\d{4}([-/.])\d{1,2}\2\d{2})(\d{1,2}:\d{2})(?!\d)")

_default: Any = None
_default_lock = threading.Lock()


class OcrEngineError(QwenVLError, RuntimeError):
    """The offline OCR engine cannot run (not installed, or its models are missing)."""


def read_pieces(image: Image.Image) -> list[TextPiece]:
    """Every piece of text RapidOCR finds in ``image``, with its box in pixels and its confidence."""
    global _default
    with _default_lock:
        if _default is None:
            _default = read_pieces_with()
    return _default(image)


def read_pieces_with(threads: int | None = None):
    """A reader (image -> pieces) with an engine of its own on ``threads`` threads (all physical cores by
    default); the engine is built at its first page."""
    engine, lock = None, threading.Lock()

    def read(image: Image.Image) -> list[TextPiece]:
        nonlocal engine
        with lock:  # one page at a time per engine: two at once only split the cores
            if engine is None:
                engine = _build_engine(threads)
            result = engine(image.convert("RGB"))
        if result.txts is None:
            return []
        pieces = []
        for box, text, score in zip(result.boxes, result.txts, result.scores):
            xs, ys = [float(x) for x, _ in box], [float(y) for _, y in box]
            if float(score) >= MIN_SCORE and text.strip():
                text = _DATE_TIME.sub(r"\1 \3", text.strip())
                pieces.append(TextPiece(text, (min(xs), min(ys), max(xs), max(ys)), float(score)))
        return pieces

    return read


def _build_engine(threads: int | None = None):
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise OcrEngineError(
            "The offline OCR engine needs RapidOCR: pip install 'rapidocr>=3.10,<3.11' onnxruntime "
            "(qwenvl-agent installs them), or use ocr_engine='vlm'."
        ) from exc
    try:
        import onnxruntime  # noqa: F401 - rapidocr imports it only at the first page, with a vaguer error
    except ImportError as exc:
        raise OcrEngineError("RapidOCR needs ONNX Runtime: pip install onnxruntime, or use ocr_engine='vlm'.") from exc
    from qwenvl_agent.vlm.runtime import physical_cores

    folder = Path(rapidocr.__file__).parent / "models"
    models = {part: _model(folder, part) for part in ("det", "rec", "cls")}
    return RapidOCR(
        params={
            "Global.log_level": "error",  # its warnings (e.g. "detection result is empty") are ours to word
            "Global.use_cls": False,
            "Global.text_score": MIN_SCORE,
            "Det.model_path": str(models["det"]),
            "Rec.model_path": str(models["rec"]),
            "Cls.model_path": str(models["cls"]),
            "Det.limit_type": "max",
            "Det.limit_side_len": DETECTION_SIDE,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads or physical_cores(),
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )


def _model(folder: Path, part: str) -> Path:
    found = sorted(folder.glob(f"*{part}*.onnx"))
    if not found:
        raise OcrEngineError(
            f"RapidOCR's {part} model is not in {folder}, and qwenvl-agent never downloads it. Reinstall the "
            "package (pip install --force-reinstall 'rapidocr>=3.10,<3.11'), or use ocr_engine='vlm'."
        )
    return found[0]
