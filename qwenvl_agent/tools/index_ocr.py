"""The page index's OCR: its own RapidOCR engine, and when it may use the cores.

On two cores, OCR beside a decode loop halves the decoding (the seed question's first planner call: 5.6 s against
2.6 s), and an agent's question is model calls with gaps of a few seconds for its tools, the first right after
it hands in its images. So an OCR read for the index waits until the models of this process have been idle
``IDLE_SECONDS`` and at least ``SETTLE_SECONDS`` have passed, at most ``YIELD_SECONDS`` (a busy server), unless
the index is wanted at once (someone waits for its pages).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from ..vlm.gate import idle_for, wait_until_no_generation
from .layout import TextPiece

IDLE_SECONDS = 10.0
SETTLE_SECONDS = 1.0
YIELD_SECONDS = 60.0


def wait_for_an_idle_model(wanted_now: Callable[[], bool]) -> None:
    """Return once the models have been idle long enough (see the module's text), or ``wanted_now()``."""
    started = time.monotonic()
    while (waited := time.monotonic() - started) < YIELD_SECONDS:
        if wanted_now():
            return
        idle = idle_for()
        if idle >= IDLE_SECONDS and waited >= SETTLE_SECONDS:
            return
        if idle == 0.0:  # a generation runs
            wait_until_no_generation(0.2)
        else:
            time.sleep(0.2)


_reader_lock = threading.Lock()
_reader: Any = None


def index_reader() -> Callable[[Image.Image], list[TextPiece]]:
    """RapidOCR for the index: an engine of its own, built in the indexing thread (ONNX Runtime's worker threads
    share that thread's low priority; OpenVINO's are the process's), in the CPU's fastest precision: a search
    needs the words, not every character exact."""
    global _reader
    with _reader_lock:
        if _reader is None:
            from .rapid_ocr import read_pieces_with

            _reader = read_pieces_with(exact=False)
        return _reader
