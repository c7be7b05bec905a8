"""What the page keeps: its launch settings, the model shared by every browser session, and one
``Conversation`` per session (its assistant, files and turns).

Tests substitute the planner by replacing ``make_planner`` (``monkeypatch.setattr(state, "make_planner",
lambda settings, vlm: ScriptedPlanner(...))``); the vision model under the tools stays the real
``ChatQwenVL`` on the chosen model.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
from langchain_core.language_models import BaseChatModel
from PIL import Image

from qwenvl_agent.agent import DocumentAssistant
from qwenvl_agent.agent.api import new_thread_id
from qwenvl_agent.tools import DEFAULT_OCR_ENGINE, ImageStore
from qwenvl_agent.vlm import DEFAULT_MODEL, ChatQwenVL, VLMRuntime, load_runtime
from qwenvl_agent.vlm.errors import ImageInputError
from qwenvl_agent.vlm.runtime import loaded_runtimes, release_runtime, resolve_dtype, resolve_engine

from .answering import Answering
from .render import Turn, thumbnail

MODEL_ENV = "QWENVL_MODEL"
FILE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "pdf")
# With MIME types in the list Streamlit leaves the extension check to the page, which can then say what
# went wrong with st.error instead of raising; the browser's file picker uses both.
FILE_TYPES = [f".{ext}" for ext in FILE_EXTENSIONS] + [
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "application/pdf",
]
ACCEPTED = "Upload PNG, JPEG, WebP, BMP or TIFF images, or PDFs."
MAX_UPLOAD_MB = 50
MAX_LABEL_CHARS = 60


@dataclass(frozen=True)
class Settings:
    """What the sidebar chooses; a change starts the assistant afresh (the files are kept)."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    engine: str = "auto"
    weights: str = "int8"
    ocr_engine: str = DEFAULT_OCR_ENGINE
    max_image_tokens: int = 1024
    max_new_tokens: int = 512
    max_steps: int = 8
    backend: str = "local"
    base_url: str | None = None
    lock_settings: bool = False


def launch_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the arguments after ``--`` of ``streamlit run app.py -- --model M --dtype D …``
    (what ``qwenvl ui`` runs; also ``--max-image-tokens``, ``--max-new-tokens``, ``--max-steps``). The model
    defaults to ``$QWENVL_MODEL``, else Qwen3-VL-2B-Instruct."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model", default=environ.get(MODEL_ENV) or DEFAULT_MODEL)
    parser.add_argument("--dtype", default=Settings.dtype)
    parser.add_argument("--engine", default=Settings.engine)
    parser.add_argument("--weights", default=Settings.weights)
    parser.add_argument("--ocr-engine", default=Settings.ocr_engine)
    parser.add_argument("--max-image-tokens", type=int, default=Settings.max_image_tokens)
    parser.add_argument("--max-new-tokens", type=int, default=Settings.max_new_tokens)
    parser.add_argument("--max-steps", type=int, default=Settings.max_steps)
    parser.add_argument("--backend", default=Settings.backend)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--lock-settings", action="store_true")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return Settings(
        args.model, args.dtype, args.engine, args.weights, args.ocr_engine, args.max_image_tokens,
        args.max_new_tokens, args.max_steps, args.backend, args.base_url, args.lock_settings,
    )


# The model, once per process


def is_loaded(settings: Settings) -> bool:
    """Whether this model is already in memory (then the page shows no loading status)."""
    engine = resolve_engine(settings.engine)
    precision = settings.weights if engine == "openvino" else resolve_dtype(settings.dtype)
    return any(
        r.model_id == settings.model and r.engine_name == engine and r.dtype == precision for r in loaded_runtimes()
    )


@st.cache_resource(show_spinner=False)
def shared_runtime(model: str, dtype: str, engine: str = "auto", weights: str = "int8") -> VLMRuntime:
    """The loaded model, shared by every browser session of this process."""
    return load_runtime(model, None, dtype, engine=engine, weights=weights)


_page_model: dict[str, VLMRuntime] = {}


def release_others(runtime: VLMRuntime) -> None:
    """Free the model the page used before this one (its settings changed): memory holds one copy at a time."""
    previous = _page_model.get("current")
    _page_model["current"] = runtime
    if previous is not None and previous is not runtime and release_runtime(previous):
        shared_runtime.clear()


def vision_model(settings: Settings) -> BaseChatModel:
    """The model behind the tools (and by default the planner): cheap to build, the weights are shared. With
    ``--backend openai`` it is the remote server's model."""
    if settings.backend != "local":
        from qwenvl_agent.agent.backends import chat_model

        return chat_model(settings.backend, model=settings.model, base_url=settings.base_url, max_tokens=settings.max_new_tokens)
    return ChatQwenVL(
        model=settings.model,
        engine=settings.engine,
        weights=settings.weights,
        dtype=settings.dtype,
        max_tokens=settings.max_new_tokens,
        max_image_tokens=settings.max_image_tokens,
    )


