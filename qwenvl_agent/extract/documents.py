"""The documents of an extraction: folders expanded to their files, and each file's pages and their text,
read as the agent's tools read them (the PDF text layer, or RapidOCR), searched when the text is long."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..tools.page_index import IndexedPage
from ..tools.store import ImageStore

SUPPORTED_SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Text of the pages sent to the model at most; a longer document is searched for the fields' names and
# its best pages are sent, up to this much.
MAX_TEXT_CHARS = 8000
INDEX_TIMEOUT_SECONDS = 600.0
MAX_PAGES = 50  # a longer PDF is an error in its row (raise it with max_pages / --max-pages)


class DocumentInputError(ValueError):
    """A named file or folder that does not exist, or a folder without documents."""


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and each folder's images and PDFs (in its subfolders too), sorted by path."""
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise DocumentInputError(f"{path} holds no images or PDFs ({', '.join(SUPPORTED_SUFFIXES)}).")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DocumentInputError(f"No such file or folder: {path}")
    return files


@dataclass(frozen=True)
class NamedDocument:
    """A document that is not a file on disk (an upload): its name, and its bytes or image."""

    name: str
    content: bytes | Image.Image


def document_key(document: Any) -> str:
    """How a document is named in the output and recognised when a run resumes: the path as given."""
    return str(document) if isinstance(document, (str, os.PathLike)) else getattr(document, "name", "document")


@dataclass
class ReadDocument:
    """A document's pages (1-based numbers with their text), the ones chosen for the model, the page
    image shown to the model (the first chosen page), and the pages that could not be read."""

    pages: list[tuple[int, IndexedPage]]
    chosen: list[tuple[int, IndexedPage]]
    image: Image.Image
    errors: list[str]


def read_document(source: Any, name: str, query: str, limit: int = MAX_TEXT_CHARS, max_pages: int = MAX_PAGES) -> ReadDocument:
    """Render and read every page of ``source`` (a path, bytes or an image); a file that cannot be opened
    raises (``ImageInputError``), a page that cannot be read is listed in ``errors``. The pages for the
    model: all of them when their text fits in ``limit`` characters, else those that best match ``query``
    (the fields' names, searched as ``search_document`` does), best first until the limit, in page order."""
    store = ImageStore(index_pages=True, max_pages=max_pages)
    if isinstance(source, NamedDocument):
        source = source.content
    try:
        added = store.add(Path(source) if isinstance(source, str) else source, name=Path(name).name)
        ids = [added] if isinstance(added, str) else list(added)
        store.index.wait(INDEX_TIMEOUT_SECONDS)
        pages, errors = [], []
        for number, page_id in enumerate(ids, start=1):
            page = store.index.page(page_id)
            if page is None:
                errors.append(f"page {number}: {store.index.error(page_id) or 'not read'}")
            else:
                pages.append((number, page))
        chosen = pages
        if sum(len(page.text) for _, page in pages) > limit:
            numbers = {page.page_id: (number, page) for number, page in pages}
            ranked = [numbers[hit.page_id] for hit in store.index.search(query, k=len(pages))]
            ranked += [entry for entry in pages if entry not in ranked]
            chosen, used = [], 0
            for number, page in ranked:
                if not chosen or used + len(page.text) <= limit:
                    chosen.append((number, page))
                    used += len(page.text)
            chosen.sort(key=lambda entry: entry[0])
        return ReadDocument(pages, chosen, store.get(ids[chosen[0][0] - 1] if chosen else ids[0]), errors)
    finally:
        store.index.close()
