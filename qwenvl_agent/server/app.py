"""``qwenvl serve``: the local model behind an OpenAI-compatible API, and the agent as a stream of events.

Routes: ``POST /v1/chat/completions`` (streamed or not; images as data URLs, tools, structured output),
``POST /v1/agent`` (a question with images or PDFs in, the agent's typed events out as server-sent
events), ``GET /v1/models``, ``GET /health``. Every route but ``/health`` asks for the API key when one
is set. Requests are bounded (body size, images, pixels, PDF pages, ``max_tokens``); the model runs one
generation at a time with a short queue, and a request past it gets ``503`` with ``Retry-After`` at once.
A client that goes away stops its generation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from qwenvl_agent.agent import DocumentAssistant, event_to_dict
from qwenvl_agent.agent.api import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_CONVERSATIONS, new_thread_id
from qwenvl_agent.vlm import BusyError, ChatQwenVL, ImageInputError, QwenVLError
from qwenvl_agent.vlm.errors import GenerationTimeout, PromptTooLongError
from qwenvl_agent.vlm.images import load_image

from .openai_format import (
    ChunkWriter,
    RequestError,
    completion,
    error_body,
    generation_options,
    response_format_of,
    to_messages,
    tools_and_choice,
    usage,
)

RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)


@dataclass
class ServerSettings:
    model: str
    engine: str = "auto"
    weights: str = "int8"
    dtype: str = "auto"
    api_key: str | None = None
    allow_remote_images: bool = False
    allow_local_files: str | None = None  # a folder images may be read from; None: no local files
    max_body_mb: float = 25.0
    max_images: int = 8
    max_image_pixels: int = 40_000_000
    max_pdf_pages: int = 20
    max_tokens: int = 2048
    max_waiting: int = 3
    max_conversations: int = DEFAULT_MAX_CONVERSATIONS
    conversation_idle_seconds: float = DEFAULT_IDLE_SECONDS
    ocr_engine: str = "rapidocr"


class _BodyLimit:
    """Refuses a body larger than the limit, by its declared length or as it arrives (413). A plain ASGI
    middleware: it leaves the request's receive channel as it is, so a client's disconnect is seen."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(self.max_bytes)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestError(f"The request body is larger than {self.max_bytes // 2**20} MB.", status=413)
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(error_body(f"The request body is larger than {limit // 2**20} MB."), status_code=413)


class _Admission:
    """The requests this server lets at the model: one running and ``max_waiting`` queued. Counted when a
    request is let in, before its images are decoded or its response starts, so concurrent requests cannot
    all pass the check and then meet a full queue inside a streamed 200."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> Callable[[], None]:
        """Let one request in, or ``BusyError``; returns its release (which may be called more than once)."""
        with self._lock:
            if self.count >= self.limit:
                raise BusyError(
                    f"The model is busy: one request is running and {self.count - 1} are waiting "
                    f"(the limit is {self.limit - 1}). Try again in a moment."
                )
            self.count += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.count -= 1

        return release


def _releasing(stream: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """``stream``, releasing the request's place when it ends, fails, is closed, or is dropped unstarted (a
    client that left before the first byte)."""

    async def body() -> AsyncIterator[str]:
        try:
            async for item in stream:
                yield item
        finally:
            release()

    wrapped = body()
    weakref.finalize(wrapped, release)
    return wrapped


def create_app(settings: ServerSettings) -> FastAPI:
    async def authorise(request: Request) -> None:
        if settings.api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
                raise RequestError("A valid API key is required: Authorization: Bearer <key>.", status=401,
                                   kind="authentication_error")

    app = FastAPI(title="qwenvl-agent", version="0.1.0", docs_url=None, redoc_url=None, dependencies=[Depends(authorise)])
    app.add_middleware(_BodyLimit, max_bytes=int(settings.max_body_mb * 2**20))
    llm = ChatQwenVL(
        model=settings.model,
        engine=settings.engine,
        weights=settings.weights,
        dtype=settings.dtype,
        max_waiting=settings.max_waiting,
        allow_remote_images=False,  # images reach the model decoded, by the rules below
        allow_local_files=False,
    )
    assistant = DocumentAssistant(
        llm,
        max_pages=settings.max_pdf_pages,
        ocr_engine=settings.ocr_engine,
        max_conversations=settings.max_conversations,
        idle_seconds=settings.conversation_idle_seconds,
    )
    admission = _Admission(1 + settings.max_waiting)
    app.state.llm, app.state.assistant, app.state.settings = llm, assistant, settings

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        code = "invalid_api_key" if exc.status == 401 else None
        return JSONResponse(error_body(str(exc), exc.kind, exc.param, code), status_code=exc.status)

    @app.get("/health")
    async def health():
        runtime_loaded = _loaded(llm)
        gate = llm.runtime.gate if runtime_loaded else None
        return {"status": "ok", "model": settings.model, "model_loaded": runtime_loaded,
                "busy": bool(gate and gate.busy), "waiting": gate.waiting if gate else 0}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model, "object": "model", "created": 0, "owned_by": "qwenvl-agent"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json(request)
        options = generation_options(body, settings.max_tokens)
        tools, choice = tools_and_choice(body)
        structured = response_format_of(body).get("type") == "json_schema"
        try:
            model = llm.bind_tools(tools, tool_choice=choice) if tools else llm
        except ValueError as exc:
            raise RequestError(str(exc), "tools") from exc
        name = body.get("model") if isinstance(body.get("model"), str) else settings.model
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise RequestError("stream_options must be an object.", "stream_options")
        _refuse_when_full(llm)
        release = admission.enter()
        try:
            images = _ImageRules(settings)
            messages = await asyncio.to_thread(to_messages, body.get("messages"), images.load, settings.max_images)
            if body.get("stream"):
                writer = ChunkWriter(name, structured)
                chunks = _sse_chunks(model.astream(messages, **options), writer, bool(stream_options.get("include_usage")))
                stream, release = _releasing(chunks, release), None  # the stream lets the place go
                return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            reply = await _until_disconnected(request, model.ainvoke(messages, **options))
            return completion(reply, name, structured)
        finally:
            if release is not None:
                release()

    @app.post("/v1/agent")
    async def agent(request: Request):
        body = await _json(request)
        unknown = sorted(set(body) - {"question", "images", "thread_id"})
        if unknown:
            raise RequestError(
                f"Unknown field(s) {', '.join(unknown)}: this route takes question, images (data URLs of images or "
                "PDFs) and thread_id.", unknown[0])
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            raise RequestError("question must be a non-empty string.", "question")
        thread_id = body.get("thread_id") or new_thread_id()
        if not isinstance(thread_id, str) or len(thread_id) > 128:
            raise RequestError("thread_id must be a string of at most 128 characters.", "thread_id")
        files = await asyncio.to_thread(_files, body.get("images") or [], settings)
        _refuse_when_full(llm)
        release = admission.enter()
        try:
            await asyncio.to_thread(assistant.add_images, files, thread_id)
        except (QwenVLError, ValueError) as exc:
            release()
            raise RequestError(str(exc), "images") from exc
        events = _releasing(_sse_events(thread_id, assistant.astream(question.strip(), thread_id=thread_id)), release)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError):
        return JSONResponse(error_body(str(exc), "server_busy", code="busy"), status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(ImageInputError)
    async def _bad_image(request: Request, exc: ImageInputError):
        return JSONResponse(error_body(str(exc), param="messages"), status_code=400)

    @app.exception_handler(GenerationTimeout)
    async def _timeout(request: Request, exc: GenerationTimeout):
        return JSONResponse(error_body(str(exc), "timeout"), status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(PromptTooLongError)
    async def _too_long(request: Request, exc: PromptTooLongError):
        return JSONResponse(error_body(str(exc), param="messages", code="context_length_exceeded"), status_code=400)

    @app.exception_handler(QwenVLError)
    async def _model_error(request: Request, exc: QwenVLError):
        return JSONResponse(error_body(str(exc), "server_error"), status_code=500)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):  # unknown routes, wrong methods
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("Request to %s failed", request.url.path)
        return JSONResponse(error_body(f"The server failed: {type(exc).__name__}: {exc}", "server_error"), status_code=500)

    return app


def _loaded(llm: ChatQwenVL) -> bool:
    from qwenvl_agent.vlm.runtime import loaded_runtimes

    return any(r.model_id == llm.model for r in loaded_runtimes())


def _refuse_when_full(llm: ChatQwenVL) -> None:
    """503 at once when the queue is already full, before any work (or a streamed response) starts."""
    gate = llm.runtime.gate
    if gate.busy and gate.waiting >= gate.max_waiting:
        raise BusyError(f"The model is busy: one request is running and {gate.waiting} are waiting. Try again in a moment.")


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


async def _until_disconnected(request: Request, work) -> Any:
    """Await ``work``; if the client goes away first, cancel it (which stops its generation)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if not task.done() and await request.is_disconnected():
            task.cancel()
    return task.result()


