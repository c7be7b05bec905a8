"""``qwenvl serve``: the local model behind an OpenAI-compatible API, and the agent as a stream of events.

Routes: ``POST /v1/chat/completions`` (streamed or not; images as data URLs, tools, structured output),
``POST /v1/agent`` (a question, typed or spoken, with images or PDFs in, the agent's typed events out as
server-sent events), ``POST /v1/audio/transcriptions`` and ``POST /v1/audio/speech`` (speech in and out,
beside the model: audio.py), ``GET /v1/models``, ``GET /health``. Every route but ``/health`` asks for the API key when one
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

import dataclasses
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from qwenvl_agent.agent import DocumentAssistant
from qwenvl_agent.vlm import ChatQwenVL

from .admission import Admission
from .agent_route import add_agent_route
from .audio import Voice, audio_routes
from .errors import RETRY_AFTER_SECONDS, add_error_handlers
from .guard import LOCAL_HOSTS, Guard
from .loading import ModelLoader, add_health_route
from .openai_routes import add_openai_routes
from .settings import ServerSettings

__all__ = ["LOCAL_HOSTS", "RETRY_AFTER_SECONDS", "ServerSettings", "create_app", "run"]


def create_app(settings: ServerSettings) -> FastAPI:
    """The server's app: the guard in front, then the health, OpenAI and agent routes over one model."""
    llm = ChatQwenVL(
        model=settings.model,
        engine=settings.engine,
        weights=settings.weights,
        dtype=settings.dtype,
        max_waiting=settings.max_waiting,
        allow_remote_images=False,  # images reach the model decoded, by the rules of the routes
        allow_local_files=False,
        **({"max_tokens": settings.max_new_tokens} if settings.max_new_tokens else {}),
        **({"max_image_tokens": settings.max_image_tokens} if settings.max_image_tokens else {}),
    )
    loader = ModelLoader(llm)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader.start()  # in its own thread: the server answers (/health: "loading") while the model loads
        yield

    app = FastAPI(title="qwenvl-agent", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(Guard, settings=settings)
    assistant = DocumentAssistant(
        llm,
        max_pages=settings.max_pdf_pages,
        ocr_engine=settings.ocr_engine,
        max_conversations=settings.max_conversations,
        idle_seconds=settings.conversation_idle_seconds,
        max_image_tokens=settings.max_image_tokens,
        max_tokens=settings.max_new_tokens,
        max_image_pixels=settings.max_image_pixels,
    )
    loader.then = assistant.warm
    admission = Admission(1 + settings.max_waiting)
    app.state.llm, app.state.assistant, app.state.settings, app.state.loader = llm, assistant, settings, loader
    add_error_handlers(app)
    add_health_route(app, llm, settings, loader)
    add_openai_routes(app, llm, settings, loader, admission)
    voice = Voice(settings, Admission(1 + settings.max_waiting))  # speech queues apart from the vision model
    app.include_router(audio_routes(voice))
    add_agent_route(app, llm, assistant, settings, loader, admission, voice)
    return app


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
