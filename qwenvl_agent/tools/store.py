"""The images of one conversation, each under a short id that tools and the model pass around.

Ids: ``img-N`` for an image, ``doc-N/page-K`` for a rendered PDF page, ``PARENT/zoom-M`` for a crop.
Pixels never travel through the planner; the model sees ids (``ImageStore.describe``), tools look
them up (``ImageStore.get``), and zooming registers a new id (``ImageStore.add_crop``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from ..vlm.errors import ImageInputError
from ..vlm.images import MAX_IMAGE_PIXELS, RELATIVE_MAX, load_image
from .page_index import PageIndex

__all__ = ["ImageInfo", "ImageStore", "UnknownImageError"]

Box = tuple[float, float, float, float]
Progress = Callable[[int, int], Any]

PDF_MAGIC = b"%PDF"
MAX_UPSCALE = 8.0  # a zoom enlarges an image crop at most this much
MAX_LABEL_CHARS = 80
MAX_LISTED_IDS = 30
# Characters a small model wraps around an id ("'img-1'", "[img-1]", "img-1."); no id contains them.
_ID_WRAPPING = " \t\r\n'\"`[](){}<>.,;:#"

# PDFium is not thread-safe, even across documents: every call into it goes through this lock.
_PDFIUM_LOCK = threading.Lock()


class UnknownImageError(KeyError):
    """An image id that the store does not hold; the message lists the ids it does hold."""

    def __init__(self, image_id: str, known: Sequence[str]):
        super().__init__(image_id)
        self.image_id = image_id
        self.known = list(known)

    def __str__(self) -> str:
        if not self.known:
            return f"No image {self.image_id!r}. No images have been added yet."
        listed = ", ".join(self.known[:MAX_LISTED_IDS])
        if len(self.known) > MAX_LISTED_IDS:
            listed += f" … ({len(self.known) - MAX_LISTED_IDS} more)"
        return f"No image {self.image_id!r}. Known ids: {listed}"


@dataclass(frozen=True)
class ImageInfo:
    """Where an image in the store came from.

    ``page`` is the 1-based PDF page for pages and for crops of pages; ``box`` is the crop's
    ``(x1, y1, x2, y2)`` on its parent in 0-1000 relative coordinates; ``size`` is ``(width, height)``.
    """

    id: str
    kind: Literal["image", "page", "crop"]
    label: str
    parent: str | None
    page: int | None
    box: Box | None
    size: tuple[int, int]


class ImageStore:
    """Thread-safe map from short ids to decoded RGB images, one store per conversation.

    Decoding and rendering run outside the store's lock, so readers are never blocked by a long
    PDF; ids are assigned when the finished images are registered. Returned images are shared:
    treat them as read-only.
    """

    def __init__(
        self,
        *,
        dpi: int = 144,
        max_pages: int = 50,
        allow_remote: bool = False,
        max_total_pixels: int = 400_000_000,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        index_pages: bool = True,
    ):
        if dpi < 1:
            raise ValueError(f"dpi must be a positive number of dots per inch, got {dpi}")
        if max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, got {max_pages}")
        self.dpi = dpi
        self.max_pages = max_pages
        self.allow_remote = allow_remote
        self.max_total_pixels = max_total_pixels  # all images together: a conversation's memory has a bound
        self.max_image_pixels = min(max_image_pixels, MAX_IMAGE_PIXELS)  # one image or rendered page
        self._lock = threading.Lock()
        self._images: dict[str, Image.Image] = {}
        self._infos: dict[str, ImageInfo] = {}
        self._image_count = 0
        self._doc_count = 0
        self._zoom_counts: dict[str, int] = {}
        self._pdfs: dict[str, bytes] = {}  # doc-N -> the PDF, so a zoom into a page can be rendered anew, sharper
        # The text of every page and image, for search_document and read_page_text (built in the background).
        self.index = PageIndex()
        self.index_pages = index_pages

    def add(self, source: Any, *, name: str | None = None, progress: Progress | None = None) -> str | list[str]:
        """Register an image (returns ``img-N``) or every page of a PDF (returns ``doc-N/page-K`` ids).

        ``source`` is a path, bytes, a PIL image or anything ``load_image`` accepts; PDFs are
        recognised by their ``%PDF`` header, given as a path or as bytes. ``name`` is only a display
        label. ``progress(done_pages, total_pages)`` is called after each rendered PDF page.
        """
        label = _clean_label(name)
        pdf = _pdf_bytes(source)
        if pdf is not None:
            pages = _render_pdf(pdf, self.dpi, self.max_pages, label or "The PDF", progress, self._make_room,
                                self.max_image_pixels)
            page_ids = self._register_pages(pages, label, pdf)
            if self.index_pages:
                self.index.add_pdf(page_ids, pdf, pages)
            return page_ids
        try:
            image = load_image(source, allow_remote=self.allow_remote)
        except ImageInputError as exc:
            raise ImageInputError(f"{label}: {exc}" if label else str(exc)) from exc
        if image.width * image.height > self.max_image_pixels:
            raise ImageInputError(
                f"{label or 'The image'} is {image.width}x{image.height} pixels, above the limit of "
                f"{self.max_image_pixels:,} pixels per image; shrink it first."
            )
        with self._lock:
            self._check_room(image.width * image.height, label or "The image")
            self._image_count += 1
            image_id = f"img-{self._image_count}"
            info = ImageInfo(image_id, "image", label or f"image {self._image_count}", None, None, None, image.size)
            self._put(info, image)
        if self.index_pages:
            self.index.add_image(image_id, image)
        return image_id

    def add_crop(self, parent_id: str, box: Sequence[Any], target_pixels: int | None = None) -> str:
        """Crop ``box`` = ``(x1, y1, x2, y2)``, in 0-1000 coordinates relative to the parent, and register it
        as ``PARENT/zoom-M``. Raises ``ValueError`` for a box that selects nothing.

        With ``target_pixels`` the crop is magnified to about that many pixels: a region of a PDF page is
        rendered again from the PDF at the resolution that gives it, a region of an image is upscaled (at
        most ``MAX_UPSCALE`` times). A crop already larger is left as it is."""
        parent_id = _clean_id(parent_id)
        parent = self.get(parent_id)
        relative = _relative_box(box)
        crop = self._rendered_region(parent_id, relative, target_pixels) if target_pixels else None
        if crop is None:
            crop = parent.crop(_pixel_box(relative, parent.size))
            if target_pixels and crop.width * crop.height < target_pixels:
                factor = min(math.sqrt(target_pixels / (crop.width * crop.height)), MAX_UPSCALE)
                size = (max(1, round(crop.width * factor)), max(1, round(crop.height * factor)))
                crop = crop.resize(size, Image.Resampling.LANCZOS)
        with self._lock:
            self._check_room(crop.width * crop.height, "The zoomed image")
            parent_info = self._infos[parent_id]
            count = self._zoom_counts.get(parent_id, 0) + 1
            self._zoom_counts[parent_id] = count
            crop_id = f"{parent_id}/zoom-{count}"
            label = f"{parent_info.label}, zoom {count}"
            info = ImageInfo(crop_id, "crop", label, parent_id, parent_info.page, relative, crop.size)
            self._put(info, crop)
        return crop_id

    def _rendered_region(self, parent_id: str, relative: Box, target_pixels: int) -> Image.Image | None:
        """The region of a PDF page (given on the page or on a crop of it), rendered from the PDF at about
        ``target_pixels``, never below the page's own resolution; None for regions of plain images."""
        with self._lock:
            chain, info = [relative], self._infos[parent_id]
            while info.kind == "crop" and info.parent is not None:
                chain.append(info.box)
                info = self._infos[info.parent]
            pdf = self._pdfs.get(info.id.split("/")[0]) if info.kind == "page" else None
        if pdf is None or info.page is None:
            return None
        region = (0.0, 0.0, float(RELATIVE_MAX), float(RELATIVE_MAX))
        for box in reversed(chain):  # from the page down to this crop
            region = _inner_box(region, box)
        return _render_region(pdf, info.page - 1, region, target_pixels, self.dpi, self.max_image_pixels)

    def get(self, image_id: str) -> Image.Image:
        """The image behind ``image_id``; ``UnknownImageError`` (a ``KeyError``) if there is none."""
        key = _clean_id(image_id)
        with self._lock:
            if key not in self._images:
                raise UnknownImageError(key, list(self._images))
            return self._images[key]

    def info(self, image_id: str) -> ImageInfo:
        """Origin, label and size of ``image_id``; ``UnknownImageError`` if there is none."""
        key = _clean_id(image_id)
        with self._lock:
            if key not in self._infos:
                raise UnknownImageError(key, list(self._infos))
            return self._infos[key]

    def ids(self) -> list[str]:
        """Every id, in the order the images were added."""
        with self._lock:
            return list(self._images)

    def describe(self) -> str:
        """One line per image for the model's prompt, e.g. ``img-1: invoice.png (1240x1754)``."""
        with self._lock:
            infos = list(self._infos.values())
        if not infos:
            return "No images yet."
        return "\n".join(_describe_line(info) for info in infos)

    def __contains__(self, image_id: object) -> bool:
        key = _clean_id(image_id)
        with self._lock:
            return key in self._images

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    def _register_pages(self, pages: list[Image.Image], label: str | None, pdf: bytes) -> list[str]:
        with self._lock:
            self._check_room(sum(page.width * page.height for page in pages), label or "The PDF")
            self._doc_count += 1
            doc = self._doc_count
            self._pdfs[f"doc-{doc}"] = pdf
            page_ids = []
            for number, image in enumerate(pages, start=1):
                page_id = f"doc-{doc}/page-{number}"
                page_label = f"{label or f'document {doc}'}, page {number}"
                self._put(ImageInfo(page_id, "page", page_label, None, number, None, image.size), image)
                page_ids.append(page_id)
        return page_ids

    def _put(self, info: ImageInfo, image: Image.Image) -> None:
        """Store one entry; the caller holds the lock."""
        self._images[info.id] = image
        self._infos[info.id] = info

    def _make_room(self, new_pixels: int, what: str) -> None:
        """``ImageInputError`` if ``new_pixels`` more would pass the store's bound now (checked again when added)."""
        with self._lock:
            self._check_room(new_pixels, what)

    def _check_room(self, new_pixels: int, what: str) -> None:
        """``ImageInputError`` if ``new_pixels`` more would pass the store's bound; the caller holds the lock."""
        held = sum(image.width * image.height for image in self._images.values())
        if held + new_pixels > self.max_total_pixels:
            raise ImageInputError(
                f"{what} would bring this conversation's images to {(held + new_pixels) / 1e6:.0f} megapixels, above "
                f"the limit of {self.max_total_pixels / 1e6:.0f}. Start a new conversation, or add fewer or smaller files."
            )


