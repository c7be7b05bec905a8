"""The model loads at start-up in a thread of its own; ``/health`` says how far it is."""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from qwenvl_agent.vlm import ChatQwenVL, QwenVLError

from .openai_format import RequestError
from .schemas import Health
from .settings import ServerSettings

log = logging.getLogger(__name__)


class ModelLoader:
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
        log.info("Model %s is ready (engine %s, %s).", self.llm.model, runtime.engine_name, runtime.weights)
        self.status = "ok"

    def require(self) -> None:
        """Refuse (503) a request that needs the model while it loads or after it failed to load."""
        if self.status == "loading":
            raise RequestError(f"The model {self.llm.model} is still loading; try again in a moment.", status=503,
                               kind="server_busy", code="model_loading")
        if self.status == "error":
            raise RequestError(f"The model could not be loaded: {self.error}", status=503, kind="server_error",
                               code="model_unavailable")


def add_health_route(app: FastAPI, llm: ChatQwenVL, settings: ServerSettings, loader: ModelLoader) -> None:
    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Loading, or the load failed"}})
    async def health():
        gate = llm.runtime.gate if loader.status == "ok" else None
        body = {"status": loader.status, "model": settings.model, "model_loaded": gate is not None,
                "busy": bool(gate and gate.busy), "waiting": gate.waiting if gate else 0, "error": loader.error}
        return JSONResponse(body, status_code=200 if gate is not None else 503)
