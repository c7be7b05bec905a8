"""The OpenAI-shaped routes: ``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed or not)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from qwenvl_agent.vlm import ChatQwenVL, ImageInputError, QwenVLError
from qwenvl_agent.vlm.images import load_image

from .admission import Admission
from .loading import ModelLoader
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
from .schemas import SSE, ChatCompletion, ChatCompletionRequest, ModelList, error_responses
from .settings import ServerSettings
from .sse import DONE, releasing, sse


def add_openai_routes(app: FastAPI, llm: ChatQwenVL, settings: ServerSettings, loader: ModelLoader,
                      admission: Admission) -> None:
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
        llm.runtime.gate.refuse_when_full()
        release = admission.enter()
        try:
            images = ImageRules(settings)
            messages = await asyncio.to_thread(to_messages, body.get("messages"), images.load, settings.max_images)
            if body.get("stream"):
                writer = ChunkWriter(name, structured)
                chunks = _sse_chunks(model.astream(messages, **options), writer, bool(stream_options.get("include_usage")))
                stream, release = releasing(chunks, release), None  # the stream lets the place go
                return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            reply = await _until_disconnected(request, model.ainvoke(messages, **options))
            return completion(reply, name, structured)
        finally:
            if release is not None:
                release()


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
    yield sse(writer.chunk({"role": "assistant", "content": ""}))
    try:
        async for piece in stream:
            for delta in writer.deltas(piece):
                yield sse(writer.chunk(delta))
            if piece.chunk_position == "last":
                yield sse(writer.chunk({}, writer.finish_reason(piece)))
                if include_usage:
                    yield sse(writer.chunk(None, usage=usage(piece.usage_metadata)))
    except QwenVLError as exc:
        yield sse(error_body(str(exc), "server_error"))
    yield DONE


class ImageRules:
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
