"""The assistant page: give images and PDFs, ask, watch the agent's steps, read the answer.

Started by ``qwenvl ui [--model M] [--port P] [--dtype D]``, which runs
``streamlit run app.py -- --model M --dtype D``. The model is loaded once per process and shared by every
browser session; each session has its own conversation in ``st.session_state``. The agent's events are
drawn here, in the script thread, as they arrive; no tool ever calls Streamlit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import streamlit as st

from qwenvl_agent.agent import Answer, AnswerToken, Error, Event, StepStarted, ToolCall, ToolResult, trail
from qwenvl_agent.tools import OCR_ENGINES, ImageStore
from qwenvl_agent.ui import render, state
from qwenvl_agent.ui.render import Picture, StepView, Turn
from qwenvl_agent.vlm import VLMRuntime
from qwenvl_agent.vlm.errors import ImageInputError, ModelNotAvailableError
from qwenvl_agent.vlm.openvino_export import WEIGHTS
from qwenvl_agent.vlm.runtime import DTYPES, ENGINES, resolve_dtype, resolve_model_path

log = logging.getLogger("qwenvl_agent.ui")

MODEL_HINT = "Change **Model** in the sidebar, or start the page with `qwenvl ui --model <hub id or folder>`."


def main() -> None:
    st.set_page_config(page_title="qwenvl assistant", page_icon=":material/document_scanner:")
    conversation = state.conversation()
    settings = sidebar_settings(state.launch_settings())
    uploads = sidebar_uploader()

    st.title("Document assistant")
    st.caption("Ask about invoices, receipts, forms, charts and photos: attach images or PDFs to a message.")
    runtime = load_model(settings)
    gallery = st.sidebar.empty()
    if runtime is not None:
        conversation.use(settings)
        add_sidebar_files(conversation, uploads)
        show_gallery(conversation, gallery)
        show_index_progress(conversation)
        show_busy(runtime)

    conversation.stop_running()  # a rerun during an answer: stop it, and draw it as it was left
    for turn in conversation.turns:
        render.show_turn(turn)

    prompt = st.chat_input(
        "Ask about your images or PDFs" if runtime is not None else "Load a model first (see the sidebar)",
        key="question",
        accept_file="multiple",
        file_type=state.FILE_TYPES,
        max_upload_size=state.MAX_UPLOAD_MB,
        submit_mode="disable",
        disabled=runtime is None,
    )
    if prompt and runtime is not None:
        ask(conversation, runtime, prompt.text, prompt.files)
        show_gallery(conversation, gallery)  # with the files that came with the question


# The sidebar


def sidebar_settings(launch: state.Settings) -> state.Settings:
    locked = launch.lock_settings  # the model and the heavy settings stay as launched
    with st.sidebar:
        st.header("Settings")
        if locked:
            st.caption("The model and its limits are set by whoever started this page.")
        model = st.text_input(
            "Model", value=launch.model, key="model", disabled=locked,
            help="A Hugging Face hub id, or the folder of a checkpoint.",
        )
        local = launch.backend == "local"
        engine = st.selectbox(
            "Engine",
            ENGINES,
            index=ENGINES.index(launch.engine) if launch.engine in ENGINES else 0,
            key="engine",
            disabled=locked or not local,
            help="openvino: int8/int4 weights, three to four times faster replies (exported once, minutes). "
            "auto: OpenVINO where it is installed, else torch.",
        )
        weights = st.selectbox(
            "OpenVINO weights",
            WEIGHTS,
            index=WEIGHTS.index(launch.weights) if launch.weights in WEIGHTS else 0,
            key="weights",
            disabled=locked or not local,
            help="int8 keeps quality closest to the original; int4 is the fastest.",
        )
        ocr_engine = st.selectbox(
            "OCR engine",
            OCR_ENGINES,
            index=OCR_ENGINES.index(launch.ocr_engine) if launch.ocr_engine in OCR_ENGINES else 0,
            key="ocr_engine",
            help="rapidocr: a dedicated OCR model, about a second a page. vlm: the vision model reads the page "
            "(minutes on a CPU). hybrid: RapidOCR, with the lines it is unsure of checked by the vision model.",
        )
        dtype = st.selectbox(
            "dtype",
            DTYPES,
            index=DTYPES.index(launch_dtype(launch.dtype)),
            key="dtype",
            disabled=locked or not local,
            help="auto: bfloat16 on CPUs with AMX-BF16 or AVX512-BF16 (about 3x faster there), else float32.",
        )
        budget = st.number_input(
            "Image budget (visual tokens per image)",
            min_value=64,
            max_value=16384,
            value=_within(launch.max_image_tokens, 64, 16384),
            step=64,
            key="image_budget",
            disabled=locked,
            help="One token per 32x32 pixels, so 1024 is about one megapixel; larger images are scaled down. "
            "Every tool reads images within this budget.",
        )
        tokens = st.number_input(
            "Max new tokens", min_value=16, max_value=8192, value=_within(launch.max_new_tokens, 16, 8192), step=16,
            key="max_new_tokens", disabled=locked,
        )
        steps = st.number_input(
            "Max agent steps", min_value=1, max_value=30, value=_within(launch.max_steps, 1, 30), key="max_steps",
            disabled=locked,
        )
        st.caption("A changed setting restarts the assistant's memory of the conversation; your files stay.")
        st.button("Clear conversation", on_click=state.clear_conversation, icon=":material/delete:", width="stretch")
    if locked:
        model, engine, weights, dtype = launch.model, launch.engine, launch.weights, launch.dtype
        budget, tokens, steps = launch.max_image_tokens, launch.max_new_tokens, launch.max_steps
    return replace(
        launch, model=model.strip(), dtype=dtype, engine=engine, weights=weights, ocr_engine=ocr_engine,
        max_image_tokens=int(budget), max_new_tokens=int(tokens), max_steps=int(steps),
    )


def _within(value: int, low: int, high: int) -> int:
    """A launch value inside the widget's range (a widget refuses a value outside it)."""
    return min(max(int(value), low), high)


