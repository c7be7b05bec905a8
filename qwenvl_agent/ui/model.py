"""The page's model: loaded once per process and shared, and a note while another request has it."""

from __future__ import annotations

import logging
import time

import streamlit as st

from qwenvl_agent.ui import state
from qwenvl_agent.vlm import VLMRuntime
from qwenvl_agent.vlm.errors import ModelNotAvailableError
from qwenvl_agent.vlm.runtime import resolve_model_path

log = logging.getLogger("qwenvl_agent.ui")

MODEL_HINT = "Change **Model** in the sidebar, or start the page with `qwenvl ui --model <hub id or folder>`."

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
