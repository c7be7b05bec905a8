"""One question and its answer: the question with its files, the answer followed as it is written."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qwenvl_agent.tools import ImageStore
from qwenvl_agent.ui import render, state
from qwenvl_agent.ui.answering import Answering
from qwenvl_agent.ui.documents import add_upload
from qwenvl_agent.ui.render import Picture, Turn
from qwenvl_agent.vlm import VLMRuntime
from qwenvl_agent.vlm.errors import ImageInputError


def question_placeholder(runtime: Any, answering: Answering | None) -> str:
    if runtime is None:
        return "Load a model first (see the sidebar)"
    if answering is not None:
        return "Wait for the answer, or stop it, to ask the next question; files can be added in the sidebar"
    return "Ask about your images or PDFs"


def ask(conversation: state.Conversation, runtime: VLMRuntime, text: str, files: list[Any], note: str = "") -> None:
    question = Turn("user", text.strip(), notes=[note] if note else [])  # note: how it was asked (by voice)
    conversation.turns.append(question)
    errors: list[str] = []
    with st.chat_message("user"):
        if question.text:
            st.markdown(render.escape_markdown(question.text))
        for line in question.notes:
            st.caption(line)
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