def launch_dtype(dtype: str) -> str:
    """The launch dtype as one of the sidebar's choices ("bf16" is "bfloat16"); "auto" if it is unknown."""
    if dtype in DTYPES:
        return dtype
    try:
        return resolve_dtype(dtype)
    except ValueError as exc:
        st.sidebar.error(f"{exc} Using auto.")
        return "auto"


def sidebar_uploader() -> list[Any]:
    with st.sidebar:
        st.header("Files")
        return st.file_uploader(
            "Images or PDFs",
            type=state.FILE_TYPES,
            accept_multiple_files=True,
            max_upload_size=state.MAX_UPLOAD_MB,
            key=f"uploader-{st.session_state.get('uploader_round', 0)}",
            help="Added to the conversation at once; the next question can use them.",
        ) or []


def add_sidebar_files(conversation: state.Conversation, files: list[Any]) -> None:
    """Add the uploader's new files; a file that cannot be used shows its error while it is listed."""
    for file in files:
        if file.file_id not in conversation.sidebar_files:
            try:
                conversation.unshown_ids += add_upload(conversation, file, st.sidebar)
                conversation.sidebar_files[file.file_id] = None
            except ImageInputError as exc:
                conversation.sidebar_files[file.file_id] = str(exc)
        error = conversation.sidebar_files[file.file_id]
        if error:
            st.sidebar.error(error)


def add_upload(conversation: state.Conversation, file: Any, where: Any) -> list[str]:
    """Add one uploaded file, showing a progress bar in ``where`` while a PDF's pages are rendered."""
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or where.progress(0.0)
        bar.progress(done / total, text=f"Rendering page {done} of {total}")

    try:
        return conversation.add_file(file.name, file.getvalue(), progress)
    finally:
        if bar is not None:
            bar.empty()


