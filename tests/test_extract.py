"""qwenvl extract and extract(): generated invoices, the tiny checkpoint, the field values as scripted replies."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from pydantic import BaseModel

from qwenvl_agent import ExtractionResult, Extractor, extract
from qwenvl_agent.cli import main
from qwenvl_agent.extract import SchemaError, parse_fields
from qwenvl_agent.extract.grounding import dates_in, numbers_in
from qwenvl_agent.samples import invoice, png_bytes, text_layer_pdf
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies

FIELDS = "invoice_number, total:number, date:date, po_number"


def reply(values: dict) -> str:
    """The scripted reply that makes the model give ``values`` through with_structured_output(method="json_schema"):
    the JSON itself where ChatQwenVL constrains the reply to the schema, else the arguments of the forced call
    of the schema's tool (LangChain's default, which opens the call itself)."""
    text = json.dumps(values, ensure_ascii=False)
    own = "with_structured_output" in ChatQwenVL.__dict__
    return text if own else text + "}\n</tool_call>"


def values_of(doc, po_number="PO-77777") -> dict:
    """What the model is made to answer: the invoice's own values, and a PO number the invoice does not show."""
    return {"invoice_number": doc.facts["number"], "total": doc.facts["total"], "date": doc.facts["date"], "po_number": po_number}


@pytest.fixture(scope="module")
def invoices(tmp_path_factory):
    """A folder of three generated invoices (an image read by OCR, a corrupt PDF, a PDF with a text layer, an
    image), in the order of their names, and the invoices drawn."""
    folder = tmp_path_factory.mktemp("invoices")
    docs = [invoice(random.Random(seed)) for seed in (1, 2, 3)]
    (folder / "a-first.png").write_bytes(png_bytes(docs[0].image))
    (folder / "b-corrupt.pdf").write_bytes(b"%PDF-1.4 this is not a PDF at all")
    (folder / "c-second.pdf").write_bytes(text_layer_pdf([docs[1].text.splitlines()]))
    (folder / "d-third.png").write_bytes(png_bytes(docs[2].image))
    (folder / "notes.txt").write_text("not a document")
    return folder, docs


@pytest.fixture
def runtime(tiny_model):
    return ChatQwenVL(model=tiny_model, engine="torch").runtime


class Prompts(BaseCallbackHandler):
    """The messages each model call was given."""

    def __init__(self):
        self.calls = []

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.calls.append(messages[0][-1])


def run_cli(folder, output, tiny_model, *extra) -> int:
    return main(["extract", str(folder), "--fields", FIELDS, "--output", str(output), "--model", tiny_model,
                 "--engine", "torch", *extra])


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_jsonl_rows_resume_and_a_corrupt_file(invoices, tiny_model, runtime, tmp_path, capsys):
    folder, docs = invoices
    output = tmp_path / "results.jsonl"
    generations = []
    runtime.logits_hooks.append(lambda prompt_length: generations.append(prompt_length))
    try:
        # The first run is stopped after the first document: a run of one file.
        with scripted_replies(runtime, [reply(values_of(docs[0]))]) as pending:
            assert run_cli(folder / "a-first.png", output, tiny_model) == 0
        assert pending == [] and len(generations) == 1
        with scripted_replies(runtime, [reply(values_of(d)) for d in docs[1:]]) as pending:
            assert run_cli(folder, output, tiny_model) == 0
        assert pending == []
    finally:
        runtime.logits_hooks.pop()
    # Three model calls in all: the first document was not asked again, the corrupt one never.
    assert len(generations) == 3
    err = capsys.readouterr().err
    assert "has 1 documents already; 3 to do" in err and "docs/min" in err and "b-corrupt.pdf" in err

    rows = rows_of(output)
    assert [Path(r["document"]).name for r in rows] == ["a-first.png", "b-corrupt.pdf", "c-second.pdf", "d-third.png"]
    corrupt = rows[1]
    assert corrupt["error"] and "PDF" in corrupt["error"]
    assert corrupt["values"] == {"invoice_number": None, "total": None, "date": None, "po_number": None}
    for row, doc in zip([rows[0], rows[2], rows[3]], docs):
        assert row["error"] is None
        assert row["values"] == {"invoice_number": doc.facts["number"], "total": doc.facts["total"],
                                 "date": doc.facts["date"], "po_number": None}
        # The PO number the model gave is in no document: null, and reported as dropped.
        assert row["dropped"] == {"po_number": "PO-77777"} and row["sources"]["po_number"] is None
        for name in ("invoice_number", "total", "date"):
            source = row["sources"][name]
            assert source["page"] == 1 and len(source["box"]) == 4
        assert doc.facts["number"] in row["sources"]["invoice_number"]["text"]
    assert rows[0]["sources"]["total"]["read_by"] == "OCR" and rows[2]["sources"]["total"]["read_by"] == "text layer"
    # The invoice number's box is the row it is written on (drawn at y 100 of 760), the total's the total's row (y 600).
    assert abs(rows[0]["sources"]["invoice_number"]["box"][1] - 100 / 760 * 1000) < 30
    assert abs(rows[0]["sources"]["total"]["box"][1] - 600 / 760 * 1000) < 30

    # A third run has nothing to do and does not call the model.
    generations.clear()
    runtime.logits_hooks.append(lambda prompt_length: generations.append(prompt_length))
    try:
        assert run_cli(folder, output, tiny_model) == 0
    finally:
        runtime.logits_hooks.pop()
    assert generations == [] and len(rows_of(output)) == 4


