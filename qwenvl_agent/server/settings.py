"""What ``qwenvl serve`` is started with: the model, the limits of a request, who may call it."""

from __future__ import annotations

from dataclasses import dataclass

from qwenvl_agent.agent.api import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_CONVERSATIONS
from qwenvl_agent.voice.audio import DEFAULT_MAX_SECONDS
from qwenvl_agent.voice.recognize import DEFAULT_ASR_MODEL


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
    asr_model: str = DEFAULT_ASR_MODEL  # speech recognition: a faster-whisper hub id or folder
    max_audio_seconds: float = DEFAULT_MAX_SECONDS  # the longest audio a request may send

    def keys(self) -> list[str]:
        """The API keys (``api_key`` may list several, comma-separated)."""
        return [key.strip() for key in (self.api_key or "").split(",") if key.strip()]
