"""``extract``: the fields of a schema from many documents, one ``ExtractionResult`` per document.

Per document: its pages are read as the agent's tools read them (``documents``); the chat model is asked
for the fields with ``with_structured_output(schema, method="json_schema")``, given the text and the image
of the page; its reply is checked against the schema here (whatever the model or backend did), and every
value is looked up in the document's text (``grounding``): found, it gets its page and box; not found, it
becomes null. A document that fails is a result with its error, and the others go on.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ..tools.base import image_block
from .documents import MAX_PAGES, MAX_TEXT_CHARS, ReadDocument, document_key, expand_inputs, read_document
from .grounding import Source, as_date, locate, numbers_in
from .schema import field_kind, json_schema, nullable, validation_errors

INSTRUCTION = (
    "Extract these fields from the document below:\n{fields}\n\n"
    "Copy each value exactly as the document writes it (a number as a plain number, a date as YYYY-MM-DD). "
    "If the document does not show a field, give null for it: never guess.\n\n"
    "The text of the document {name}:\n{text}"
)


@dataclass
class ExtractionResult:
    """One document's fields. ``values`` follows the schema, each field null where the document does not
    show it; ``sources`` says where each value is written (``Source``: page, box, line) or None;
    ``dropped`` holds values the model gave that the document's text does not contain (set to null in
    ``values``); ``error`` says why the document could not be read or answered (its values are then null)."""

    document: str
    values: dict[str, Any]
    sources: dict[str, Source | None] = field(default_factory=dict)
    dropped: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    pages: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The row written to a JSONL output."""
        return {
            "document": self.document,
            "values": self.values,
            "sources": {name: (s.to_dict() if s else None) for name, s in self.sources.items()},
            "dropped": self.dropped,
            "error": self.error,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
        }


