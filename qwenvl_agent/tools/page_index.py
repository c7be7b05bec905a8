"""The text of every page and image in a store, and a ranked search over it.

A long PDF cannot be read page by page by a 2B vision model for every question. So each PDF page's own
text layer is taken, line by line with its box (instantly); a page without usable text (a scan) and a
plain image are read by the offline OCR engine instead. The index builds in a background thread, one
page at a time and at low priority, so questions can start before it is done; ``progress()`` and
listeners report how far it is. ``search`` ranks pages with BM25 (bm25s) over words, with Chinese read
in overlapping pairs of characters, and returns each page's best-matching lines with their boxes.
"""

from __future__ import annotations

import atexit
import collections
import os
import re
import threading
import unicodedata
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .layout import TextPiece, group_rows

# A page whose text layer holds fewer letters or digits than this is read by OCR instead (a scan).
MIN_TEXT_CHARS = 20
RELATIVE_MAX = 1000
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class IndexedLine:
    """A line of text and its box ``(x1, y1, x2, y2)`` on the 0-1000 grid of its page."""

    text: str
    box: tuple[float, float, float, float]


@dataclass
class IndexedPage:
    page_id: str
    source: str  # "text layer" or "OCR"
    lines: list[IndexedLine] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True)
class Hit:
    page_id: str
    score: float
    source: str
    lines: list[IndexedLine]


def tokens(text: str) -> list[str]:
    """Lower-cased words; a run of Chinese characters as its overlapping pairs (and a lone one as itself),
    since Chinese is written without spaces between words."""
    result = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        if not _CJK.search(word):
            result.append(word)
            continue
        for run in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]+|[^\u3400-\u9fff\uf900-\ufaff]+", word):
            if not _CJK.match(run):
                result.append(run)
            elif len(run) == 1:
                result.append(run)
            else:
                result += [run[i : i + 2] for i in range(len(run) - 1)]
    return result


def text_layer_lines(page) -> list[IndexedLine]:
    """A pypdfium2 page's text, a line (a text rectangle) at a time, top to bottom, boxes on the 0-1000 grid."""
    width, height = page.get_size()
    textpage = page.get_textpage()
    try:
        lines = []
        for index in range(textpage.count_rects()):
            left, bottom, right, top = textpage.get_rect(index)
            text = " ".join(textpage.get_text_bounded(left, bottom, right, top).split())
            if text:
                box = (left / width, 1 - top / height, right / width, 1 - bottom / height)
                lines.append(IndexedLine(text, tuple(round(v * RELATIVE_MAX, 1) for v in box)))
    finally:
        textpage.close()
    return sorted(lines, key=lambda line: (round(line.box[1] / 5), line.box[0]))


def ocr_lines(image: Image.Image, read: Callable[[Image.Image], list[TextPiece]]) -> list[IndexedLine]:
    """An image's text by OCR, a row at a time, boxes on the 0-1000 grid."""
    width, height = image.size
    lines = []
    for row in group_rows(read(image)):
        x1, y1 = min(p.box[0] for p in row), min(p.box[1] for p in row)
        x2, y2 = max(p.box[2] for p in row), max(p.box[3] for p in row)
        box = (x1 / width, y1 / height, x2 / width, y2 / height)
        lines.append(IndexedLine(" ".join(p.text for p in row), tuple(round(v * RELATIVE_MAX, 1) for v in box)))
    return lines


def usable(lines: list[IndexedLine]) -> bool:
    """Whether a text layer holds real text (a scanned page has none, or a few stray characters)."""
    return sum(character.isalnum() for line in lines for character in line.text) >= MIN_TEXT_CHARS


