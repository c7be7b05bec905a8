"""``ask`` and ``stream``: the agent for programs and front ends, with conversations that remember.

A ``DocumentAssistant`` keeps, per ``thread_id``, the conversation's ``ImageStore`` and its LangGraph
memory, so a follow-up question sees the earlier images and answers. It keeps a bounded number of them
(``max_conversations``) and lets go of those idle too long (``idle_seconds``). The module-level
``ask``/``stream`` use one shared assistant per planner model (a few models at most).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachetools import LRUCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from qwenvl_agent.tools import DEFAULT_OCR_ENGINE, ImageStore, check_ocr_engine
from qwenvl_agent.vlm.bridge import WorkerRun
from qwenvl_agent.vlm.cancel import CancelSignal, scoped_context
from qwenvl_agent.vlm.cancel import current as current_cancel
from qwenvl_agent.vlm.errors import QwenVLError

from .backends import planner_model
from .event_builder import EventBuilder
from .events import Answer, Error, Event, Step, StepStarted
from .graph import SYSTEM_PROMPT, build_agent
from .warm_up import is_loaded, warm_up

log = logging.getLogger(__name__)
_STREAM_MODES = ["updates", "messages"]

DEFAULT_MAX_CONVERSATIONS = 64
"""Conversations a ``DocumentAssistant`` keeps by default; past it, the least recently used one goes."""
DEFAULT_IDLE_SECONDS = 1800.0
"""A conversation unused for this long (by default) is let go when the next one starts."""


class AgentError(RuntimeError):
    """An agent run ended with an ``Error`` event; the message says why."""


@dataclass
class AgentResult:
    answer: str
    steps: list[Step]
    store: ImageStore
    thread_id: str
    stopped_early: bool = False
    seconds: float | None = None  # the whole run
    first_token_seconds: float | None = None  # from the question to the answer's first streamed token


@dataclass
class _Conversation:
    store: ImageStore
    graph: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    runs: int = 0  # runs under way (sync or async): a conversation in use is never let go


class DocumentAssistant:
    """The document agent with memory per conversation (``thread_id``).

    ``model`` is the planner: a LangChain chat model, or a model name for ``ChatQwenVL`` (default
    ``ChatQwenVL()``), or with ``backend="openai"``, ``base_url`` and ``api_key`` the name a remote
    OpenAI-compatible server knows. ``vlm`` is the vision model behind the tools (default: the planner). With
    the defaults both are one loaded copy of Qwen3-VL. ``ocr_engine`` is the OCR tool's
    engine: "rapidocr" (default), "vlm" or "hybrid". ``max_image_tokens`` and ``max_tokens`` replace the
    tools' own image budgets and reply lengths. ``index_pages=False`` turns off the page index (the text of
    every page, for ``search_document`` and ``read_page_text``) of each conversation's store.
    ``max_image_pixels`` bounds one image, or one PDF page as rendered, in each conversation's store
    (``PixelLimitError`` past it; default: the store's own bound).

    Conversations are bounded: at most ``max_conversations`` are kept (the least recently used one is let go
    first), and one unused for ``idle_seconds`` is let go when a new one starts; a conversation with a run under
    way is never let go. ``None`` lifts a bound.

    ``warm_prefix`` (default on): the planner's system prompt and tool schemas are prefilled once and kept (in
    memory and in the cache folder, see ``warm``), so the first planner call of a question prefills only the
    question: when the assistant is built if the planner's model is loaded by then, else at the first question.
    The tools' fixed instructions (the chart's reply format) are kept the same way on the tools' model (``vlm``),
    also under a planner that keeps no prefix (a remote server).
    """

    def __init__(
        self,
        model: BaseChatModel | str | None = None,
        *,
        backend: str = "local",
        base_url: str | None = None,
        api_key: str | None = None,
        vlm: BaseChatModel | None = None,
        max_steps: int = 8,
        dpi: int = 144,
        max_pages: int = 50,
        system_prompt: str = SYSTEM_PROMPT,
        ocr_engine: str = DEFAULT_OCR_ENGINE,
        max_image_tokens: int | None = None,
        max_tokens: int | None = None,
        max_conversations: int | None = DEFAULT_MAX_CONVERSATIONS,
        idle_seconds: float | None = DEFAULT_IDLE_SECONDS,
        index_pages: bool = True,
        max_image_pixels: int | None = None,
        warm_prefix: bool = True,
    ):
        check_ocr_engine(ocr_engine)
        _check_bound("max_conversations", max_conversations, whole=True)
        _check_bound("idle_seconds", idle_seconds, whole=False)
        model = planner_model(model, backend, base_url, api_key)
        self.model = model
        self.vlm = vlm or model
        self.max_steps = max_steps
        self.dpi = dpi
        self.max_pages = max_pages
        self.system_prompt = system_prompt
        self.ocr_engine = ocr_engine
        self.tool_budgets = {"max_image_tokens": max_image_tokens, "max_tokens": max_tokens}
        self.max_conversations = max_conversations
        self.idle_seconds = idle_seconds
        self.index_pages = index_pages
        self.max_image_pixels = max_image_pixels
        self._checkpointer = InMemorySaver()
        self._conversations: dict[str, _Conversation] = {}
        self._lock = threading.Lock()
        self.warm_prefix = warm_prefix
        if warm_prefix and (is_loaded(model) or is_loaded(self.vlm)):
            self._warm_quietly()

    def warm(self) -> Any:
        """Have the planner's prompt prefix (the system prompt and the tool schemas) ready now: kept in memory,
        read from the cache folder, or computed (and saved there). Loads the planner's model. Returns what was
        done (a ``WarmPrefix``), or None for a planner that keeps no prefix (a remote server, a ChatQwenVL with
        ``reuse_prefix=False``). The tools' own fixed instructions (``system_prompt``, such as the chart format) are
        made ready the same way on the tools' model, whatever the planner is, and the offline OCR engine they read
        with (``prepare_ocr``)."""
        return warm_up(self, load_planner=True, load_tools_model=True)

    def _warm_quietly(self) -> None:
        """Warm what is loaded, as the assistant is built: a failure here is the first run's to report (it meets
        it too)."""
        try:
            warm_up(self, load_planner=False, load_tools_model=False)
        except Exception as exc:  # noqa: BLE001 - the run that follows reports what is wrong
            log.info("The planner's prompt prefix was not prepared: %s", exc)

    def has_conversation(self, thread_id: str) -> bool:
        """Whether conversation ``thread_id`` is still kept (not yet let go for being idle or past the count)."""
        with self._lock:
            return thread_id in self._conversations

    def store(self, thread_id: str) -> ImageStore:
        """The images of conversation ``thread_id`` (created empty on first use)."""
        return self._conversation(thread_id).store

    def add_images(self, images: Iterable[Any], thread_id: str, progress=None) -> list[str]:
        """Add images or PDFs (paths, bytes, PIL images) to a conversation; return the new ids."""
        store = self.store(thread_id)
        ids: list[str] = []
        for source in images:
            added = store.add(source, name=_display_name(source), progress=progress)
            ids.extend(added if isinstance(added, list) else [added])
        return ids

    def stream(
        self,
        question: str,
        images: Iterable[Any] = (),
        thread_id: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Run the agent and yield its events; the last is an ``Answer`` or an ``Error``. Closing the stream
        early, or setting ``cancel`` (from any thread), stops the running generation within a token or so,
        frees the model and ends the run."""
        run = self._begin(question, images, thread_id)
        if isinstance(run, Error):
            yield run
            return
        conversation, inputs, config, builder = run
        stopped = cancel or threading.Event()
        context = scoped_context(stopped)  # every model call of this run, in any thread, watches ``stopped``
        try:
            # One run at a time per conversation keeps its memory in order; a run stopped while it waits ends.
            if not _take_turn(conversation.lock, context.run(current_cancel)):
                return
            try:
                yield StepStarted(1)
                updates = context.run(conversation.graph.stream, inputs, config, stream_mode=_STREAM_MODES)
                try:
                    if self.warm_prefix:
                        # At once when it is held; else read from disk or computed, once. It meets what the first
                        # planner call would (the model not loading, a busy queue, a stop) and ends the run so.
                        # A run warms the planner it is about to call, not a tools' model it may not need.
                        context.run(warm_up, self, True, False)
                    while (item := context.run(next, updates, None)) is not None:
                        yield from builder.feed(*item)
                        if stopped.is_set():
                            return
                    yield builder.answer(conversation.graph.get_state(config).values["messages"])
                except Exception as exc:  # noqa: BLE001 - every failure becomes an Error event for the front end
                    yield _error_event(exc)
                finally:
                    stopped.set()
                    context.run(updates.close)
            finally:
                conversation.lock.release()
        finally:
            self._finish(conversation)

    async def astream(
        self, question: str, images: Iterable[Any] = (), thread_id: str | None = None
    ) -> AsyncIterator[Event]:
        """``stream`` for asyncio: the run (adding the files, the models, the tools) goes on in a worker thread and
        the event loop only awaits its events. Runs of one conversation take turns, as with ``stream``.
        Cancelling the task (or closing the stream) stops the running generation within a token or so."""
        run = WorkerRun(lambda: self.stream(question, images, thread_id), name="qwenvl-agent-run")
        async for event in run.aiterate():
            yield event

    def ask(self, question: str, images: Iterable[Any] = (), thread_id: str | None = None) -> AgentResult:
        """Run the agent to the end and return the answer and its steps; ``AgentError`` if it failed."""
        thread_id = thread_id or new_thread_id()
        return self._result(self.stream(question, images, thread_id), thread_id)

    async def aask(self, question: str, images: Iterable[Any] = (), thread_id: str | None = None) -> AgentResult:
        thread_id = thread_id or new_thread_id()
        events = [event async for event in self.astream(question, images, thread_id)]
        return self._result(events, thread_id)

    def _result(self, events: Iterable[Event], thread_id: str) -> AgentResult:
        for event in events:
            if isinstance(event, Error):
                raise AgentError(event.message)
            if isinstance(event, Answer):
                return AgentResult(event.text, event.steps, self.store(thread_id), thread_id, event.stopped_early,
                                   event.seconds, event.first_token_seconds)
        raise AgentError("The agent ended without an answer.")

    def _begin(self, question: str, images: Iterable[Any], thread_id: str | None):
        """Check the question, add the images, and return what a run needs, or the ``Error`` that stops it."""
        if not question or not question.strip():
            return Error("The question is empty: type what you want to know about the images.")
        started = time.perf_counter()
        thread_id = thread_id or new_thread_id()
        conversation = self._conversation(thread_id, run=True)  # the caller calls _finish when the run ends
        try:
            self.add_images(images, thread_id)
        except (QwenVLError, ValueError) as exc:
            self._finish(conversation)
            return Error(str(exc))
        message = HumanMessage(content=_question_text(question.strip(), conversation.store))
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 4 * self.max_steps + 10}
        return conversation, {"messages": [message]}, config, EventBuilder(conversation.store, started)

    def _conversation(self, thread_id: str, run: bool = False) -> _Conversation:
        with self._lock:
            if thread_id not in self._conversations:
                self._forget_old()
                limit = {"max_image_pixels": self.max_image_pixels} if self.max_image_pixels else {}
                store = ImageStore(dpi=self.dpi, max_pages=self.max_pages, index_pages=self.index_pages, **limit)
                graph = build_agent(
                    self.model,
                    store=store,
                    vlm=self.vlm,
                    max_steps=self.max_steps,
                    system_prompt=self.system_prompt,
                    checkpointer=self._checkpointer,
                    ocr_engine=self.ocr_engine,
                    **self.tool_budgets,
                )
                self._conversations[thread_id] = _Conversation(store, graph)
            conversation = self._conversations[thread_id]
            conversation.last_used = time.monotonic()
            conversation.runs += run
            return conversation

    def _finish(self, conversation: _Conversation) -> None:
        """A run of ``conversation`` ended (it may be let go again)."""
        with self._lock:
            conversation.runs -= 1
            conversation.last_used = time.monotonic()

    def _forget_old(self) -> None:
        """Drop idle conversations, then the least recently used past the count; the caller holds the lock."""
        now = time.monotonic()
        by_age = sorted(self._conversations.items(), key=lambda item: item[1].last_used)
        for index, (thread_id, conversation) in enumerate(by_age):
            idle = self.idle_seconds is not None and now - conversation.last_used > self.idle_seconds
            over = self.max_conversations is not None and len(by_age) - index >= self.max_conversations
            if (idle or over) and conversation.runs == 0 and not conversation.lock.locked():
                del self._conversations[thread_id]
                self._checkpointer.delete_thread(thread_id)
                conversation.store.index.close(timeout=0)  # its pages are no longer wanted


