"""The conversation's files: the sidebar's uploader, adding an upload, the gallery, the index's progress."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qwenvl_agent.ui import state
from qwenvl_agent.vlm.errors import ImageInputError


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
