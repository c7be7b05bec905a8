"""The page's Extract mode: fields in, documents in, a table out (one row per document), downloadable as CSV.

``qwenvl_agent.extract`` does the work, as ``qwenvl extract`` does: each value is one the document's text
contains (with its page), null where the document does not show it; a document that fails has its error
in its row. The extraction runs in this script run, a document at a time, with a progress bar; the table
stays in the session until the next extraction.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from qwenvl_agent.extract import Extractor, NamedDocument, SchemaError, csv_text
from qwenvl_agent.ui import state

MODES = ("Ask", "Extract")


def chosen() -> bool:
    """The sidebar's mode switch: True when Extract is chosen."""
    return st.sidebar.radio("Mode", MODES, horizontal=True, key="mode") == "Extract"


def show(settings: state.Settings, runtime: Any) -> None:
    st.title("Extract fields")
    st.caption("Name the fields, add invoices, receipts or forms, and get a table: one row per document, each value "
               "as the document writes it (empty where the document does not show it).")
    fields = st.text_input("Fields", key="extract_fields", placeholder="invoice_number, total:number, date:date",
                           help="Comma-separated name[:type]; types: string (the default), number, integer, boolean, date.")
    files = st.file_uploader("Documents (images or PDFs)", type=state.FILE_TYPES, accept_multiple_files=True,
                             max_upload_size=state.MAX_UPLOAD_MB, key="extract_files") or []
    if st.button("Extract", icon=":material/table_view:", type="primary",
                 disabled=runtime is None or not fields.strip() or not files):
        try:
            extractor = Extractor(fields, state.vision_model(settings))
        except SchemaError as exc:
            st.error(str(exc))
            return
        st.session_state.extracted = (extractor.fields, run(extractor, files))
    if "extracted" in st.session_state:
        show_results(*st.session_state.extracted)


def run(extractor: Extractor, files: list[Any]) -> list[Any]:
    documents = [NamedDocument(state.upload_label(f.name), f.getvalue()) for f in files]
    bar = st.progress(0.0, text=f"Extracting from {len(documents)} documents…")
    started, results = time.monotonic(), []
    for result in extractor.iter(documents):
        results.append(result)
        rate = len(results) / max(time.monotonic() - started, 1e-9) * 60
        bar.progress(len(results) / len(documents), text=f"{len(results)} of {len(documents)} documents · {rate:.1f} docs/min")
    bar.empty()
    return results


def show_results(fields: list[str], results: list[Any]) -> None:
    failed = [r for r in results if r.error]
    st.subheader(f"{len(results)} documents" + (f", {len(failed)} failed" if failed else ""))
    rows = []
    for result in results:
        row = {"document": result.document}
        for name in fields:
            value, source = result.values.get(name), result.sources.get(name)
            row[name] = "" if value is None else str(value)
            row[f"{name} page"] = str(source.page) if source else ""
        row["error"] = result.error or ""
        rows.append(row)
    st.table(rows)
    st.download_button("Download CSV", csv_text(results, fields), file_name="extracted.csv", mime="text/csv",
                       icon=":material/download:", key="extract_download")
