"""RapidOCR: PP-OCR text detection and recognition, a page in about a second on two cores.

The ``rapidocr`` wheel carries its detection, recognition and orientation models; they are named to it
explicitly, so it never reaches for the network (it would download any model it does not find). The
recognition model reads Chinese and English (and many Latin-script languages) alike.

The models run on OpenVINO where it is installed, on ONNX Runtime otherwise. On a 2-core Xeon (AVX512, AMX) 20
scanned contract pages took 58.5 s on ONNX Runtime, 37.5 s on OpenVINO in float32 (the same text, character for
character) and 18.9 s on OpenVINO in the CPU's bfloat16 (2 of 620 lines differ, in a space): ``exact`` readers
(``ocr_image``) compute in float32, the page index's reader, which only needs the words to search, in the
CPU's fastest precision (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

_default: Any = None
_prepared = False  # the default reader has read a page
_default_lock = threading.Lock()


class OcrEngineError(QwenVLError, RuntimeError):
    """The offline OCR engine cannot run (not installed, or its models are missing)."""


def read_pieces(image: Image.Image) -> list[TextPiece]:
    """Every piece of text RapidOCR finds in ``image``, with its box in pixels and its confidence."""
    return _default_reader()(image)


def prepare() -> bool:
    """Have ``read_pieces``'s engine ready now: built, and both its models run once (what a first page otherwise
    pays: about 2 s on two cores). False, with the reason logged, where it cannot be built: the first page then
    meets the error and reports it."""
    global _prepared
    if not _prepared:
        try:
            _default_reader()(_warm_page())
        except Exception as exc:  # noqa: BLE001 - the reader's own callers report it (OcrEngineError or other)
            log.info("RapidOCR was not prepared: %s", exc)
            return False
        _prepared = True
    return True


def _default_reader():
    global _default
    with _default_lock:
        if _default is None:
            _default = read_pieces_with()
    return _default


def _warm_page() -> Image.Image:
    """A small image with a word on it, so that detection finds a line and recognition runs too."""
    from PIL import ImageDraw

    image = Image.new("RGB", (160, 48), "white")
    ImageDraw.Draw(image).text((10, 14), "Total 42", fill="black", font_size=20)
    return image


def read_pieces_with(threads: int | None = None, exact: bool = True):
    """A reader (image -> pieces) with an engine of its own on ``threads`` threads (all physical cores by
    default); the engine is built at its first page. ``exact``: float32 arithmetic (the text ONNX Runtime
    reads); otherwise the CPU's fastest precision where OpenVINO runs the models (bfloat16 with AMX), which
    may read a character differently now and then."""
    engine, lock = None, threading.Lock()

    def read(image: Image.Image) -> list[TextPiece]:
        nonlocal engine
        with lock:  # one page at a time per engine: two at once only split the cores
            if engine is None:
                engine = _build_engine(threads, exact)
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


def runtime() -> str:
    """What runs the OCR models: "openvino" where it can be imported, "onnxruntime" otherwise."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "onnxruntime"
    return "openvino"


def _build_engine(threads: int | None = None, exact: bool = True):
    try:
        import rapidocr
        from rapidocr import EngineType, RapidOCR
    except ImportError as exc:
        raise OcrEngineError(
            "The offline OCR engine needs RapidOCR: pip install 'rapidocr>=3.10,<3.11' onnxruntime "
            "(qwenvl-agent installs them), or use ocr_engine='vlm'."
        ) from exc
    from qwenvl_agent.vlm.cpu import physical_cores

    threads = threads or physical_cores()
    folder = Path(rapidocr.__file__).parent / "models"
    models = {part: _model(folder, part) for part in ("det", "rec", "cls")}
    params = {
        "Global.log_level": "error",  # its warnings (e.g. "detection result is empty") are ours to word
        "Global.use_cls": False,
        "Global.text_score": MIN_SCORE,
        "Det.model_path": str(models["det"]),
        "Rec.model_path": str(models["rec"]),
        "Cls.model_path": str(models["cls"]),
        "Det.limit_type": "max",
        "Det.limit_side_len": DETECTION_SIDE,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    if runtime() == "onnxruntime":
        return _on_onnx_runtime(params)
    params.update({
        "Det.engine_type": EngineType.OPENVINO,
        "Rec.engine_type": EngineType.OPENVINO,
        "EngineConfig.openvino.inference_num_threads": threads,
        "EngineConfig.openvino.performance_hint": "LATENCY",
    })
    try:
        engine = RapidOCR(params=params)
        if exact:
            _in_float32(engine, threads)
        else:  # compiled now, so a failure to compile shows here rather than at the first page
            engine._load_det_model(), engine._load_rec_model()
        return engine
    except Exception as exc:  # OpenVINO imports but cannot run here: ONNX Runtime reads the same text
        log.warning("RapidOCR falls back to ONNX Runtime: OpenVINO could not compile its models (%s: %s)",
                    type(exc).__name__, str(exc)[:200])
        for key in ("Det.engine_type", "Rec.engine_type"):
            params[key] = EngineType.ONNXRUNTIME
        return _on_onnx_runtime(params)


def _on_onnx_runtime(params: dict[str, Any]):
    """RapidOCR on ONNX Runtime (imported only here: where OpenVINO runs the models it is not needed, and its
    import leaves a session file in the temporary folder)."""
    from rapidocr import RapidOCR

    try:
        import onnxruntime  # noqa: F401 - rapidocr imports it only at the first page, with a vaguer error
    except ImportError as exc:
        raise OcrEngineError("RapidOCR needs ONNX Runtime: pip install onnxruntime, or use ocr_engine='vlm'.") from exc
    return RapidOCR(params=params)


def _in_float32(engine: Any, threads: int) -> None:
    """Compile the detection and recognition models again in float32: RapidOCR's OpenVINO session takes a
    thread count but no precision, and OpenVINO computes in bfloat16 by default on a CPU with AMX."""
    import openvino

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads), "INFERENCE_PRECISION_HINT": "f32"}
    core = openvino.Core()
    for stage in (engine._load_det_model(), engine._load_rec_model()):  # built now rather than at the first page
        session = stage.session
        session.session = core.compile_model(session.model, "CPU", config).create_infer_request()


def _model(folder: Path, part: str) -> Path:
    found = sorted(folder.glob(f"*{part}*.onnx"))
    if not found:
        raise OcrEngineError(
            f"RapidOCR's {part} model is not in {folder}, and qwenvl-agent never downloads it. Reinstall the "
            "package (pip install --force-reinstall 'rapidocr>=3.10,<3.11'), or use ocr_engine='vlm'."
        )
    return found[0]