def test_cli_csv_output(invoices, tiny_model, runtime, tmp_path):
    folder, docs = invoices
    output = tmp_path / "results.csv"
    with scripted_replies(runtime, [reply(values_of(d, po_number=None)) for d in docs]) as pending:
        assert run_cli(folder, output, tiny_model) == 0
    assert pending == []
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["document", "invoice_number", "invoice_number_page", "invoice_number_box", "total",
                             "total_page", "total_box", "date", "date_page", "date_box", "po_number", "po_number_page",
                             "po_number_box", "error"]
    assert [Path(r["document"]).name for r in rows] == ["a-first.png", "b-corrupt.pdf", "c-second.pdf", "d-third.png"]
    good = [rows[0], rows[2], rows[3]]
    assert [r["invoice_number"] for r in good] == [d.facts["number"] for d in docs]
    assert [float(r["total"]) for r in good] == [d.facts["total"] for d in docs]
    assert all(r["total_page"] == "1" and len(r["total_box"].split()) == 4 and r["po_number"] == "" for r in good)
    assert rows[1]["error"] and rows[1]["invoice_number"] == ""
    # Another set of fields cannot be appended to this table.
    assert main(["extract", str(folder), "--fields", "total:number", "--output", str(output), "--model", tiny_model]) == 2


@pytest.mark.parametrize("fields, problem", [
    ("invoice_number, total:money", "total has the type 'money'; the types are string, number, integer, boolean, date"),
    ("invoice_number,, total", "field 2 is empty"),
    ("1st_field", "'1st_field' is not a field name"),
    ("total, total:number", "total is named twice"),
])
def test_fields_syntax_errors_are_clear(fields, problem, tmp_path, capsys):
    with pytest.raises(SchemaError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_fields(fields)
    assert main(["extract", str(tmp_path), "--fields", fields, "--output", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err


def test_cli_input_and_output_errors(tmp_path, capsys):
    (tmp_path / "schema.json").write_text('{"type": "object", "properties": {}}')
    (tmp_path / "a.png").write_bytes(b"x")
    cases = [
        (["extract", str(tmp_path / "missing"), "--fields", "a"], "No such file or folder"),
        (["extract", str(tmp_path / "a.png"), "--fields", "a", "--output", str(tmp_path / "out.xlsx")], "name a .jsonl or a .csv file"),
        (["extract", str(tmp_path / "a.png"), "--schema", str(tmp_path / "schema.json")], "at least one property"),
        (["extract", str(tmp_path / "a.png"), "--schema", str(tmp_path / "nope.json")], "cannot read it"),
    ]
    for argv, message in cases:
        if "--output" not in argv:
            argv = argv + ["--output", str(tmp_path / "out.jsonl")]
        assert main(argv) == 2
        assert message in capsys.readouterr().err


class Invoice(BaseModel):
    invoice_number: str
    total: float
    paid: bool


def test_python_api_with_a_pydantic_schema_and_what_the_model_was_given(invoices, tiny_model, runtime):
    folder, docs = invoices
    model = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=80)
    prompts = Prompts()
    with scripted_replies(runtime, [reply({"invoice_number": docs[0].facts["number"], "total": docs[0].facts["total"], "paid": True})]):
        result = Extractor(Invoice, model).invoke(str(folder / "a-first.png"), config={"callbacks": [prompts]})
    assert isinstance(result, ExtractionResult) and result.error is None
    assert result.values == {"invoice_number": docs[0].facts["number"], "total": docs[0].facts["total"], "paid": True}
    assert result.sources["paid"] is None and result.sources["total"].page == 1
    (message,) = prompts.calls
    blocks = message.content
    assert blocks[0]["type"] == "image" and blocks[0]["image"].size == docs[0].image.size
    assert docs[0].facts["number"] in blocks[1]["text"] and "- invoice_number (string)" in blocks[1]["text"]
    assert Extractor(Invoice, model).row_schema["properties"]["total"]["anyOf"][1] == {"type": "null"}


def test_extract_iterates_in_order_and_a_reply_off_the_schema_is_an_error_row(invoices, tiny_model, runtime):
    folder, docs = invoices
    # A model whose reply is not held to the schema (a remote backend, or constrained decoding switched off).
    unconstrained = {"constrain": False} if "constrain" in ChatQwenVL.model_fields else {}
    model = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=80, **unconstrained)
    files = [folder / "c-second.pdf", folder / "d-third.png"]
    with scripted_replies(runtime, [reply({"invoice_number": 5, "total": "much"}), reply(values_of(docs[2]))]):
        results = list(extract(files, FIELDS, model, concurrency=2))
    assert [r.document for r in results] == [str(f) for f in files]
    assert results[0].error.startswith("The model's values do not follow the schema")
    assert results[0].values == dict.fromkeys(["invoice_number", "total", "date", "po_number"])
    assert results[1].error is None and results[1].values["invoice_number"] == docs[2].facts["number"]


def test_a_folder_is_its_documents_in_path_order_and_done_ones_are_skipped(invoices, tiny_model, runtime):
    folder, docs = invoices
    model = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=80)
    done = [str(folder / "a-first.png"), str(folder / "b-corrupt.pdf"), str(folder / "c-second.pdf")]
    with scripted_replies(runtime, [reply(values_of(docs[2]))]) as pending:
        results = list(extract(str(folder), FIELDS, model, skip=done))
    assert pending == [] and [r.document for r in results] == [str(folder / "d-third.png")]


