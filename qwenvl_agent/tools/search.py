"""``search_document`` and ``read_page_text``: find the right pages of a long document, and read a page's
text at once, from the store's page index (the PDF's own text layer, or OCR), before any vision-model call."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .base import ImageTool

# read_page_text waits this long for a page the index has not reached yet; search_document as long for the
# whole index (a scanned PDF is read by OCR, about a second a page), then searches what it has.
PAGE_WAIT_SECONDS = 60.0
SEARCH_WAIT_SECONDS = 120.0
MAX_PAGE_CHARS = 6000


class SearchArgs(BaseModel):
    query: str = Field(description="Words to look for, for example 'total amount due' or 'termination notice period'.")
    doc_id: str | None = Field(default=None, description="Optional document to search, for example doc-1. Leave empty for all.")
    k: int = Field(default=5, ge=1, le=20, description="How many pages to return (default 5).")


class SearchTool(ImageTool):
    name: str = "search_document"
    description: str = (
        "Search the text of every page and image for words. Returns the best pages with their matching lines. Use it "
        "first for documents with many pages, then read_page_text on the pages it finds."
    )
    args_schema: type[BaseModel] = SearchArgs

    def _use(self, query: str, doc_id: str | None = None, k: int = 5):
        index = self.store.index
        prefix = None
        if doc_id:
            prefix = doc_id.strip(" '\"/").lower() + "/"
            if not any(image_id.startswith(prefix) for image_id in self.store.ids()):
                raise ValueError(f"No document {doc_id!r}. Documents: {', '.join(_documents(self.store)) or 'none'}.")
        index.wait(SEARCH_WAIT_SECONDS)
        hits = index.search(query, prefix, k)
        done, total = index.progress()
        status = "" if done >= total else f"\n(Still reading the pages: {done} of {total} done so far; search again later for the rest.)"
        if not hits:
            return f"No page matches '{query}'.{status}", [], {"hits": [], "indexed": done, "total": total}
        lines = [f"Best pages for '{query}':"]
        for rank, hit in enumerate(hits, 1):
            lines.append(f"{rank}. {hit.page_id} ({hit.source})")
            lines += [f"   - {line.text}" for line in hit.lines]
        data = {
            "hits": [{"page_id": h.page_id, "score": round(h.score, 3), "source": h.source,
                      "lines": [{"text": line.text, "box": list(line.box)} for line in h.lines]} for h in hits],
            "indexed": done,
            "total": total,
        }
        return "\n".join(lines) + status, [h.page_id for h in hits], data


class ReadPageArgs(BaseModel):
    page_id: str = Field(description="Id of the page or image to read, for example doc-1/page-7 or img-2.")


class ReadPageTool(ImageTool):
    name: str = "read_page_text"
    description: str = (
        "Read the text of a page or image at once, from the document's own text (or OCR). Use it before ocr_image; "
        "use ocr_image or zoom_image only when this text is not enough."
    )
    args_schema: type[BaseModel] = ReadPageArgs

    def _use(self, page_id: str):
        info = self.store.info(page_id)
        page = self.store.index.page(info.id, timeout=PAGE_WAIT_SECONDS)
        if page is None:
            raise ValueError(f"The text of {info.id} could not be read yet; use ocr_image on it.")
        text = page.text or "(no text)"
        if len(text) > MAX_PAGE_CHARS:
            text = text[:MAX_PAGE_CHARS] + "\n… (the page goes on; use ocr_image with a region for the rest)"
        lines = [{"text": line.text, "box": list(line.box)} for line in page.lines]
        return f"{info.id} ({page.source}):\n{text}", [info.id], {"source": page.source, "lines": lines}


def _documents(store) -> list[str]:
    return sorted({image_id.split("/")[0] for image_id in store.ids() if image_id.startswith("doc-")})