def _clean_id(image_id: object) -> str:
    return str(image_id).strip(_ID_WRAPPING).lower()


def _clean_label(name: str | None) -> str | None:
    """One line of at most ``MAX_LABEL_CHARS``: labels go into the model's prompt verbatim. A longer one
    keeps its end, where a file's own name is."""
    if name is None:
        return None
    label = " ".join(str(name).split())
    if len(label) > MAX_LABEL_CHARS:
        label = "…" + label[-(MAX_LABEL_CHARS - 1):]
    return label or None


def _describe_line(info: ImageInfo) -> str:
    width, height = info.size
    box = ""
    if info.box is not None:
        box = ", box [" + ", ".join(f"{value:g}" for value in info.box) + "]"
    return f"{info.id}: {info.label}{box} ({width}x{height})"


def _pdf_bytes(source: Any) -> bytes | None:
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


def _render_pdf(
    data: bytes, dpi: int, max_pages: int, what: str, progress: Progress | None,
    check_room: Callable[[int, str], None] | None = None, max_page_pixels: int = MAX_IMAGE_PIXELS,
) -> list[Image.Image]:
    """Every page of the PDF ``data`` as an RGB image at ``dpi``. Nothing is rendered before the page count
    and every page's size are checked: each page against ``max_page_pixels``, all of them together with
    ``check_room(pixels, what)``, which raises ``ImageInputError`` when they do not fit.

    The PDFium lock is taken per call, so other threads' PDFs interleave page by page and
    ``progress`` runs without it.
    """
    with _PDFIUM_LOCK:
        document = _open_pdf(data, what)
    try:
        with _PDFIUM_LOCK:
            total = len(document)
        if total > max_pages:
            raise ImageInputError(
                f"{what} has {total} pages, more than the limit of {max_pages}. Split the PDF, "
                f"or raise the limit with ImageStore(max_pages={total})."
            )
        with _PDFIUM_LOCK:
            sizes = [_page_pixels(document.get_page_size(index), dpi) for index in range(total)]
        for number, (width, height) in enumerate(sizes, start=1):
            if width * height > max_page_pixels:
                raise ImageInputError(
                    f"Page {number} of {what} would be {width}x{height} pixels at {dpi} dpi, above the "
                    f"{max_page_pixels:,}-pixel limit; add it with a lower dpi, e.g. ImageStore(dpi=72)."
                )
        if check_room is not None:
            check_room(sum(width * height for width, height in sizes), what)
        pages = []
        for index in range(total):
            with _PDFIUM_LOCK:
                pages.append(_render_page(document, index, dpi / 72))  # PDF sizes are in points, 72 to the inch
            if progress is not None:
                progress(index + 1, total)
        return pages
    finally:
        with _PDFIUM_LOCK:
            document.close()


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


