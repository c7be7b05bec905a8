"""Every failure as an OpenAI-shaped error body with the status a client can act on."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from qwenvl_agent.vlm import BusyError, ImageInputError, QwenVLError
from qwenvl_agent.vlm.errors import GenerationTimeout, PromptTooLongError

from .openai_format import RequestError, error_body

RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.code == "model_loading" else None
        return JSONResponse(error_body(str(exc), exc.kind, exc.param, exc.code), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        return JSONResponse(error_body(message, param=param), status_code=400)

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


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
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

