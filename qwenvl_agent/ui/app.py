"""The assistant page: give images and PDFs, ask, watch the agent's steps, read the answer.

Started by ``qwenvl ui [--model M] [--port P] [--dtype D]``, which runs
``streamlit run app.py -- --model M --dtype D``. The model is loaded once per process and shared by every
browser session; each session has its own conversation in ``st.session_state``. An answer is written in a
worker thread that belongs to the conversation (``answering.Answering``), so it goes on across reruns of
this script; each run draws it as it stands and follows it. No tool ever calls Streamlit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import streamlit as st

from qwenvl_agent.tools import OCR_ENGINES, ImageStore
from qwenvl_agent.ui import extract, render, state
from qwenvl_agent.ui.answering import Answering
from qwenvl_agent.ui.render import Picture, Turn
from qwenvl_agent.vlm import VLMRuntime
from qwenvl_agent.vlm.errors import ImageInputError, ModelNotAvailableError
from qwenvl_agent.vlm.openvino_export import WEIGHTS
from qwenvl_agent.vlm.runtime import DTYPES, ENGINES, resolve_dtype, resolve_model_path

log = logging.getLogger("qwenvl_agent.ui")

MODEL_HINT = "Change **Model** in the sidebar, or start the page with `qwenvl ui --model <hub id or folder>`."


def main() -> None:
    st.set_page_config(page_title="qwenvl assistant", page_icon=":material/document_scanner:")
    conversation = state.conversation()
    conversation.answer_ended()  # an answer that ended while no run of the page drew it is in the history now
    extracting = extract.chosen()  # the sidebar's mode switch, above the settings
    chosen = sidebar_settings(state.launch_settings())
    if extracting:  # the Extract mode: a page of its own (ui/extract.py)
        return extract.show(chosen, load_model(chosen))
    uploads = sidebar_uploader()
    answering = conversation.answering
    # An answer keeps the settings it started with; changed ones apply once it has ended.
    settings = chosen if answering is None or conversation.settings is None else conversation.settings

    st.title("Document assistant")
    st.caption("Ask about invoices, receipts, forms, charts and photos: attach images or PDFs to a message.")
    runtime = load_model(settings)
    gallery = st.sidebar.empty()
    if runtime is not None:
        conversation.use(settings)
        if settings != chosen:
            st.sidebar.info("The changed settings apply once the answer being written has ended.",
                            icon=":material/schedule:")
        add_sidebar_files(conversation, uploads)
        show_gallery(conversation, gallery)
        show_index_progress(conversation)
        with st.container():  # the note's own place: its reruns draw there and nowhere else
            busy_note(runtime)

    for turn in conversation.turns:
        if answering is None or turn is not answering.reply:
            render.show_turn(turn)

    prompt = st.chat_input(
        question_placeholder(runtime, answering),
        key="question",
        accept_file="multiple",
        file_type=state.FILE_TYPES,
        max_upload_size=state.MAX_UPLOAD_MB,
        submit_mode="disable",
        disabled=runtime is None or answering is not None,  # one answer at a time: Stop ends it early
    )
    if answering is not None:
        if prompt:  # sent just as the box closed
            st.toast("One answer at a time: ask again once this one has ended, or stop it.", icon=":material/block:")
        follow_answer(conversation, answering)
    elif prompt and runtime is not None:
        ask(conversation, runtime, prompt.text, prompt.files)
        show_gallery(conversation, gallery)  # with the files that came with the question


def question_placeholder(runtime: Any, answering: Answering | None) -> str:
    if runtime is None:
        return "Load a model first (see the sidebar)"
    if answering is not None:
        return "Wait for the answer, or stop it, to ask the next question; files can be added in the sidebar"
    return "Ask about your images or PDFs"


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


BUSY_CHECK_SECONDS = 2


@st.fragment(run_every=BUSY_CHECK_SECONDS)
def busy_note(runtime: VLMRuntime | object) -> None:
    """While another request has the model (and this page writes no answer of its own): says so, and looks
    again every few seconds, so the note goes once it is no longer true."""
    note = st.empty()
    gate = getattr(runtime, "gate", None)
    if gate is not None and gate.busy and state.conversation().answering is None:
        note.info(
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
    if errors:
        if question.text:
            errors.append("The question was not sent: ask again once every attached file can be read.")
        reply.errors, reply.state = errors, "error"
        with st.chat_message("assistant"):
            for error in errors:
                st.error(error)
        return
    conversation.answer(question.text, reply, queued=queue_note(runtime))
    st.rerun()  # the page again, following the answer, with the question box closed until it ends


def queue_note(runtime: VLMRuntime | object) -> str:
    gate = getattr(runtime, "gate", None)
    if gate is None or not gate.busy:
        return ""
    return (
        f"Another request is running on this model; yours is number {gate.waiting + 1} in the queue and "
        "starts when the model is free."
    )


def follow_answer(conversation: state.Conversation, answering: Answering) -> None:
    """Draw the answer as it stands and follow it to its end; then draw the page afresh, with the answer in
    the history and the question box open.

    The answer is written in a worker thread that belongs to the conversation: when the page reruns
    meanwhile (an upload, a changed setting), Streamlit stops this script run but not the answer, and the
    next run follows it from where it is. Stop is the one way to end it early.
    """
    with st.chat_message("assistant"):
        live = LiveAnswer(answering, conversation.store, stop_key=f"stop-{len(conversation.turns)}")
        live.draw()
        for _ in answering.follow():
            live.draw()
    conversation.answer_ended()
    st.rerun()


class LiveAnswer:
    """The answer being written, drawn from its snapshots: a note while it waits for the model, Stop, the
    steps in a status box, then the text so far. Only what changed is drawn again."""

    def __init__(self, answering: Answering, store: ImageStore, stop_key: str):
        self.answering = answering
        self.store = store
        self.queued_slot = st.empty()
        st.button("Stop", icon=":material/stop_circle:", key=stop_key, on_click=answering.stop, help="Stop this answer")
        self.status = st.status("Thinking…", expanded=True)
        self.answer_slot = st.empty()
        self.steps: list[tuple[Any, Any]] = []  # each step's place in the status, and what it shows
        self.shown: dict[str, Any] = {}

    def draw(self) -> None:
        view = self.answering.snapshot()
        if self._changed("queued", view.queued):
            if view.queued:
                self.queued_slot.info(view.queued, icon=":material/hourglass_top:")
            else:
                self.queued_slot.empty()
        for index, step in enumerate(view.turn.steps):
            if index == len(self.steps):
                self.steps.append((self.status.empty(), None))
            slot, shown = self.steps[index]
            if (step.done, step.thought) != shown:
                with slot.container():
                    render.show_step(step)
                self.steps[index] = (slot, (step.done, step.thought))
        done, total = self.store.index.progress()
        reading = f" · reading pages {done}/{total}" if done < total else ""
        label = f"{view.turn.label or view.label} · {view.seconds:.0f} s{reading}"
        if self._changed("label", label):
            self.status.update(label=label)
        text = view.turn.text or view.streamed
        if self._changed("answer", (view.turn.errors, text)):
            with self.answer_slot.container():
                for error in view.turn.errors:
                    st.error(error)
                if text:
                    st.markdown(render.escape_markdown(text) + ("" if view.done else "▌"))

    def _changed(self, part: str, value: Any) -> bool:
        if part in self.shown and self.shown[part] == value:
            return False
        self.shown[part] = value
        return True


try:
    main()
except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
    log.exception("The page failed")
    st.error(f"Something went wrong: {type(exc).__name__}: {exc}. Reload the page; the terminal has the details.")