def test_concurrency_below_one_is_refused():
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        Extractor("a", concurrency=0)


def test_loosely_written_values_are_read_in_the_schema_type():
    extractor = Extractor("total:number, count:integer, day:date, name")
    assert extractor._coerce("total", "1,234.50 USD") == 1234.5
    assert extractor._coerce("count", "12") == 12
    assert extractor._coerce("day", "March 14, 2026") == "2026-03-14"
    assert extractor._coerce("name", "  ") is None
    assert extractor._coerce("total", "about 3 or 4") == "about 3 or 4"  # left for the schema check to refuse


def test_numbers_and_dates_are_found_in_their_written_forms():
    assert numbers_in("Total: 1,234,560.00 USD") == [1234560.0]
    assert {d.isoformat() for d in dates_in("Date: 14/03/2026")} >= {"2026-03-14"}
    assert {d.isoformat() for d in dates_in("开票日期: 2026年3月14日")} == {"2026-03-14"}
    assert {d.isoformat() for d in dates_in("March 14, 2026")} == {"2026-03-14"}


def test_a_long_pdf_is_searched_for_the_fields_and_its_best_page_is_read(tmp_path, tiny_model, runtime):
    from qwenvl_agent.samples import contract_pdf

    path = tmp_path / "contract.pdf"
    path.write_bytes(contract_pdf())  # 20 pages; the termination notice is on page 13
    model = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=80)
    prompts = Prompts()
    extractor = Extractor("termination_notice", model, max_text_chars=3000)  # about one page of its text
    with scripted_replies(runtime, [reply({"termination_notice": "a written notice of ninety (90) days"})]):
        result = extractor.invoke(str(path), config={"callbacks": [prompts]})
    assert result.error is None and result.pages == 20
    assert result.values == {"termination_notice": "a written notice of ninety (90) days"}
    assert result.sources["termination_notice"].page == 13 and result.sources["termination_notice"].box is not None
    text = prompts.calls[0].content[1]["text"]
    assert "--- page 13 (text layer) ---" in text and "--- page 12" not in text and "--- page 14" not in text


def test_cli_on_a_remote_openai_compatible_server_two_documents_at_once(invoices, tiny_model, tmp_path):
    """--backend openai --concurrency 2 against `qwenvl serve` on the tiny checkpoint: the same file under two
    names, so the two scripted replies fit whichever the server answers first."""
    pytest.importorskip("langchain_openai")
    from served import Served

    from qwenvl_agent.server.app import ServerSettings

    folder, docs = invoices
    for name in ("x1.pdf", "x2.pdf"):
        (tmp_path / name).write_bytes((folder / "c-second.pdf").read_bytes())
    server = Served(ServerSettings(model=tiny_model, engine="torch", api_key="secret", max_tokens=4096))
    output = tmp_path / "remote.jsonl"
    try:
        with scripted_replies(server.runtime, [reply(values_of(docs[1]))] * 2) as pending:
            code = main(["extract", str(tmp_path / "x1.pdf"), str(tmp_path / "x2.pdf"), "--fields", FIELDS,
                         "--output", str(output), "--backend", "openai", "--base-url", f"{server.url}/v1",
                         "--api-key", "secret", "--model", "qwen", "--concurrency", "2"])
    finally:
        server.stop()
    assert code == 0 and pending == []
    rows = rows_of(output)
    assert [Path(r["document"]).name for r in rows] == ["x1.pdf", "x2.pdf"]
    for row in rows:
        assert row["error"] is None and row["values"]["invoice_number"] == docs[1].facts["number"]
        assert row["values"]["total"] == docs[1].facts["total"] and row["sources"]["total"]["page"] == 1