async def _sse_chunks(stream: AsyncIterator, writer: ChunkWriter, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of a streamed completion. A client that disconnects cancels this generator,
    and with it the generation."""
    yield _sse(writer.chunk({"role": "assistant", "content": ""}))
    try:
        async for piece in stream:
            for delta in writer.deltas(piece):
                yield _sse(writer.chunk(delta))
            if piece.chunk_position == "last":
                yield _sse(writer.chunk({}, writer.finish_reason(piece)))
                if include_usage:
                    yield _sse(writer.chunk(None, usage=usage(piece.usage_metadata)))
    except QwenVLError as exc:
        yield _sse(error_body(str(exc), "server_error"))
    yield "data: [DONE]\n\n"


async def _sse_events(thread_id: str, events: AsyncIterator) -> AsyncIterator[str]:
    yield _sse({"event": "Thread", "thread_id": thread_id})
    async for event in events:
        yield _sse(event_to_dict(event))
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


class _ImageRules:
    """Decodes a request's images by the server's rules: data URLs always; http(s) only when allowed and
    only from public addresses; files only from the allowed folder; a pixel cap."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings

    def load(self, url: str, where: str):
        settings = self.settings
        try:
            image = load_image(
                url,
                allow_remote=settings.allow_remote_images,
                allow_private=False,
                local_files=settings.allow_local_files or False,
            )
        except ImageInputError as exc:
            raise RequestError(f"{where}: {exc}", where) from exc
        if image.width * image.height > settings.max_image_pixels:
            raise RequestError(
                f"{where}: the image is {image.width}x{image.height} pixels, above this server's limit of "
                f"{settings.max_image_pixels:,}.", where)
        return image


def _files(items: Any, settings: ServerSettings) -> list[bytes]:
    """The images and PDFs of an agent request as bytes: data URLs or base64 (http(s) URLs if allowed)."""
    if not isinstance(items, list):
        raise RequestError("images must be a list of data URLs (images or PDFs).", "images")
    if len(items) > settings.max_images:
        raise RequestError(f"At most {settings.max_images} files per request.", "images")
    files = []
    for index, item in enumerate(items):
        data = item.get("data") or item.get("url") if isinstance(item, dict) else item
        where = f"images[{index}]"
        if not isinstance(data, str) or not data:
            raise RequestError(f"{where} must be a data URL or base64 text.", where)
        if data.lower().startswith(("http://", "https://")):
            if not settings.allow_remote_images:
                raise RequestError(f"{where}: this server does not fetch remote files; send the file as a data URL.", where)
            from qwenvl_agent.vlm.fetch import fetch

            try:
                files.append(fetch(data, timeout=10.0, max_bytes=int(settings.max_body_mb * 2**20), allow_private=False))
            except ImageInputError as exc:
                raise RequestError(f"{where}: {exc}", where) from exc
            continue
        payload = data.split(",", 1)[1] if data.lower().startswith("data:") and "," in data else data
        try:
            files.append(base64.b64decode("".join(payload.split()), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{where} is not valid base64 data.", where) from exc
    return files


def run(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