def _check_bound(name: str, value: Any, whole: bool) -> None:
    """A conversation bound is None (no bound) or a number above 0; ``ValueError`` naming it otherwise."""
    kinds = int if whole else (int, float)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kinds) or not value > 0):
        what = "a whole number above 0" if whole else "a number of seconds above 0"
        raise ValueError(f"{name} must be {what}, or None for no bound; got {value!r}.")


def _take_turn(lock: threading.Lock, stop: CancelSignal | None) -> bool:
    """Acquire ``lock``, waiting as long as it takes unless the run is stopped meanwhile (then False)."""
    while not lock.acquire(timeout=0.1):
        if stop is not None and stop.is_set():
            return False
    return True


def _question_text(question: str, store: ImageStore) -> str:
    if len(store) == 0:
        return f"{question}\n\n(No images or documents have been given.)"
    return f"{question}\n\nImages and pages you can use (give the id to a tool):\n{store.describe()}"


def _display_name(source: Any) -> str | None:
    if isinstance(source, Path):
        return source.name
    if isinstance(source, str) and len(source) < 1024 and Path(source).is_file():
        return Path(source).name
    return None


def _error_event(exc: Exception) -> Error:
    if isinstance(exc, QwenVLError):
        return Error(str(exc))
    if any(kind.__module__.split(".")[0] == "openai" for kind in type(exc).__mro__):
        # a remote backend's answer (langchain-openai wraps it in subclasses): its message says it all
        return Error(f"The model server did not answer the request ({type(exc).__name__}): {exc}")
    log.exception("Agent run failed")
    return Error(f"The agent failed: {type(exc).__name__}: {exc}")


