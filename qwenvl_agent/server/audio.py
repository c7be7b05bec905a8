"""``/v1/audio/*``: OpenAI-compatible speech routes over ``qwenvl_agent.voice``, and the spoken question of
``/v1/agent``.

- ``POST /v1/audio/transcriptions``: multipart ``file`` (wav, mp3, ogg/opus, webm, m4a, …), ``model``,
  ``language``, ``response_format`` ``json`` (``{"text"}``), ``text`` (the text alone) or ``verbose_json``
  (``text``, ``language`` as an ISO 639-1 code, ``duration`` in seconds, ``segments`` with ``id``,
  ``start``, ``end``, ``text``). The server transcribes with its own model (``--asr-model``); ``model`` is
  accepted as OpenAI's clients send it (``whisper-1``) and not used to load anything.
- ``POST /v1/audio/speech``: JSON ``input``, ``voice``, ``response_format`` (``wav``; the default here).
  ``voice`` is an espeak-ng voice (``en-us``, ``cmn``) or a Piper voice name; OpenAI's voice names
  (``alloy``, ``nova``, …) mean this server's default, which follows the language of the text.

Speech runs beside the vision model, never under its generation gate, in a queue of its own with the same
bound (one running, ``max_waiting`` waiting; beyond it ``503`` with ``Retry-After``). Bad audio (empty,
silent, corrupt, not audio, longer than ``max_audio_seconds``) is ``400`` naming the problem.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field

from qwenvl_agent.vlm.errors import EngineError, ModelNotAvailableError

from .openai_format import RequestError
from .schemas import _Request, error_responses

# The routes that take a form (multipart) body; every other route takes JSON.
FORM_PATHS = frozenset({"/v1/audio/transcriptions"})
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse", "marin", "cedar"})
RESPONSE_FORMATS = ("json", "text", "verbose_json")


class SpeechRequest(_Request):
    input: str = Field(min_length=1, pattern=r"\S", description="The text to speak.")
    model: str | None = Field(None, description="Accepted as OpenAI's clients send it (tts-1); not used.")
    voice: str | None = Field(None, description="An espeak-ng voice (en-us, cmn) or a Piper voice name; OpenAI's names "
                                                "(alloy, nova, …) and none mean the default, which follows the text's language.")
    response_format: Literal["wav"] = "wav"


class Voice:
    """The server's speech settings (``asr_model``, ``max_audio_seconds``) and its queue for speech, apart from
    the vision model's: ``admission.enter()`` lets one request in (or raises ``BusyError``) and returns its release."""

    def __init__(self, settings, admission):
        self.settings, self.admission = settings, admission

    async def transcribe(self, audio: bytes, language: str | None, param: str):
        """The transcript of ``audio`` (bytes of a file), or ``RequestError``: 400 for bad audio or language,
        503 when the recognition model cannot be had or the queue is full."""
        from qwenvl_agent.voice import AudioInputError, transcribe

        release = self.admission.enter()
        try:
            return await asyncio.to_thread(
                transcribe, audio, language or None, model=self.settings.asr_model,
                max_seconds=self.settings.max_audio_seconds)
        except AudioInputError as exc:
            raise RequestError(f"{param}: {exc}", param, code="invalid_audio") from exc
        except (ModelNotAvailableError, EngineError) as exc:
            raise RequestError(f"Speech recognition is not available: {exc}", status=503, kind="server_error",
                               code="model_unavailable") from exc
        except ValueError as exc:  # an unknown language
            raise RequestError(str(exc), "language") from exc
        finally:
            release()

    async def speak(self, text: str, voice: str | None):
        from qwenvl_agent.voice import synthesize

        if voice and voice.strip().lower() in OPENAI_VOICES:
            voice = None
        if voice and ("/" in voice or "\\" in voice or voice.endswith(".onnx")):
            raise RequestError("voice: a request names a voice (en-us, cmn, en_US-lessac-medium), not a file.", "voice")
        release = self.admission.enter()
        try:
            return await asyncio.to_thread(synthesize, text, voice)
        except ModelNotAvailableError as exc:
            raise RequestError(f"voice: {exc}", "voice", code="voice_unavailable") from exc
        except EngineError as exc:
            raise RequestError(f"Speech synthesis is not available: {exc}", status=503, kind="server_error",
                               code="model_unavailable") from exc
        except ValueError as exc:
            raise RequestError(str(exc), "voice" if "voice" in str(exc).lower() else "input") from exc
        finally:
            release()


def audio_routes(voice: Voice) -> APIRouter:
    """The ``/v1/audio/*`` routes over ``voice`` (the server's speech settings and queue)."""
    router = APIRouter()

    @router.post("/v1/audio/transcriptions", response_model=None, responses={
        200: {"content": {"application/json": {}, "text/plain": {}},
              "description": "The transcript: JSON ({text}, or verbose_json), or the text alone for text"},
        **error_responses(400, 401, 413, 415, 503)})
    async def transcriptions(
        file: UploadFile = File(description="The audio: wav, mp3, ogg/opus, webm, m4a, …"),
        model: str | None = Form(None, description="Accepted as OpenAI's clients send it (whisper-1); not used."),
        language: str | None = Form(None, description="en, zh, … (also zh-CN); detected when absent."),
        response_format: str = Form("json", description="json, text or verbose_json"),
    ):
        if response_format not in RESPONSE_FORMATS:
            raise RequestError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}; got {response_format!r}.",
                               "response_format")
        transcript = await voice.transcribe(await file.read(), language, "file")
        if response_format == "text":
            return PlainTextResponse(transcript.text)
        if response_format == "json":
            return JSONResponse({"text": transcript.text})
        return JSONResponse({
            "task": "transcribe", "language": transcript.language, "duration": transcript.seconds,
            "text": transcript.text,
            "segments": [{"id": i, "start": s.start, "end": s.end, "text": s.text} for i, s in enumerate(transcript.segments)],
        })

    @router.post("/v1/audio/speech", response_class=Response, responses={
        200: {"content": {"audio/wav": {}}, "description": "The speech as a WAV file"}, **error_responses(400, 401, 413, 415, 503)})
    async def speech(body: SpeechRequest):
        spoken = await voice.speak(body.input, body.voice)
        return Response(spoken.wav, media_type="audio/wav",
                         headers={"X-Voice": f"{spoken.voice.name} ({spoken.voice.engine})"})

    return router


def audio_bytes(data: str, param: str = "audio") -> bytes:
    """An agent request's spoken question: a data URL (``data:audio/webm;base64,…``) or base64 text."""
    payload = data.split(",", 1)[1] if data.lower().startswith("data:") and "," in data else data
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{param} is not valid base64 data.", param) from exc
