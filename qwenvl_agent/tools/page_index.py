"""The text of every page and image in a store, and a ranked search over it.

A long PDF cannot be read page by page by a 2B vision model for every question. So each PDF page's own
text layer is taken, line by line with its box (instantly); a page without usable text (a scan) and a
plain image are read by the offline OCR engine instead. The index builds in a background thread, one
page at a time and at low priority, so questions can start before it is done (an OCR read also waits
until the models of this process have been idle a while, unless someone waits for the pages);
``progress()`` and listeners report how far it is. ``search`` ranks pages with BM25 (bm25s) over words, with Chinese read
in overlapping pairs of characters, and returns each page's best-matching lines with their boxes.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..vlm.images import RELATIVE_MAX
from .index_ocr import index_reader, wait_for_an_idle_model
from .layout import TextPiece, group_rows

log = logging.getLogger(__name__)

# A page whose text layer holds fewer letters or digits than this is read by OCR instead (a scan); a page
# that is mostly one picture (SCAN_COVER of its area) needs MIN_SCAN_TEXT_CHARS (a stamped scan is still read).
MIN_TEXT_CHARS = 20
MIN_SCAN_TEXT_CHARS = 200
SCAN_COVER = 0.5
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
    """A pypdfium2 page's text, a line (a text rectangle) at a time, top to bottom, boxes on the 0-1000 grid
    of the page as it is shown (its crop box, turned by its /Rotate), as the rendered page has them."""
    left0, bottom0, right0, top0 = page.get_bbox()  # the crop box within the media box, inherited ones too
    width, height = (right0 - left0) or 1.0, (top0 - bottom0) or 1.0
    turn = page.get_rotation() % 360
    textpage = page.get_textpage()
    try:
        lines = []
        for index in range(textpage.count_rects()):
            left, bottom, right, top = textpage.get_rect(index)
            text = " ".join(textpage.get_text_bounded(left, bottom, right, top).split())
            if text:
                corners = [_shown(turn, (x - left0) / width, (top0 - y) / height) for x, y in ((left, top), (right, bottom))]
                box = (min(c[0] for c in corners), min(c[1] for c in corners), max(c[0] for c in corners), max(c[1] for c in corners))
                lines.append(IndexedLine(text, tuple(round(min(max(v, 0.0), 1.0) * RELATIVE_MAX, 1) for v in box)))
    finally:
        textpage.close()
    return sorted(lines, key=lambda line: (round(line.box[1] / 5), line.box[0]))


def _shown(turn: int, u: float, v: float) -> tuple[float, float]:
    """A point of the unturned page (0-1 from the top left) where it is shown on a page turned clockwise."""
    return {90: (1 - v, u), 180: (1 - u, 1 - v), 270: (v, 1 - u)}.get(turn, (u, v))


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


def usable(lines: list[IndexedLine], scan: bool = False) -> bool:
    """Whether a text layer holds the page's text: a page has none, or a few stray characters, when it is a
    scan; a scan with a stamp or a header in its text layer has a little more, and one made searchable by
    OCR has all of it."""
    letters = sum(character.isalnum() for line in lines for character in line.text)
    return letters >= (MIN_SCAN_TEXT_CHARS if scan else MIN_TEXT_CHARS)


class PageIndex:
    """The pages of one store, indexed in a background thread. Thread-safe."""

    def __init__(self, read: Callable[[Image.Image], list[TextPiece]] | None = None):
        self._read = read
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified after each page, and when indexing ends
        self._pages: dict[str, IndexedPage] = {}
        self._order: list[str] = []  # every page or image handed in, indexed or not
        self._jobs: collections.deque[tuple[str, tuple]] = collections.deque()
        self._worker: threading.Thread | None = None
        self._listeners: list[Callable[[int, int], Any]] = []
        self._errors: dict[str, str] = {}
        self._settled: set[str] = set()  # indexed (or failed) and reported to the listeners: waiters go on
        self._closed = False
        self._waiters = 0  # callers waiting for pages: OCR then reads on, model busy or not

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

    def wait(self, timeout: float | None = None, prefix: str | None = None, cancel: Any = None) -> bool:
        """Wait until every page handed in (whose id starts with ``prefix``, if given) is indexed, or indexing
        was closed; False if ``timeout`` passed first or ``cancel`` (anything with ``is_set()``) was set."""
        return self._wait_until(lambda: not self._pending(prefix), timeout, cancel)

    def page(self, page_id: str, timeout: float = 0.0, cancel: Any = None) -> IndexedPage | None:
        """The indexed page, waiting up to ``timeout`` seconds for it (it is read next); None if it is not
        indexed (yet), could not be read, or was never handed in."""
        with self._lock:
            position = next((i for i, (queued, _) in enumerate(self._jobs) if queued == page_id), None)
            if position:  # someone waits for this page: read it before the others
                job = self._jobs[position]
                del self._jobs[position]
                self._jobs.appendleft(job)
        self._wait_until(lambda: not self._pending(page_id, exact=True), timeout, cancel)
        with self._lock:
            return self._pages.get(page_id)

    def error(self, page_id: str) -> str | None:
        """Why a page could not be indexed, if it could not."""
        with self._lock:
            return self._errors.get(page_id)

    def count(self, prefix: str | None = None) -> int:
        """How many pages (whose ids start with ``prefix``, if given) are indexed."""
        with self._lock:
            return sum(1 for i in self._pages if _within(i, prefix))

    def search(self, query: str, prefix: str | None = None, k: int = 5) -> list[Hit]:
        """The ``k`` pages (whose ids start with ``prefix``, if given) that best match ``query``."""
        words = tokens(query)
        with self._lock:
            pages = [self._pages[i] for i in self._order if i in self._pages and _within(i, prefix)]
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
        """Stop indexing once the page being read is done; the pages not read yet stay unindexed, and pages
        handed in later are not indexed."""
        with self._lock:
            self._closed, worker = True, self._worker
            self._jobs.clear()
            self._changed.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def _pending(self, key: str | None, exact: bool = False) -> bool:
        """Whether pages (``key`` itself, or those whose ids start with it) are still to be indexed; the
        caller holds the lock."""
        if self._closed and self._worker is None:
            return False
        done = self._settled
        if exact:
            return key in self._order and key not in done
        return any(i not in done and _within(i, key) for i in self._order)

    def _wait_until(self, ready: Callable[[], bool], timeout: float | None, cancel: Any) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._waiters += 1
            self._changed.notify_all()  # a worker holding back for the model reads on
            try:
                return self._wait_ready(ready, deadline, cancel)
            finally:
                self._waiters -= 1

    def _wait_ready(self, ready: Callable[[], bool], deadline: float | None, cancel: Any) -> bool:
        """The loop of ``_wait_until``; the caller holds the lock."""
        while not ready():
            if cancel is not None and cancel.is_set():
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # Wake now and then to look at the cancel signal (a Stop on the page, a closed stream).
            self._changed.wait(0.2 if left is None else min(left, 0.2))
        return True

    def _enqueue(self, jobs: list[tuple[str, tuple]]) -> None:
        with self._lock:
            if self._closed:  # a conversation that was let go: its pages are no longer wanted
                return
            self._order += [page_id for page_id, _ in jobs]
            self._jobs.extend(jobs)
            if self._worker is None:  # the worker ends when it runs out of pages: no idle thread per store
                self._worker = threading.Thread(target=self._work, name="qwenvl-page-index", daemon=True)
                self._worker.start()
                with _running_lock:
                    _running.add(self)

    def _work(self) -> None:
        try:  # a background job: it yields the cores to the model (Linux lets a thread lower its own priority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        try:
            while True:
                with self._lock:
                    if not self._jobs or self._closed:
                        self._worker = None  # under the same lock as _enqueue's check: no page is left behind
                        self._changed.notify_all()
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
                for listener in listeners:
                    try:
                        listener(done, total)
                    except Exception:  # noqa: BLE001 - a broken progress display must not stop indexing
                        log.warning("A page-index progress listener failed", exc_info=True)
                with self._lock:
                    self._settled.add(page_id)
                    self._changed.notify_all()
        finally:
            with self._lock:
                if self._worker is threading.current_thread():  # ended by an error of its own
                    self._worker = None
                    self._changed.notify_all()
                idle = self._worker is None
            if idle:
                with _running_lock:
                    _running.discard(self)

    def _index(self, page_id: str, job: tuple) -> IndexedPage:
        if job[0] == "pdf":
            _, pdf, number, image = job
            lines, scan = _pdf_page_lines(pdf, number)
            if usable(lines, scan):
                return IndexedPage(page_id, "text layer", lines)
        image = job[-1]
        self._let_the_model_go_first()
        return IndexedPage(page_id, "OCR", ocr_lines(image, self._read or index_reader()))

    def _let_the_model_go_first(self) -> None:
        """Before an OCR read: wait for the model to be idle (``index_ocr.wait_for_an_idle_model``), unless
        someone waits for pages (then they come first) or the index is closed."""

        def wanted_now() -> bool:
            with self._lock:
                return bool(self._waiters) or self._closed

        wait_for_an_idle_model(wanted_now)


def _within(page_id: str, prefix: str | None) -> bool:
    """Whether ``page_id`` is under ``prefix`` ("doc-1/" holds its pages, "img-2/" the image and its crops)."""
    return prefix is None or page_id.startswith(prefix) or page_id + "/" == prefix


def _pdf_page_lines(pdf: bytes, number: int) -> tuple[list[IndexedLine], bool]:
    """The page's text-layer lines, and whether it is a scan (a picture covering most of the page)."""
    import pypdfium2.raw as pdfium_c

    from .pdf import locked_page

    with locked_page(pdf, number) as page:
        left, bottom, right, top = page.get_bbox()
        area = max((right - left) * (top - bottom), 1.0)
        pictures = [_bounds(o) for o in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3)]
        scan = any((x2 - x1) * (y2 - y1) >= SCAN_COVER * area for x1, y1, x2, y2 in pictures)
        return text_layer_lines(page), scan


def _bounds(page_object) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a page object (``get_bounds`` in pypdfium2 5, ``get_pos`` before)."""
    return (getattr(page_object, "get_bounds", None) or page_object.get_pos)()


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
_running_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    with _running_lock:
        running = list(_running)
    for index in running:
        index.close()