def show_index_progress(conversation: state.Conversation) -> None:
    """While the pages' text is being read (text layer or OCR) for search: how far it is."""
    done, total = conversation.store.index.progress()
    if done < total:
        st.sidebar.progress(done / total, text=f"Reading the pages' text for search: {done} of {total}")


def show_gallery(conversation: state.Conversation, slot: Any) -> None:
    """Thumbnails of every image, PDF page and crop in the conversation, by id."""
    ids = conversation.store.ids()
    if ids:
        with slot.container(), st.expander(f"In this conversation ({len(ids)})", expanded=len(ids) <= 12):
            st.image([conversation.thumbnail(i) for i in ids], caption=ids, width=100)


# The model


REMOTE = object()  # the model runs on a remote server: nothing to load here


def load_model(settings: state.Settings) -> VLMRuntime | object | None:
    """The shared model, loaded now if no session has loaded it yet; None (and an error shown) if it cannot be.
    With a remote backend there is nothing to load."""
    if settings.backend != "local":
        if not settings.base_url:
            st.error("The remote backend needs its address: qwenvl ui --backend openai --base-url http://host:port/v1")
            return None
        return REMOTE
    if not settings.model:
        st.error(f"No model is chosen. {MODEL_HINT}")
        return None
    status = None
    try:
        if state.is_loaded(settings):
            return state.shared_runtime(settings.model, settings.dtype, settings.engine, settings.weights)
        started = time.perf_counter()
        status = st.status(f"Loading {settings.model}…", expanded=True)
        with status:
            st.write("Looking for the checkpoint: a local folder, or the Hugging Face cache (downloading it if it "
                     "is missing; the terminal shows the download).")
            path = resolve_model_path(settings.model)
            st.write(f"Reading the weights from `{path}`; the 2B model takes about a minute. The OpenVINO engine "
                     "exports the model first, once (a few minutes; the terminal shows the progress).")
            runtime = state.shared_runtime(settings.model, settings.dtype, settings.engine, settings.weights)
            state.release_others(runtime)  # one model in memory: the one the page now uses
        seconds = time.perf_counter() - started
        status.update(label=f"Loaded {settings.model} ({runtime.label}) in {seconds:.0f} s", expanded=False)
        return runtime
    except Exception as exc:  # noqa: BLE001 - missing, broken, out of memory…: a message, never a traceback
        if status is not None:
            status.update(label=f"Could not load {settings.model}", state="error", expanded=False)
        st.error(_load_failure(settings.model, exc))
        return None


def _load_failure(model: str, exc: Exception) -> str:
    if isinstance(exc, ModelNotAvailableError):
        return f"{exc}\n\n{MODEL_HINT}"
    if isinstance(exc, ValueError):  # a dtype the sidebar does not offer
        return str(exc)
    log.error("Loading %s failed", model, exc_info=exc)
    return f"Could not load {model}: {type(exc).__name__}: {exc}\n\n{MODEL_HINT}"


def show_busy(runtime: VLMRuntime | object) -> None:
    gate = getattr(runtime, "gate", None)
    if gate is None:
        return
    if gate.busy:
        st.info(
            f"The model is answering another request ({gate.waiting} more waiting). "
            "A question you send now waits for its turn.",
            icon=":material/hourglass_top:",
        )


# One question and its answer