def _inner_box(outer: Box, inner: Box) -> Box:
    """``inner`` (0-1000 within ``outer``) as a box on the grid ``outer`` itself is given on."""
    x1, y1, x2, y2 = outer
    width, height = (x2 - x1) / RELATIVE_MAX, (y2 - y1) / RELATIVE_MAX
    return (x1 + inner[0] * width, y1 + inner[1] * height, x1 + inner[2] * width, y1 + inner[3] * height)


def _render_region(data: bytes, index: int, region: Box, target_pixels: int, dpi: int, max_pixels: int) -> Image.Image:
    """Part of page ``index`` rendered at the scale that gives it about ``target_pixels`` (at least ``dpi``)."""
    with _PDFIUM_LOCK:
        document = pdfium.PdfDocument(data)
        try:
            page = document[index]
            try:
                width, height = page.get_size()  # points
                x1, y1, x2, y2 = (v / RELATIVE_MAX for v in region)
                area = (x2 - x1) * width * (y2 - y1) * height
                scale = max(math.sqrt(target_pixels / max(area, 1e-6)), dpi / 72)
                scale = min(scale, math.sqrt(max_pixels / max(area, 1e-6)))
                crop = (x1 * width, (1 - y2) * height, (1 - x2) * width, y1 * height)  # left, bottom, right, top
                return _rendered(page, scale, crop)
            finally:
                page.close()
        finally:
            document.close()