class Extractor(Runnable[Any, ExtractionResult]):
    """Extraction as a LangChain Runnable: ``invoke(path)`` gives one document's ``ExtractionResult``,
    ``batch(paths)`` several, ``iter(paths)`` yields them as they are done (in order).

    ``schema``: a pydantic model, a TypedDict, a JSON schema dict, or the fields syntax
    (``"invoice_number, total:number, date:date"``). ``model``: any LangChain chat model with
    ``with_structured_output`` (default: ``ChatQwenVL()``). ``keep_unfound=True`` keeps values the
    document's text does not contain (without a source) instead of dropping them to null. ``max_pages``: a
    longer PDF is an error in its row.
    """

    def __init__(self, schema: Any, model: BaseChatModel | None = None, *, concurrency: int = 1,
                 keep_unfound: bool = False, max_text_chars: int = MAX_TEXT_CHARS, images: bool = True,
                 max_pages: int = MAX_PAGES):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.schema = json_schema(schema)
        self.row_schema = nullable(self.schema)
        self._model = model
        self.concurrency = concurrency
        self.keep_unfound = keep_unfound
        self.max_text_chars = max_text_chars
        self.images = images
        self.max_pages = max_pages
        definitions = self.schema.get("$defs", {})
        self.kinds = {name: field_kind(spec, definitions) for name, spec in self.schema["properties"].items()}

    @property
    def model(self) -> BaseChatModel:
        if self._model is None:
            from ..vlm import ChatQwenVL

            self._model = ChatQwenVL()
        return self._model

    @property
    def fields(self) -> list[str]:
        return list(self.schema["properties"])

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> ExtractionResult:
        """The fields of one document: a path, PDF bytes or an image."""
        return self._extract_one(input, config)

    def iter(self, files: Iterable[Any], skip: Iterable[str] = (), config: RunnableConfig | None = None) -> Iterator[ExtractionResult]:
        """Results for ``files`` (paths, folders, PDF bytes, images, ``NamedDocument``) in their order;
        documents whose name is in ``skip`` (already done) are left out.

        The next documents are read (rendered, OCR at a low priority) while the model answers about the
        current ones, so the model is rarely left waiting; ``concurrency`` documents are asked at once."""
        done = {os.path.normpath(name) for name in skip}
        entries = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        expanded = []
        for entry in entries:  # a folder is its images and PDFs, as on the command line
            is_folder = isinstance(entry, (str, os.PathLike)) and os.path.isdir(entry)
            expanded += expand_inputs([entry]) if is_folder else [entry]
        todo = [f for f in expanded if os.path.normpath(document_key(f)) not in done]
        with ThreadPoolExecutor(1, thread_name_prefix="qwenvl-extract-read") as reader, \
                ThreadPoolExecutor(self.concurrency, thread_name_prefix="qwenvl-extract") as asker:
            running: deque[Future] = deque()
            for document in todo:
                read = reader.submit(self._read, document)
                running.append(asker.submit(self._finish, read, config))
                if len(running) > self.concurrency:  # read ahead by one, never the whole list
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()

    def _extract_one(self, source: Any, config: RunnableConfig | None) -> ExtractionResult:
        return self._finish(self._read(source), config)

    def _read(self, source: Any) -> tuple[ExtractionResult, ReadDocument | None, float]:
        name = document_key(source)
        started = time.perf_counter()
        result = ExtractionResult(name, dict.fromkeys(self.fields))
        try:
            document = read_document(source, name, " ".join(self.fields).replace("_", " "), self.max_text_chars, self.max_pages)
            result.pages = len(document.pages) + len(document.errors)
            if not document.pages:
                raise ValueError("no page could be read: " + "; ".join(document.errors))
        except Exception as exc:  # noqa: BLE001 - one document's failure is its row; the run goes on
            result.error, document = _message_of(exc), None
        return result, document, time.perf_counter() - started

    def _finish(self, read: Any, config: RunnableConfig | None) -> ExtractionResult:
        result, document, seconds = read.result() if isinstance(read, Future) else read
        started = time.perf_counter()
        if document is not None:
            try:
                self._answer(document, result.document, result, config)
            except Exception as exc:  # noqa: BLE001 - one document's failure is its row; the run goes on
                result.error = _message_of(exc)
            if result.error:
                result.values, result.sources, result.dropped = dict.fromkeys(self.fields), {}, {}
        result.seconds = seconds + time.perf_counter() - started
        return result

    def _answer(self, document: ReadDocument, name: str, result: ExtractionResult, config: RunnableConfig | None) -> None:
        structured = self.model.with_structured_output(self.row_schema, method="json_schema", include_raw=True)
        reply = structured.invoke([self._message(document, name)], config=config)
        parsed = reply.get("parsed") if isinstance(reply, dict) else None
        if not isinstance(parsed, dict):
            problem = reply.get("parsing_error") if isinstance(reply, dict) else None
            result.error = f"The model's reply is not a JSON object of the fields: {problem or 'nothing was parsed'}"
            return
        values = {name: self._coerce(name, parsed.get(name)) for name in self.fields}
        problems = validation_errors(values, self.row_schema)
        if problems:
            result.error = "The model's values do not follow the schema: " + "; ".join(problems)
            return
        for field_name, value in values.items():
            source = None
            if value is not None and self.kinds[field_name] in ("string", "date", "number", "integer"):
                source = locate(value, self.kinds[field_name], document.pages)
                if source is None and not self.keep_unfound:
                    result.dropped[field_name] = value
                    value = None
            result.values[field_name] = value
            result.sources[field_name] = source

    def _message(self, document: ReadDocument, name: str) -> HumanMessage:
        described = []
        for field_name, spec in self.schema["properties"].items():
            kind = self.kinds[field_name]
            note = spec.get("description") or spec.get("title") or ""
            described.append(f"- {field_name} ({kind if kind != 'other' else 'see the schema'})" + (f": {note}" if note else ""))
        text = "\n".join(f"--- page {number} ({page.source}) ---\n{page.text or '(no text)'}" for number, page in document.chosen)
        prompt = INSTRUCTION.format(fields="\n".join(described), name=os.path.basename(name), text=text)
        content: list[Any] = [image_block(document.image, self.model)] if self.images else []
        return HumanMessage(content=content + [{"type": "text", "text": prompt}])

    def _coerce(self, name: str, value: Any) -> Any:
        """What a small model writes loosely, in the schema's type: "1,234.50" for a number, "14/03/2026"
        for a date; anything else is left for the schema check."""
        kind = self.kinds[name]
        if isinstance(value, str) and kind in ("number", "integer"):
            found = numbers_in(value)
            if len(found) == 1:
                number = found[0]
                return int(number) if kind == "integer" and number.is_integer() else number
        if isinstance(value, str) and kind == "date":
            day = as_date(value)
            return day.isoformat() if day else value
        if isinstance(value, str) and not value.strip():
            return None
        return value


def _message_of(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def extract(files: Iterable[Any], schema: Any, model: BaseChatModel | None = None, **options: Any) -> Iterator[ExtractionResult]:
    """The fields of ``schema`` from each of ``files`` (paths, PDF bytes or images), one ``ExtractionResult``
    per document, in order. ``options``: ``concurrency``, ``keep_unfound``, ``max_text_chars``, ``images``, ``max_pages``
    (see ``Extractor``), and ``skip`` (names of documents already done)."""
    skip = options.pop("skip", ())
    return Extractor(schema, model, **options).iter(files, skip=skip)
