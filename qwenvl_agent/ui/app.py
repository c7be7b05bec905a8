"""The assistant page: give images and PDFs, ask, watch the agent's steps, read the answer.

Started by ``qwenvl ui [--model M] [--port P] [--dtype D]``, which runs
``streamlit run app.py -- --model M --dtype D``. The model is loaded once per process and shared by every
browser session; each session has its own conversation in ``st.session_state``. An answer is written in a
worker thread that belongs to the conversation (``answering.Answering``), so it goes on across reruns of
this script; each run draws it as it stands and follows it. No tool ever calls Streamlit.
"""

from __future__ import annotations

import logging

import streamlit as st

from qwenvl_agent.ui import extract, render, state, voice
from qwenvl_agent.ui.chat import ask, follow_answer, question_placeholder
from qwenvl_agent.ui.documents import add_sidebar_files, show_gallery, show_index_progress, sidebar_uploader
from qwenvl_agent.ui.model import busy_note, load_model
from qwenvl_agent.ui.sidebar import sidebar_settings

log = logging.getLogger("qwenvl_agent.ui")


def main() -> None:
    st.set_page_config(page_title="qwenvl assistant", page_icon=":material/document_scanner:")
    conversation = state.conversation()
    conversation.answer_ended()  # an answer that ended while no run of the page drew it is in the history now
    extracting = extract.chosen()  # the sidebar's mode switch, above the settings
    chosen = sidebar_settings(state.launch_settings())
    if extracting:  # the Extract mode: a page of its own (ui/extract.py)
        return extract.show(chosen, load_model(chosen))
    voice.sidebar()
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
            with render.show_turn(turn):
                voice.read_aloud(turn, latest=turn is conversation.turns[-1])

    spoken = voice.spoken_question(enabled=runtime is not None and answering is None)
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
    elif spoken and runtime is not None:
        ask(conversation, runtime, spoken.text, [], note=spoken.note)


try:
    main()
except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
    log.exception("The page failed")
    st.error(f"Something went wrong: {type(exc).__name__}: {exc}. Reload the page; the terminal has the details.")
