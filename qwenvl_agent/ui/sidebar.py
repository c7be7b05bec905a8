"""The sidebar's settings: the model, its engine and limits, as the page was launched or as changed."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from qwenvl_agent.tools import OCR_ENGINES
from qwenvl_agent.ui import state
from qwenvl_agent.vlm.openvino_export import WEIGHTS
from qwenvl_agent.vlm.runtime import DTYPES, ENGINES, resolve_dtype


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
            index=_place(ENGINES, launch.engine),
            key="engine",
            disabled=locked or not local,
            help="openvino: int8/int4 weights, three to four times faster replies (exported once, minutes). "
            "auto: OpenVINO where it is installed, else torch.",
        )
        weights = st.selectbox(
            "OpenVINO weights",
            WEIGHTS,
            index=_place(WEIGHTS, launch.weights),
            key="weights",
            disabled=locked or not local,
            help="int8 keeps quality closest to the original; int4 is the fastest.",
        )
        ocr_engine = st.selectbox(
            "OCR engine",
            OCR_ENGINES,
            index=_place(OCR_ENGINES, launch.ocr_engine),
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


def _place(choices: tuple[str, ...], value: str) -> int:
    """Where a launch value stands among a select box's choices; the first choice if it is none of them."""
    return choices.index(value) if value in choices else 0


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