def ask(conversation: state.Conversation, runtime: VLMRuntime, text: str, files: list[Any]) -> None:
    question = Turn("user", text.strip())
    conversation.turns.append(question)
    errors: list[str] = []
    with st.chat_message("user"):
        if question.text:
            st.markdown(render.escape_markdown(question.text))
        ids, conversation.unshown_ids = conversation.unshown_ids, []
        for file in files:
            try:
                ids += add_upload(conversation, file, st)
            except ImageInputError as exc:
                errors.append(str(exc))
        question.pictures = [Picture(i, conversation.thumbnail(i)) for i in ids]
        render.show_pictures(question.pictures)
    if not question.text and not errors:
        return  # files alone: they are in the conversation, the next question can use them

    reply = Turn("assistant")
    conversation.turns.append(reply)
    with st.chat_message("assistant"):
        if errors:
            if question.text:
                errors.append("The question was not sent: ask again once every attached file can be read.")
            reply.errors, reply.state = errors, "error"
            for error in errors:
                st.error(error)
            return
        gate = getattr(runtime, "gate", None)
        if gate is not None and gate.busy:
            note = (
                f"Another request is running on this model; yours is number {gate.waiting + 1} in the "
                "queue and starts when the model is free."
            )
            reply.notes.append(note)
            st.info(note, icon=":material/hourglass_top:")
        stream_answer(conversation, question.text, reply)


def stream_answer(conversation: state.Conversation, question: str, reply: Turn) -> None:
    """Draw the run as it happens: each step inside the status, then the answer streaming in below it.

    The run goes on in a worker thread and this script only draws its events, so the page stays
    responsive: a click on Stop, a new upload or any other rerun interrupts the drawing, and the run is
    stopped at once (its generation within a token) with what it answered so far kept, marked as stopped.
    """
    st.button("Stop", icon=":material/stop_circle:", key=f"stop-{len(conversation.turns)}", help="Stop this answer")
    live = LiveTurn(conversation.store, reply)
    feed = state.EventFeed(conversation, question)
    conversation.running = feed
    try:
        event = feed.next()
        while event is not None:
            if event is state.TICK:
                live.tick()
                event = feed.next()
            elif isinstance(event, AnswerToken):
                event = live.stream_tokens(event, feed)
            else:
                live.draw(event)
                event = feed.next()
    finally:
        feed.stop()
        live.settle()
        conversation.running = None
        feed.settled.set()
    live.finish()


