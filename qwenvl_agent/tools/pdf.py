"""PDF rendering with PDFium, for the image store (pages, sharper regions) and the page index (text layers).

PDFium is not thread-safe, even across documents: every call into it goes through ``PDFIUM_LOCK``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from ..vlm.errors import ImageInputError, PixelLimitError
from ..vlm.images import MAX_IMAGE_PIXELS, RELATIVE_MAX

__all__ = ["PDFIUM_LOCK", "PDF_MAGIC", "locked_page", "pdf_bytes", "render_pdf", "render_region"]

Box = tuple[float, float, float, float]
Progress = Callable[[int, int], Any]

PDF_MAGIC = b"%PDF"

PDFIUM_LOCK = threading.Lock()


def pdf_bytes(source: Any) -> bytes | None:
    """The bytes of ``source`` if it is a PDF given as bytes or as a path to a file, else None."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data if data.startswith(PDF_MAGIC) else None
    path = _existing_file(source)
    if path is None:
        return None
    try:
        with path.open("rb") as file:
            if file.read(len(PDF_MAGIC)) != PDF_MAGIC:
                return None
            return PDF_MAGIC + file.read()
    except OSError as exc:
        raise ImageInputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def _existing_file(source: Any) -> Path | None:
    if isinstance(source, str) and len(source) < 4096:
        source = Path(source.strip())
    if not isinstance(source, Path):
        return None
    try:
        source = source.expanduser()
        return source if source.is_file() else None
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL, ~ of no user: load_image says which
        return None


def render_pdf(
    data: bytes, dpi: int, max_pages: int, what: str, progress: Progress | None,
    check_room: Callable[[int, str], None] | None = None, max_page_pixels: int = MAX_IMAGE_PIXELS,
) -> list[Image.Image]:
    """Every page of the PDF ``data`` as an RGB image at ``dpi``. Nothing is rendered before the page count
    and every page's size are checked: each page against ``max_page_pixels``, all of them together with
    ``check_room(pixels, what)``, which raises ``ImageInputError`` when they do not fit.

    The PDFium lock is taken per call, so other threads' PDFs interleave page by page and
    ``progress`` runs without it.
    """
    with PDFIUM_LOCK:
        document = _open_pdf(data, what)
    try:
        with PDFIUM_LOCK:
            total = len(document)
        if total > max_pages:
            raise ImageInputError(
                f"{what} has {total} pages, more than the limit of {max_pages}. Split the PDF, "
                f"or raise the limit with ImageStore(max_pages={total})."
            )
        with PDFIUM_LOCK:
            sizes = [_page_pixels(document.get_page_size(index), dpi) for index in range(total)]
        _check_page_sizes(sizes, what, dpi, max_page_pixels)
        if check_room is not None:
            check_room(sum(width * height for width, height in sizes), what)
        pages = []
        for index in range(total):
            with PDFIUM_LOCK:
                pages.append(_render_page(document, index, dpi / 72))  # PDF sizes are in points, 72 to the inch
            if progress is not None:
                progress(index + 1, total)
        return pages
    finally:
        with PDFIUM_LOCK:
            document.close()


def _check_page_sizes(sizes: list[tuple[int, int]], what: str, dpi: int, max_page_pixels: int) -> None:
    """``ImageInputError`` naming the first page that would render above ``max_page_pixels``."""
    for number, (width, height) in enumerate(sizes, start=1):
        if width * height > max_page_pixels:
            raise PixelLimitError(
                f"Page {number} of {what} would be {width}x{height} pixels at {dpi} dpi, above the "
                f"{max_page_pixels:,}-pixel limit; add it with a lower dpi, e.g. ImageStore(dpi=72).",
                width=width, height=height, limit=max_page_pixels, page=number, dpi=dpi,
            )


def _page_pixels(size: tuple[float, float], dpi: int) -> tuple[int, int]:
    """The pixel size of a page of ``size`` points rendered at ``dpi``, as PDFium rounds it."""
    return tuple(math.ceil(side * dpi / 72) for side in size)


def _open_pdf(data: bytes, what: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise ImageInputError(
                f"{what} is encrypted (password-protected); save an unprotected copy and add that."
            ) from exc
        if exc.err_code == pdfium_c.FPDF_ERR_SUCCESS:  # PDFium's way of refusing a document with no pages
            raise ImageInputError(f"{what} has no pages.") from exc
        raise ImageInputError(f"{what} is not a readable PDF: it is damaged or truncated ({exc}).") from exc


def _render_page(document: pdfium.PdfDocument, index: int, scale: float) -> Image.Image:
    page = document[index]
    try:
        return _rendered(page, scale)
    finally:
        page.close()


def _rendered(page: pdfium.PdfPage, scale: float, crop: tuple = (0, 0, 0, 0)) -> Image.Image:
    """The page (less ``crop``: left, bottom, right, top in points) as an RGB image at ``scale``."""
    bitmap = page.render(scale=scale, crop=crop)
    try:
        # convert() copies: the PIL view of a bitmap shares memory that close() releases
        return bitmap.to_pil().convert("RGB")
    finally:
        bitmap.close()


@contextmanager
def locked_page(data: bytes, index: int) -> Iterator[pdfium.PdfPage]:
    """Page ``index`` (0-based) of the PDF ``data``, open for the ``with`` block, which holds the PDFium lock."""
    with PDFIUM_LOCK:
        document = pdfium.PdfDocument(data)
        try:
            page = document[index]
            try:
                yield page
            finally:
                page.close()
        finally:
            document.close()


def render_region(data: bytes, index: int, region: Box, target_pixels: int, dpi: int, max_pixels: int) -> Image.Image:
    """Part of page ``index`` rendered at the scale that gives it about ``target_pixels`` (at least ``dpi``)."""
    with locked_page(data, index) as page:
        width, height = page.get_size()  # points
        x1, y1, x2, y2 = (v / RELATIVE_MAX for v in region)
        area = (x2 - x1) * width * (y2 - y1) * height
        scale = max(math.sqrt(target_pixels / max(area, 1e-6)), dpi / 72)
        scale = min(scale, math.sqrt(max_pixels / max(area, 1e-6)))
        crop = (x1 * width, (1 - y2) * height, (1 - x2) * width, y1 * height)  # left, bottom, right, top
        return _rendered(page, scale, crop)
