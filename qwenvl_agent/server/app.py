"""``qwenvl serve``: the local model behind an OpenAI-compatible API, and the agent as a stream of events.

Routes: ``POST /v1/chat/completions`` (streamed or not; images as data URLs, tools, structured output),
``POST /v1/agent`` (a question with images or PDFs in, the agent's typed events out as server-sent
events), ``GET /v1/models``, ``GET /health``. Every route but ``/health`` asks for the API key when one
is set. Requests are bounded (body size, images, pixels, PDF pages, ``max_tokens``); the model runs one
generation at a time with a short queue, and a request past it gets ``503`` with ``Retry-After`` at once.
A client that goes away stops its generation.

The model loads at start-up in a thread of its own. Until it is ready ``/health`` answers ``503`` with
``{"status": "loading"}`` (so a readiness probe or a start-up script waits for ``200``), and a request that
needs the model gets ``503`` with ``Retry-After`` (code ``model_loading``), which OpenAI's clients retry. If
the load fails, ``/health`` says ``{"status": "error", "error": ...}`` with ``503`` and such requests get
``503`` with code ``model_unavailable`` and the reason.

Against DNS rebinding, a request whose ``Host`` is not one of this machine's loopback names, the bound host
or ``allowed_hosts`` gets ``400`` (code ``invalid_host``), and a JSON route takes only ``Content-Type:
application/json`` (``415`` otherwise). A ``/v1/agent`` conversation's ``thread_id`` is issued by the server
(the first event of its first answer, and the ``X-Thread-Id`` header) and belongs to the API key that
started it; any other id is ``404``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import json
import logging
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from starlette.exceptions import HTTPException

from qwenvl_agent.agent import DocumentAssistant, event_to_dict
from qwenvl_agent.agent.api import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_CONVERSATIONS
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
from .schemas import SSE, AgentRequest, ChatCompletion, ChatCompletionRequest, Health, ModelList, error_responses

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
    # Image paths and file:// URLs requests may name: False none; a folder, only files inside it; True, any
    # file the server can read (as ChatQwenVL.allow_local_files). The CLI sets a folder with --allow-local-files DIR.
    allow_local_files: bool | str = False
    max_body_mb: float = 25.0
    max_images: int = 8
    max_image_pixels: int = 40_000_000
    max_pdf_pages: int = 20
    max_tokens: int = 2048
    max_waiting: int = 3
    max_conversations: int = DEFAULT_MAX_CONVERSATIONS
    conversation_idle_seconds: float = DEFAULT_IDLE_SECONDS
    ocr_engine: str = "rapidocr"
    max_new_tokens: int | None = None  # the agent's longest reply per step; None: the model's default
    max_image_tokens: int | None = None  # visual tokens per image at most; None: the model's default
    host: str = "127.0.0.1"  # the address served: a Host header naming it is accepted
    allowed_hosts: tuple[str, ...] = ()  # more Host names to accept; "*": any

    def keys(self) -> list[str]:
        """The API keys (``api_key`` may list several, comma-separated)."""
        return [key.strip() for key in (self.api_key or "").split(",") if key.strip()]


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class _Guard:
    """What is checked before any route runs, as a plain ASGI middleware: the ``Host`` header (against DNS
    rebinding), the API key (every route but ``/health`` and the schema), ``Content-Type: application/json``
    on a body, and the body's size, by its declared length or as it arrives (413). The body is read here, up
    to the limit, and handed on; after it the request's receive channel is left as it is, so a client's
    disconnect is seen."""

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.max_bytes = int(settings.max_body_mb * 2**20)
        allowed = {*LOCAL_HOSTS, *(h.strip().lower() for h in settings.allowed_hosts if h.strip())}
        if settings.host not in ("0.0.0.0", "::", ""):
            allowed.add(f"[{settings.host}]" if ":" in settings.host else settings.host.lower())
        self.any_host = "*" in allowed
        self.allowed = allowed
        self.keys = [f"Bearer {key}".encode() for key in settings.keys()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await _too_large(self.max_bytes)(scope, receive, send)
            if not message.get("more_body"):
                break

        async def replayed():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replayed, send)

    def _refusal(self, scope, headers: dict[bytes, bytes]) -> JSONResponse | None:
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if not self.any_host and host not in self.allowed:
            message = (f"The Host header {host!r} is not one this server answers to; start it with "
                       f"--allowed-hosts {host or 'NAME'} to allow it.")
            return JSONResponse(error_body(message, code="invalid_host"), status_code=400)
        if self.keys and scope["path"] not in ("/health", "/openapi.json"):
            given = headers.get(b"authorization", b"")
            if not any([secrets.compare_digest(given, key) for key in self.keys]):
                return JSONResponse(error_body("A valid API key is required: Authorization: Bearer <key>.",
                                               "authentication_error", code="invalid_api_key"), status_code=401)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return _too_large(self.max_bytes)
        has_body = (declared.isdigit() and int(declared) > 0) or b"transfer-encoding" in headers
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if scope["method"] in ("POST", "PUT", "PATCH") and (has_body or content_type) and content_type != "application/json":
            return JSONResponse(
                error_body("The request body must be JSON, sent with Content-Type: application/json.",
                           code="unsupported_media_type"), status_code=415)
        return None


def _host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` → ``[::1]``, ``Example:80`` → ``example``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _too_large(limit: int) -> JSONResponse:
    size = f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit / 2**10:g} KB"
    return JSONResponse(error_body(f"The request body is larger than this server's limit of {size}.",
                                   code="request_too_large"), status_code=413)


class _ModelLoader:
    """Loads the model in a thread of its own, once, and says how far it is: "loading", "ok" or "error"."""

    def __init__(self, llm: ChatQwenVL):
        self.llm = llm
        self.status = "loading"
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self.then: Any = None  # run once the model is loaded, before "ok": the agent's planner prefix warm-up

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="qwenvl-serve-load", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        log.info("Loading %s (%s engine) …", self.llm.model, self.llm.engine)
        try:
            runtime = self.llm.runtime
        except Exception as exc:  # noqa: BLE001 - any failure is reported by /health and by requests
            log.exception("The model %s could not be loaded", self.llm.model)
            self.error = str(exc) if isinstance(exc, QwenVLError) else f"{type(exc).__name__}: {exc}"
            self.status = "error"
            return
        if self.then is not None:
            try:
                self.then()
            except Exception:  # noqa: BLE001 - the agent works without it, each question then pays for its prefix
                log.exception("The agent's planner prefix could not be prepared")
        log.info("Model %s is ready (engine %s, %s).", self.llm.model, runtime.engine_name, runtime.dtype)
        self.status = "ok"

    def require(self) -> None:
        """Refuse (503) a request that needs the model while it loads or after it failed to load."""
        if self.status == "loading":
            raise RequestError(f"The model {self.llm.model} is still loading; try again in a moment.", status=503,
                               kind="server_busy", code="model_loading")
        if self.status == "error":
            raise RequestError(f"The model could not be loaded: {self.error}", status=503, kind="server_error",
                               code="model_unavailable")


class _Conversations:
    """Which API key started which ``/v1/agent`` conversation. Ids are issued here, unguessable."""

    def __init__(self, assistant: DocumentAssistant):
        self.assistant = assistant
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def new(self, owner: str) -> str:
        """A new conversation of ``owner``, kept by the assistant from now on; its id."""
        thread_id = secrets.token_urlsafe(24)
        self.assistant.store(thread_id)  # created before it is registered, so no other request prunes it
        with self._lock:
            for known in [t for t in self._owners if not self.assistant.has_conversation(t)]:
                del self._owners[known]  # the assistant let it go (idle, or past its count)
            self._owners[thread_id] = owner
        return thread_id

    def check(self, thread_id: str, owner: str) -> None:
        with self._lock:
            mine = secrets.compare_digest(self._owners.get(thread_id, "").encode(), owner.encode()) and thread_id in self._owners
        if not mine or not self.assistant.has_conversation(thread_id):
            raise RequestError(
                "No conversation with this thread_id for this API key (it may have ended after being idle): leave "
                "thread_id out to start a new one.", "thread_id", status=404, kind="not_found_error",
                code="conversation_not_found")


def _owner(request: Request, settings: ServerSettings) -> str:
    """Who a request is for conversations: a digest of its API key ("" when the server has none)."""
    if not settings.keys():
        return ""
    import hashlib

    return hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()


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
    llm = ChatQwenVL(
        model=settings.model,
        engine=settings.engine,
        weights=settings.weights,
        dtype=settings.dtype,
        max_waiting=settings.max_waiting,
        allow_remote_images=False,  # images reach the model decoded, by the rules below
        allow_local_files=False,
        **({"max_tokens": settings.max_new_tokens} if settings.max_new_tokens else {}),
        **({"max_image_tokens": settings.max_image_tokens} if settings.max_image_tokens else {}),
    )
    loader = _ModelLoader(llm)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader.start()  # in its own thread: the server answers (/health: "loading") while the model loads
        yield

    app = FastAPI(title="qwenvl-agent", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(_Guard, settings=settings)
    assistant = DocumentAssistant(
        llm,
        max_pages=settings.max_pdf_pages,
        ocr_engine=settings.ocr_engine,
        max_conversations=settings.max_conversations,
        idle_seconds=settings.conversation_idle_seconds,
        max_image_tokens=settings.max_image_tokens,
        max_tokens=settings.max_new_tokens,
    )
    loader.then = assistant.warm
    conversations = _Conversations(assistant)
    admission = _Admission(1 + settings.max_waiting)
    app.state.llm, app.state.assistant, app.state.settings, app.state.loader = llm, assistant, settings, loader

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.code == "model_loading" else None
        return JSONResponse(error_body(str(exc), exc.kind, exc.param, exc.code), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc.errors())
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Loading, or the load failed"}})
    async def health():
        gate = llm.runtime.gate if loader.status == "ok" else None
        body = {"status": loader.status, "model": settings.model, "model_loaded": gate is not None,
                "busy": bool(gate and gate.busy), "waiting": gate.waiting if gate else 0, "error": loader.error}
        return JSONResponse(body, status_code=200 if gate is not None else 503)

    @app.get("/v1/models", response_model=ModelList, responses=error_responses(401))
    async def models():
        return {"object": "list", "data": [{"id": settings.model, "object": "model", "created": 0, "owned_by": "qwenvl-agent"}]}

    @app.post("/v1/chat/completions", response_model=None,
              responses={200: {"model": ChatCompletion, "content": SSE, "description": "The completion, or its chunks when stream is true"},
                         **error_responses(400, 401, 413, 415, 503)})
    async def chat_completions(request: Request, request_body: ChatCompletionRequest):
        body = request_body.model_dump(by_alias=True, exclude_unset=True)
        options = generation_options(body, settings.max_tokens)
        tools, choice = tools_and_choice(body)
        structured = response_format_of(body).get("type") == "json_schema"
        loader.require()
        try:
            model = llm.bind_tools(tools, tool_choice=choice) if tools else llm
        except ValueError as exc:
            raise RequestError(str(exc), "tools") from exc
        name = body.get("model") or settings.model
        stream_options = body.get("stream_options") or {}
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

    @app.post("/v1/agent", response_model=None,
              responses={200: {"content": SSE, "description": "The agent's typed events; the first, Thread, carries thread_id"},
                         **error_responses(400, 401, 404, 413, 415, 503)})
    async def agent(request: Request, body: AgentRequest):
        question = body.question.strip()
        owner = _owner(request, settings)
        if body.thread_id is not None:
            conversations.check(body.thread_id, owner)
        loader.require()
        files = await asyncio.to_thread(_files, {"images": body.images, "files": body.files}, settings, assistant.dpi)
        _refuse_when_full(llm)
        release = admission.enter()
        thread_id = body.thread_id or await asyncio.to_thread(conversations.new, owner)
        try:
            await asyncio.to_thread(assistant.add_images, files, thread_id)
        except (QwenVLError, ValueError) as exc:
            release()
            raise RequestError(str(exc), "files" if body.files else "images") from exc
        events = _releasing(_sse_events(thread_id, assistant.astream(question, thread_id=thread_id)), release)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Thread-Id": thread_id})

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


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A request body's validation errors as one message and the field it names (``messages[0].content``),
    from the most specific error (pydantic reports one per member of a union)."""
    error = max(errors, key=lambda e: len(e.get("loc") or ()))
    param, tagged, after_index = "", False, False
    for part in error.get("loc") or ():
        if isinstance(part, int):
            param += f"[{part}]"
            after_index = True
            continue
        if tagged and after_index:  # the member of a tagged union, named by its tag ("image_url")
            tagged = False
        elif "tagged-union[" in part:
            tagged = True
        elif part != "body" and part.isidentifier() and part[:1].islower() and part not in _TYPE_NAMES:
            param += f".{part}" if param else part
        after_index = False
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        param += ".type"
    if error.get("type") == "extra_forbidden":
        return f"Unknown field {param!r}: this route does not take it.", param or None
    if error.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {error.get('msg')}.", None
    if not param:
        return f"The request body is not valid: {error.get('msg')}.", None
    return f"{param}: {error.get('msg')}.", param