class LiveTurn:
    """One run on the page: a status box that collects the steps, and an answer area below it."""

    def __init__(self, store: ImageStore, reply: Turn):
        self.store = store
        self.reply = reply
        self.started = time.perf_counter()
        self.status_label = "Thinking…"
        self.status = st.status(self.status_label, expanded=True)
        self.answer_area = st.container()
        self.running: dict[str, tuple[StepView, Any]] = {}  # call id -> the step and its place in the status
        self.streamed: _Tokens | None = None

    def stream_tokens(self, first: AnswerToken, feed: state.EventFeed) -> Event | None:
        """Stream one step's text into the answer area; return the event that came after it."""
        self.streamed = _Tokens(first, feed, self.answer_area.empty())
        with self.streamed.slot.container():
            st.write_stream(self.streamed, cursor="▌")
        return self.streamed.after

    def draw(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self._label(f"Step {event.step}: planning…")
        elif isinstance(event, ToolCall):
            self._call(event)
        elif isinstance(event, ToolResult):
            self._result(event)
        elif isinstance(event, Answer):
            self._answer(event)
        elif isinstance(event, Error):
            self._take_back_streamed()
            self.reply.errors.append(event.message)
            self.reply.label, self.reply.state = f"Failed after {self._seconds():.1f} s", "error"
            with self.answer_area:
                st.error(event.message)

    def tick(self) -> None:
        """Between events: show that the run is alive (and give Streamlit a moment to notice a rerun)."""
        done, total = self.store.index.progress()
        reading = f" · reading pages {done}/{total}" if done < total else ""
        self.status.update(label=f"{self.status_label} · {self._seconds():.0f} s{reading}")

    def settle(self) -> None:
        """After the run, however it ended: a run cut short keeps what it had answered, marked as stopped.
        (No Streamlit calls here: during a rerun the page is already being drawn anew.)"""
        if self.reply.state != "running":
            return
        partial = self.streamed.text if self.streamed is not None else ""
        self.reply.text = (self.reply.text or partial).strip()
        self.reply.state = "stopped"
        self.reply.label = f"Stopped after {self._seconds():.1f} s"
        self.reply.notes.append(
            "This answer was stopped before it was complete"
            + (": what it had written is kept below." if self.reply.text else ".")
        )

    def finish(self) -> None:
        if not self.reply.steps:
            with self.status:
                render.show_steps([])
        self.status.update(label=self.reply.label or "Ended without an answer", state=self.reply.state, expanded=False)

    def _call(self, call: ToolCall) -> None:
        view = StepView(len(self.reply.steps) + 1, call.name, call.args)
        if self.streamed is not None and self.streamed.step == call.step:
            view.thought = self._take_back_streamed()  # text before a tool call was thinking aloud
        self.reply.steps.append(view)
        self.running[call.call_id] = (view, self.status.empty())
        self._draw_step(*self.running[call.call_id])
        self._label(f"Step {call.step}: {call.name}…")

    def _result(self, result: ToolResult) -> None:
        if result.call_id not in self.running:  # a malformed tool call is answered without a ToolCall event
            self.reply.steps.append(StepView(len(self.reply.steps) + 1, result.name, {}))
            self.running[result.call_id] = (self.reply.steps[-1], self.status.empty())
        view, slot = self.running.pop(result.call_id)
        view.done, view.output, view.seconds, view.is_error = True, result.output, result.seconds, result.is_error
        view.pictures = render.step_pictures(result, self.store)
        view.chart = (result.data or {}).get("chart") if result.name == "read_chart" else None
        self._draw_step(view, slot)

    def _answer(self, answer: Answer) -> None:
        if self.streamed is None or self.streamed.text.strip() != answer.text:
            self._take_back_streamed()
            with self.answer_area:
                st.write_stream(render.pieces(render.escape_markdown(answer.text)))
        self.reply.text = answer.text
        self.reply.label, self.reply.state = _summary(answer, self._seconds()), "complete"

    def _take_back_streamed(self) -> str:
        """Remove the streamed text from the answer area and return it."""
        if self.streamed is None:
            return ""
        text = self.streamed.text
        self.streamed.slot.empty()
        self.streamed = None
        return text

    def _label(self, text: str) -> None:
        self.status_label = text
        self.status.update(label=text)

    def _draw_step(self, view: StepView, slot: Any) -> None:
        with slot.container():
            render.show_step(view)

    def _seconds(self) -> float:
        return time.perf_counter() - self.started


class _Tokens:
    """One step's tokens for ``st.write_stream``; keeps the event that ended them in ``after``."""

    def __init__(self, first: AnswerToken, feed: state.EventFeed, slot: Any):
        self.step = first.step
        self.text = first.text
        self.slot = slot
        self._feed = feed
        self.after: Event | None = None

    def __iter__(self) -> Iterator[str]:
        yield render.escape_markdown(self.text)
        while (event := self._feed.next()) is not None:
            if event is state.TICK:
                yield ""  # nothing new; lets Streamlit notice a rerun
                continue
            if not isinstance(event, AnswerToken) or event.step != self.step:
                self.after = event
                return
            self.text += event.text
            yield render.escape_markdown(event.text)


def _summary(answer: Answer, seconds: float) -> str:
    count = len(answer.steps)
    if answer.stopped_early:
        return f"Stopped at the step limit after {count} steps · {seconds:.1f} s"
    if count == 0:
        return f"Answered without tools · {seconds:.1f} s"
    return f"{count} step{'s' if count != 1 else ''} · {seconds:.1f} s: {render.escape_markdown(trail(answer.steps))}"


try:
    main()
except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
    log.exception("The page failed")
    st.error(f"Something went wrong: {type(exc).__name__}: {exc}. Reload the page; the terminal has the details.")
