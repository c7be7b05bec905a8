"""``POST /v1/agent``: a question with images or PDFs in, the agent's typed events out; conversations by
``thread_id``, each belonging to the API key that started it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from qwenvl_agent.agent import DocumentAssistant, event_to_dict
from qwenvl_agent.vlm import ChatQwenVL, ImageInputError, PixelLimitError, QwenVLError

from .admission import Admission
from .audio import Voice, audio_bytes
from .loading import ModelLoader
from .openai_format import RequestError
from .schemas import SSE, AgentRequest, error_responses
from .settings import ServerSettings
from .sse import DONE, releasing, sse


def add_agent_route(app: FastAPI, llm: ChatQwenVL, assistant: DocumentAssistant, settings: ServerSettings,
                    loader: ModelLoader, admission: Admission, voice: Voice) -> None:
    conversations = Conversations(assistant)

    @app.post("/v1/agent", response_model=None,
              responses={200: {"content": SSE, "description": "The agent's typed events; the first, Thread, carries thread_id"},
                         **error_responses(400, 401, 404, 413, 415, 503)})
    async def agent(request: Request, body: AgentRequest):
        owner = _owner(request, settings)
        if body.thread_id is not None:
            conversations.check(body.thread_id, owner)
        loader.require()
        heard = None
        if body.audio is not None:  # a spoken question: transcribed before it queues for the vision model
            heard = await voice.transcribe(audio_bytes(body.audio), body.language, "audio")
            if not heard.text.strip():
                raise RequestError("audio: no words were heard in the recording.", "audio", code="invalid_audio")
        question = heard.text.strip() if heard else body.question.strip()
        files = await asyncio.to_thread(_files, {"images": body.images, "files": body.files}, settings)
        llm.runtime.gate.refuse_when_full()
        release = admission.enter()
        thread_id = body.thread_id or await asyncio.to_thread(conversations.new, owner)
        try:
            await asyncio.to_thread(_add_files, assistant, files, thread_id)
        except RequestError:
            release()
            raise
        except (QwenVLError, ValueError) as exc:
            release()
            raise RequestError(str(exc), "files" if body.files else "images") from exc
        events = releasing(_sse_events(thread_id, assistant.astream(question, thread_id=thread_id), heard), release)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Thread-Id": thread_id})


class Conversations:
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
    return hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()


async def _sse_events(thread_id: str, events: AsyncIterator, heard=None) -> AsyncIterator[str]:
    yield sse({"event": "Thread", "thread_id": thread_id})
    if heard is not None:  # the question as it was heard, before anything is answered
        yield sse({"event": "Transcript", "text": heard.text, "language": heard.language, "seconds": heard.seconds})
    async for event in events:
        yield sse(event_to_dict(event))
    yield DONE


def _files(fields: dict[str, list], settings: ServerSettings) -> list[tuple[str, bytes]]:
    """The images and PDFs of an agent request's fields (``images``, then ``files``) as bytes, each with the
    field that sent it (``images[0]``): data URLs or base64 (http(s) URLs if allowed)."""
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
                files.append((where, fetch(data, timeout=10.0, max_bytes=int(settings.max_body_mb * 2**20), allow_private=False)))
            except ImageInputError as exc:
                raise RequestError(f"{where}: {exc}", where) from exc
            continue
        payload = data.split(",", 1)[1] if data.lower().startswith("data:") and "," in data else data
        try:
            files.append((where, base64.b64decode("".join(payload.split()), validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{where} is not valid base64 data.", where) from exc
    return files


def _add_files(assistant: DocumentAssistant, files: list[tuple[str, bytes]], thread_id: str) -> None:
    """Add the files to the conversation in turn. The store checks each image, and each PDF page by the size it
    declares before anything is rendered, against the server's pixel cap; a file past it is refused naming
    its field, as chat completions do."""
    for where, data in files:
        try:
            assistant.add_images([data], thread_id)
        except PixelLimitError as exc:
            size = f"{exc.width}x{exc.height} pixels"
            what = f"page {exc.page} is {size} at {exc.dpi} dpi" if exc.page else f"the image is {size}"
            raise RequestError(f"{where}: {what}, above this server's limit of {exc.limit:,}.", where) from exc