def make_planner(settings: Settings, vlm: BaseChatModel) -> BaseChatModel:
    """The planner of a session's assistant: the vision model itself, one copy of the weights.
    Tests replace this function to script the planner."""
    return vlm


# One conversation per browser session


@dataclass
class Upload:
    data: bytes
    label: str


@dataclass
class Conversation:
    """A browser session's conversation: what is shown (``turns``), the files given (kept in memory, so a
    settings change can hand them to a new assistant under the same ids) and the assistant."""

    turns: list[Turn] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    sidebar_files: dict[str, str | None] = field(default_factory=dict)  # uploader file id -> error or None
    unshown_ids: list[str] = field(default_factory=list)  # sidebar files not yet shown with a question
    thread_id: str = field(default_factory=new_thread_id)
    settings: Settings | None = None
    assistant: DocumentAssistant | None = None
    answering: Answering | None = None  # the answer being written, drawn or not
    _thumbnails: dict[str, Image.Image] = field(default_factory=dict, repr=False)

    def use(self, settings: Settings) -> None:
        """Talk through an assistant for ``settings`` from now on; a new one when they changed."""
        if self.assistant is not None and settings == self.settings:
            return
        self.close()  # the files are read again by the new assistant
        vlm = vision_model(settings)
        self.assistant = DocumentAssistant(
            make_planner(settings, vlm),
            vlm=vlm,
            max_steps=settings.max_steps,
            ocr_engine=settings.ocr_engine,
            max_image_tokens=settings.max_image_tokens,  # the page's settings reach the tools too
            max_tokens=settings.max_new_tokens,
        )
        self.settings = settings
        self.thread_id = new_thread_id()
        self._thumbnails.clear()
        for upload in self.uploads:
            self.store.add(upload.data, name=upload.label)

    @property
    def store(self) -> ImageStore:
        return self.assistant.store(self.thread_id)

    def close(self) -> None:
        """Stop its answer and the reading of its pages in the background (they are no longer wanted)."""
        if self.answering is not None:
            self.answering.stop()
        if self.assistant is not None:
            self.store.index.close(timeout=0)

    def add_file(self, name: str, data: bytes, progress: Callable[[int, int], Any] | None = None) -> list[str]:
        """Add an uploaded image or PDF and return its ids; ``ImageInputError`` says what is wrong with it."""
        label = upload_label(name)
        if file_extension(name) not in FILE_EXTENSIONS:
            raise ImageInputError(f"{label} is not a file type the assistant reads. {ACCEPTED}")
        try:
            added = self.store.add(data, name=label, progress=progress)
        except ImageInputError as exc:
            raise ImageInputError(f"{label} could not be used: {exc} {ACCEPTED}") from exc
        self.uploads.append(Upload(data, label))
        return added if isinstance(added, list) else [added]

    def answer(self, question: str, reply: Turn, queued: str = "") -> Answering:
        """Start answering ``question`` into ``reply`` (a turn of this conversation); it runs until it ends or
        is stopped, across reruns of the page."""
        assistant, thread_id = self.assistant, self.thread_id
        self.answering = Answering(
            lambda: assistant.stream(question, thread_id=thread_id), reply, self.store, queued=queued
        )
        return self.answering

    def answer_ended(self) -> bool:
        """Forget the answer once it has ended (its turn holds it); True if there was one to forget."""
        if self.answering is not None and self.answering.done:
            self.answering = None
            return True
        return False

    def thumbnail(self, image_id: str) -> Image.Image:
        if image_id not in self._thumbnails:
            self._thumbnails[image_id] = thumbnail(self.store.get(image_id))
        return self._thumbnails[image_id]



def file_extension(name: str) -> str:
    return Path(name).suffix.lower().lstrip(".")


def upload_label(name: str) -> str:
    """A display label from the client's file name: the last path part, plain characters only. Only a
    label: nothing is written to disk under it."""
    base = re.split(r"[\\/]", name or "")[-1]
    label = re.sub(r"[^\w .()-]+", "_", base).strip(" ._") or "upload"
    return label[:MAX_LABEL_CHARS]


def conversation() -> Conversation:
    """This browser session's conversation."""
    if "conversation" not in st.session_state:
        st.session_state.conversation = Conversation()
    return st.session_state.conversation


def clear_conversation() -> None:
    """Forget the turns, files and memory; the uploader starts empty again (a new widget key)."""
    if "conversation" in st.session_state:
        st.session_state.conversation.close()
    st.session_state.conversation = Conversation()
    st.session_state.uploader_round = st.session_state.get("uploader_round", 0) + 1