def new_thread_id() -> str:
    return uuid.uuid4().hex


# Assistants of the module-level functions, most recently used last. Each keeps its planner alive, so a
# program that passes a new model to every call must not keep them all: past this many, the oldest goes.
_DEFAULT_ASSISTANTS = 4
_default_assistants: LRUCache[int, DocumentAssistant] = LRUCache(maxsize=_DEFAULT_ASSISTANTS)
_default_lock = threading.Lock()


def default_assistant(model: BaseChatModel | None = None) -> DocumentAssistant:
    """The shared assistant of a planner model, where the conversations of module-level ``ask``/``stream`` live;
    bounded like every ``DocumentAssistant`` (``DEFAULT_MAX_CONVERSATIONS``, ``DEFAULT_IDLE_SECONDS``)."""
    with _default_lock:
        key = id(model)  # the assistant holds the model, so the id stays its own while the entry lives
        assistant = _default_assistants.get(key)  # a hit counts as a use
        if assistant is None:
            assistant = _default_assistants[key] = DocumentAssistant(model)  # the least recently used one goes
        return assistant


def ask(
    question: str, images: Iterable[Any] = (), thread_id: str | None = None, *, model: BaseChatModel | None = None
) -> AgentResult:
    """Answer ``question`` about ``images`` (paths, bytes, PIL images, PDFs). Pass the returned
    ``thread_id`` back to ask a follow-up about the same images."""
    return default_assistant(model).ask(question, images, thread_id)


def stream(
    question: str, images: Iterable[Any] = (), thread_id: str | None = None, *, model: BaseChatModel | None = None
) -> Iterator[Event]:
    """Like ``ask``, yielding the typed events as they happen."""
    return default_assistant(model).stream(question, images, thread_id)


async def aask(
    question: str, images: Iterable[Any] = (), thread_id: str | None = None, *, model: BaseChatModel | None = None
) -> AgentResult:
    return await default_assistant(model).aask(question, images, thread_id)


def astream(
    question: str, images: Iterable[Any] = (), thread_id: str | None = None, *, model: BaseChatModel | None = None
) -> AsyncIterator[Event]:
    return default_assistant(model).astream(question, images, thread_id)