_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none", "json"}


def _refuse_when_full(llm: ChatQwenVL) -> None:
    """503 at once when the queue is already full, before any work (or a streamed response) starts."""
    gate = llm.runtime.gate
    if gate.busy and gate.waiting >= gate.max_waiting:
        raise BusyError(f"The model is busy: one request is running and {gate.waiting} are waiting. Try again in a moment.")


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


def _files(fields: dict[str, list], settings: ServerSettings, dpi: int) -> list[bytes]:
    """The images and PDFs of an agent request's fields (``images``, then ``files``) as bytes: data URLs or
    base64 (http(s) URLs if allowed)."""
    items = [(f"{field}[{index}]", item) for field, listed in fields.items() for index, item in enumerate(listed)]
    if len(items) > settings.max_images:
        raise RequestError(f"At most {settings.max_images} files per request.", next(f for f, listed in fields.items() if listed))
    files = []
    for where, item in items:
        data = (item.data or item.url) if not isinstance(item, str) else item
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
            _check_pixels(files[-1], where, settings.max_image_pixels, dpi)
            continue
        payload = data.split(",", 1)[1] if data.lower().startswith("data:") and "," in data else data
        try:
            files.append(base64.b64decode("".join(payload.split()), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{where} is not valid base64 data.", where) from exc
        _check_pixels(files[-1], where, settings.max_image_pixels, dpi)
    return files


def _check_pixels(data: bytes, where: str, limit: int, dpi: int) -> None:
    """Refuse an image, or a PDF page as it would be rendered, above the pixel cap (as chat completions do),
    by the sizes the file declares, before anything is decoded or rendered."""
    if data[:5] == b"%PDF-":
        import pypdfium2 as pdfium

        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return  # not readable: the store says why
        try:
            for number in range(len(document)):
                width, height = (round(points * dpi / 72) for points in document.get_page_size(number))
                if width * height > limit:
                    raise RequestError(f"{where}: page {number + 1} is {width}x{height} pixels at {dpi} dpi, "
                                       f"above this server's limit of {limit:,}.", where)
        finally:
            document.close()
        return
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return  # not an image this can read: the store says why
    if width * height > limit:
        raise RequestError(f"{where}: the image is {width}x{height} pixels, above this server's limit of {limit:,}.", where)


def run(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    package_log = logging.getLogger("qwenvl_agent")
    if not package_log.handlers:  # the model's loading progress belongs in the server's log
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        package_log.addHandler(handler)
        package_log.setLevel(logging.INFO)
    app = create_app(dataclasses.replace(settings, host=host))
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


