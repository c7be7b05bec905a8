"""What is checked before any route runs: the ``Host`` header, the API key, the body's type and size."""

from __future__ import annotations

import secrets

from fastapi.responses import JSONResponse

from .audio import FORM_PATHS
from .openai_format import error_body
from .settings import ServerSettings

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class Guard:
    """What is checked before any route runs, as a plain ASGI middleware: the ``Host`` header (against DNS
    rebinding), the API key (every route but ``/health`` and the schema), ``Content-Type: application/json``
    on a body (``multipart/form-data`` on the routes of ``FORM_PATHS``), and the body's size, by its declared length or as it arrives (413). The body is read here, up
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
                return await too_large(self.max_bytes)(scope, receive, send)
            if not message.get("more_body"):
                break

        async def replayed():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replayed, send)

    def _refusal(self, scope, headers: dict[bytes, bytes]) -> JSONResponse | None:
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
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
            return too_large(self.max_bytes)
        has_body = (declared.isdigit() and int(declared) > 0) or b"transfer-encoding" in headers
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        wanted = "multipart/form-data" if scope["path"] in FORM_PATHS else "application/json"
        if scope["method"] in ("POST", "PUT", "PATCH") and (has_body or content_type) and content_type != wanted:
            what = "JSON" if wanted == "application/json" else "a form (multipart/form-data)"
            return JSONResponse(
                error_body(f"The request body must be {what}, sent with Content-Type: {wanted}.",
                           code="unsupported_media_type"), status_code=415)
        return None


def host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` → ``[::1]``, ``Example:80`` → ``example``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def too_large(limit: int) -> JSONResponse:
    size = f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit / 2**10:g} KB"
    return JSONResponse(error_body(f"The request body is larger than this server's limit of {size}.",
                                   code="request_too_large"), status_code=413)
