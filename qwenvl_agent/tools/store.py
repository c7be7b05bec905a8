"""The images of one conversation, each under a short id that tools and the model pass around.

Ids: ``img-N`` for an image, ``doc-N/page-K`` for a rendered PDF page, ``PARENT/zoom-M`` or ``PARENT/region-M`` for a crop (see
``ids``). Pixels never travel through the planner; the model sees ids (``ImageStore.describe``), tools look
them up (``ImageStore.get``), and zooming registers a new id (``ImageStore.add_crop``). PDFs are rendered by
``pdf``; the store owns the conversation's ``PageIndex`` and feeds it every page and image it registers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from ..vlm.errors import ImageInputError, PixelLimitError
from ..vlm.images import MAX_IMAGE_PIXELS, RELATIVE_MAX, load_image
from .ids import Box, ImageInfo, UnknownImageError, clean_id, clean_label, describe_line, inner_box, pixel_box, relative_box
from .page_index import PageIndex
from .pdf import pdf_bytes, render_pdf, render_region

__all__ = ["ImageInfo", "ImageStore", "UnknownImageError"]

Progress = Callable[[int, int], Any]

MAX_UPSCALE = 8.0  # a zoom enlarges an image crop at most this much

_relative_box = relative_box  # its name here before the split; tests/test_properties.py imports it


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
        self._crop_counts: dict[tuple[str, str], int] = {}  # (parent id, "zoom" or "region") -> crops so far
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
        label = clean_label(name)
        pdf = pdf_bytes(source)
        if pdf is not None:
            pages = render_pdf(pdf, self.dpi, self.max_pages, label or "The PDF", progress, self._make_room,
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
            raise PixelLimitError(
                f"{label or 'The image'} is {image.width}x{image.height} pixels, above the limit of "
                f"{self.max_image_pixels:,} pixels per image; shrink it first.",
                width=image.width, height=image.height, limit=self.max_image_pixels,
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

    def add_crop(self, parent_id: str, box: Sequence[Any], target_pixels: int | None = None, *, name: str = "zoom") -> str:
        """Crop ``box`` = ``(x1, y1, x2, y2)``, in 0-1000 coordinates relative to the parent, and register it
        as ``PARENT/NAME-M``: ``zoom`` for what ``zoom_image`` enlarges, ``region`` for the part ``ocr_image``
        reads. Raises ``ValueError`` for a box that selects nothing.

        With ``target_pixels`` the crop is magnified to about that many pixels: a region of a PDF page is
        rendered again from the PDF at the resolution that gives it, a region of an image is upscaled (at
        most ``MAX_UPSCALE`` times). A crop already larger is left as it is."""
        parent_id = clean_id(parent_id)
        parent = self.get(parent_id)
        relative = relative_box(box)
        crop = self._rendered_region(parent_id, relative, target_pixels) if target_pixels else None
        if crop is None:
            crop = parent.crop(pixel_box(relative, parent.size))
            if target_pixels and crop.width * crop.height < target_pixels:
                factor = min(math.sqrt(target_pixels / (crop.width * crop.height)), MAX_UPSCALE)
                size = (max(1, round(crop.width * factor)), max(1, round(crop.height * factor)))
                crop = crop.resize(size, Image.Resampling.LANCZOS)
        with self._lock:
            self._check_room(crop.width * crop.height, "The zoomed image")
            parent_info = self._infos[parent_id]
            count = self._crop_counts.get((parent_id, name), 0) + 1
            self._crop_counts[parent_id, name] = count
            crop_id = f"{parent_id}/{name}-{count}"
            label = f"{parent_info.label}, {name} {count}"
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
            region = inner_box(region, box)
        return render_region(pdf, info.page - 1, region, target_pixels, self.dpi, self.max_image_pixels)

    def get(self, image_id: str) -> Image.Image:
        """The image behind ``image_id``; ``UnknownImageError`` (a ``KeyError``) if there is none."""
        key = clean_id(image_id)
        with self._lock:
            if key not in self._images:
                raise UnknownImageError(key, list(self._images))
            return self._images[key]

    def info(self, image_id: str) -> ImageInfo:
        """Origin, label and size of ``image_id``; ``UnknownImageError`` if there is none."""
        key = clean_id(image_id)
        with self._lock:
            if key not in self._infos:
                raise UnknownImageError(key, list(self._infos))
            return self._infos[key]

    def origin(self, image_id: str) -> str:
        """The id of the image or PDF page that ``image_id`` was cut from (``image_id`` itself if it is no crop)."""
        info = self.info(image_id)
        with self._lock:
            while info.kind == "crop" and info.parent is not None:
                info = self._infos[info.parent]
        return info.id

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
        return "\n".join(describe_line(info) for info in infos)

    def __contains__(self, image_id: object) -> bool:
        key = clean_id(image_id)
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
