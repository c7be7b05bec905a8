"""``search_document`` and ``read_page_text``: find the right pages of a long document, and read a page's
text at once, from the store's page index (the PDF's own text layer, or OCR), before any vision-model call."""

from __future__ import annotations

from pydantic import BaseModel, Field

from qwenvl_agent.vlm import cancel
from qwenvl_agent.vlm.errors import GenerationCancelled

from .base import ImageTool

# read_page_text waits this long for a page the index has not reached yet (it is read next); search_document
# as long for the pages it searches (a scanned page is read by OCR in a second or a few), then searches
# what it has and says how far reading has got.
PAGE_WAIT_SECONDS = 60.0
SEARCH_WAIT_SECONDS = 120.0
MAX_PAGE_CHARS = 6000


class SearchArgs(BaseModel):
    query: str = Field(description="Words to look for, for example 'termination notice period'.")
    doc_id: str | None = Field(default=None, description="Optional document (doc-1) or image (img-2); empty for all.")
    k: int = Field(default=5, ge=1, le=20, description="How many pages.")


class SearchTool(ImageTool):
    name: str = "search_document"
    description: str = (
        "Search the text of every page and image for words. Returns the best pages and their matching lines; "
        "then read_page_text on them."
    )
    args_schema: type[BaseModel] = SearchArgs

    def _use(self, query: str, doc_id: str | None = None, k: int = 5):
        if not self.store.index_pages:
            raise ValueError("Page text is not indexed in this conversation, so it cannot be searched; use ocr_image "
                             "on the pages instead.")
        index = self.store.index
        prefix = None
        if doc_id and doc_id.strip(" '\"/"):
            # "doc-1", or a page of it ("doc-1/page-3"): the document; an image id ("img-2"): that image.
            prefix = doc_id.strip(" '\"/").lower().split("/")[0] + "/"
            if not any((image_id + "/").startswith(prefix) for image_id in self.store.ids()):
                raise ValueError(f"No document {doc_id!r}. Documents and images: {', '.join(_documents(self.store)) or 'none'}.")
        _wait(lambda cancel: index.wait(SEARCH_WAIT_SECONDS, prefix, cancel))
        searched = index.count(prefix)
        hits = index.search(query, prefix, k)
        done, total = index.progress()
        status = "" if done >= total else f"\n(Still reading the pages: {done} of {total} done so far; search again later for the rest.)"
        if not hits:
            data = {"hits": [], "searched": searched, "indexed": done, "total": total}
            return f"No page matches '{query}' ({searched} searched).{status}", [], data
        lines = [f"Searched {searched} page{'s' if searched != 1 else ''}; the best for '{query}':"]
        for rank, hit in enumerate(hits, 1):
            lines.append(f"{rank}. {hit.page_id} ({hit.source})")
            lines += [f"   - {line.text}" for line in hit.lines]
        data = {
            "hits": [{"page_id": h.page_id, "score": round(h.score, 3), "source": h.source,
                      "lines": [{"text": line.text, "box": list(line.box)} for line in h.lines]} for h in hits],
            "searched": searched,
            "indexed": done,
            "total": total,
        }
        return "\n".join(lines) + status, [h.page_id for h in hits], data


class ReadPageArgs(BaseModel):
    page_id: str = Field(description="Page or image id, for example doc-1/page-7 or img-2.")


class ReadPageTool(ImageTool):
    name: str = "read_page_text"
    description: str = (
        "Read the text of a page or image at once (its text layer, or OCR). Use it before ocr_image."
    )
    args_schema: type[BaseModel] = ReadPageArgs

    def _use(self, page_id: str):
        # A crop has no text of its own in the index: read the page or image it was cut from.
        source = self.store.origin(page_id)
        if not self.store.index_pages:
            raise ValueError("Page text is not indexed in this conversation; use ocr_image instead.")
        page = _wait(lambda cancel: self.store.index.page(source, PAGE_WAIT_SECONDS, cancel))
        if page is None:
            problem = self.store.index.error(source)
            if problem:
                raise ValueError(f"The text of {source} could not be read ({problem}); use ocr_image on it.")
            raise ValueError(f"The text of {source} is not read yet; use ocr_image on it, or try again later.")
        text = page.text or "(no text)"
        if len(text) > MAX_PAGE_CHARS:
            text = text[:MAX_PAGE_CHARS] + "\n… (the page goes on; use ocr_image with a region for the rest)"
        lines = [{"text": line.text, "box": list(line.box)} for line in page.lines]
        return f"{source} ({page.source}):\n{text}", [source], {"source": page.source, "lines": lines}


def _wait(waiting):
    """Run ``waiting(cancel)``, which waits for the index; a Stop of the request ends the wait at once."""
    signal = cancel.current()
    result = waiting(signal)
    if signal is not None and signal.is_set():
        raise GenerationCancelled("Stopped while waiting for the pages to be read.")
    return result


def _documents(store) -> list[str]:
    return sorted({image_id.split("/")[0] for image_id in store.ids()})