def _relative_box(box: Any) -> Box:
    """``box`` as four floats clamped to 0-1000, with x1 < x2 and y1 < y2; else ``ValueError``."""
    usage = "box must be [x1, y1, x2, y2]: four numbers from 0 to 1000, with x1 < x2 and y1 < y2"
    if isinstance(box, (str, bytes)) or not isinstance(box, Iterable):
        raise ValueError(f"{usage}; got {box!r}.")
    try:
        values = [float(value) for value in box]
    except (TypeError, ValueError):
        raise ValueError(f"{usage}; got {box!r}, which has a value that is not a number.") from None
    if len(values) != 4 or not all(math.isfinite(value) for value in values):
        raise ValueError(f"{usage}; got {box!r}.")
    x1, y1, x2, y2 = (min(max(value, 0.0), float(RELATIVE_MAX)) for value in values)
    if x1 >= x2 or y1 >= y2:
        raise ValueError(
            f"{usage}; got {box!r}, which selects no area (after limiting it to 0-1000). "
            "Give the left/top corner first and the right/bottom corner second."
        )
    return (x1, y1, x2, y2)


def _pixel_box(relative: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box covering ``relative``; rounding outwards keeps every non-empty box non-empty."""
    width, height = size
    x1, y1, x2, y2 = relative
    return (
        math.floor(x1 * width / RELATIVE_MAX),
        math.floor(y1 * height / RELATIVE_MAX),
        math.ceil(x2 * width / RELATIVE_MAX),
        math.ceil(y2 * height / RELATIVE_MAX),
    )