class PageIndex:
    """The pages of one store, indexed in a background thread. Thread-safe."""

    def __init__(self, read: Callable[[Image.Image], list[TextPiece]] | None = None):
        self._read = read
        self._lock = threading.Lock()
        self._pages: dict[str, IndexedPage] = {}
        self._order: list[str] = []  # every page or image handed in, indexed or not
        self._jobs: collections.deque[tuple[str, tuple]] = collections.deque()
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._listeners: list[Callable[[int, int], Any]] = []
        self._retriever: Any = None
        self._errors: dict[str, str] = {}
        self._closed = False

    def add_pdf(self, page_ids: list[str], pdf: bytes, images: list[Image.Image]) -> None:
        """Index a PDF's pages: their text layer, or OCR of the rendered page where there is none."""
        self._enqueue([(page_id, ("pdf", pdf, number, image)) for number, (page_id, image) in enumerate(zip(page_ids, images))])

    def add_image(self, image_id: str, image: Image.Image) -> None:
        """Index an image by OCR."""
        self._enqueue([(image_id, ("image", image))])

    def on_progress(self, listener: Callable[[int, int], Any]) -> None:
        """``listener(done, total)`` after each page indexed (from the indexing thread)."""
        with self._lock:
            self._listeners.append(listener)

    def progress(self) -> tuple[int, int]:
        """(pages indexed, pages handed in)."""
        with self._lock:
            return len(self._pages) + len(self._errors), len(self._order)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every page handed in is indexed; False if ``timeout`` passed first."""
        return self._idle.wait(timeout)

    def page(self, page_id: str, timeout: float = 0.0) -> IndexedPage | None:
        """The indexed page, waiting up to ``timeout`` seconds for it; None if it is not indexed (yet)."""
        waited = 0.0
        while True:
            with self._lock:
                if page_id in self._pages or page_id in self._errors or page_id not in self._order or self._closed:
                    return self._pages.get(page_id)
            if waited >= timeout:
                return None
            self._idle.wait(0.1)
            waited += 0.1

    def search(self, query: str, prefix: str | None = None, k: int = 5) -> list[Hit]:
        """The ``k`` pages (whose ids start with ``prefix``, if given) that best match ``query``."""
        words = tokens(query)
        with self._lock:
            pages = [self._pages[i] for i in self._order if i in self._pages and (prefix is None or i.startswith(prefix))]
        if not words or not pages:
            return []
        scores = _bm25(pages, words)
        ranked = sorted(range(len(pages)), key=lambda i: -scores[i])[:k]
        wanted = set(words)
        hits = []
        for i in ranked:
            if scores[i] <= 0:
                break
            lines = sorted(pages[i].lines, key=lambda line: -len(wanted & set(tokens(line.text))))
            hits.append(Hit(pages[i].page_id, float(scores[i]), pages[i].source, [l for l in lines[:3] if wanted & set(tokens(l.text))]))
        return hits

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop indexing once the page being read is done (the pages not read yet stay unindexed)."""
        with self._lock:
            self._closed, worker = True, self._worker
            self._jobs.clear()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        self._idle.set()  # nothing more will be indexed: release anyone waiting

    def _enqueue(self, jobs: list[tuple[str, tuple]]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this page index is closed")
            self._order += [page_id for page_id, _ in jobs]
            self._idle.clear()
            self._jobs.extend(jobs)
            if self._worker is None:  # the worker ends when it runs out of pages: no idle thread per store
                self._worker = threading.Thread(target=self._work, name="qwenvl-page-index", daemon=True)
                self._worker.start()
                _running.add(self)

    def _work(self) -> None:
        try:  # a background job: it yields the cores to the model (Linux lets a thread lower its own priority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            with self._lock:
                if not self._jobs or self._closed:
                    self._worker = None
                    _running.discard(self)
                    self._idle.set()
                    return
                page_id, job = self._jobs.popleft()
            try:
                page = self._index(page_id, job)
                with self._lock:
                    self._pages[page_id] = page
            except Exception as exc:  # noqa: BLE001 - one unreadable page must not stop the others
                with self._lock:
                    self._errors[page_id] = f"{type(exc).__name__}: {exc}"
            with self._lock:
                done, total = len(self._pages) + len(self._errors), len(self._order)
                listeners = list(self._listeners)
                if not self._jobs:
                    self._idle.set()
            for listener in listeners:
                listener(done, total)

    def _index(self, page_id: str, job: tuple) -> IndexedPage:
        if job[0] == "pdf":
            _, pdf, number, image = job
            lines = _pdf_page_lines(pdf, number)
            if usable(lines):
                return IndexedPage(page_id, "text layer", lines)
        image = job[-1]
        return IndexedPage(page_id, "OCR", ocr_lines(image, self._read or _index_reader()))


def _pdf_page_lines(pdf: bytes, number: int) -> list[IndexedLine]:
    import pypdfium2 as pdfium

    from .store import _PDFIUM_LOCK

    with _PDFIUM_LOCK:  # PDFium is not thread-safe
        document = pdfium.PdfDocument(pdf)
        try:
            page = document[number]
            try:
                return text_layer_lines(page)
            finally:
                page.close()
        finally:
            document.close()


def _bm25(pages: list[IndexedPage], words: list[str]) -> list[float]:
    import bm25s

    corpus = [tokens(page.text) or ["\0"] for page in pages]
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    known = [w for w in words if w in retriever.vocab_dict]
    if not known:
        return [0.0] * len(pages)
    return [float(s) for s in retriever.get_scores(known)]


# Indexes with a worker: stopped at interpreter exit, so no thread is inside the OCR engine when it is torn down.
_running: weakref.WeakSet[PageIndex] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for index in list(_running):
        index.close()


_reader_lock = threading.Lock()
_reader: Any = None


def _index_reader() -> Callable[[Image.Image], list[TextPiece]]:
    """RapidOCR for the index: an engine of its own, built in the indexing thread, so its worker threads share
    that thread's low priority: they use the cores the model leaves idle (about 3 s a dense A4 page on two
    cores, 5 s on one)."""
    global _reader
    with _reader_lock:
        if _reader is None:
            from .rapid_ocr import read_pieces_with

            _reader = read_pieces_with()
        return _reader
