"""The sample documents (qwenvl_agent.samples): what each one shows is there to be read, the same seed draws
the same document, and ``qwenvl ask --sample`` hands the sample to the agent."""

from __future__ import annotations

import json
import random

import pypdfium2 as pdfium
import pytest

from qwenvl_agent import samples
from qwenvl_agent.tools import rapid_ocr, to_text
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies, tool_call_text


def read(image) -> str:
    return to_text(rapid_ocr.read_pieces(image))


def test_the_benchmark_invoice_shows_its_number_parties_and_total():
    image = samples.invoice_screenshot()
    assert image.size == (1100, 780) and image.mode == "RGB"
    text = read(image)
    for field in ("Invoice No.: 12345678", "Buyer: ACME Trading", "Seller: Northwind", "Total (CNY):", samples.INVOICE_TOTAL):
        assert field in text, text
    assert samples.invoice_screenshot((1600, 1500)).size == (1600, 1500)


def test_the_sales_chart_shows_its_title_and_every_quarter():
    image = samples.sales_chart()
    text = read(image)
    assert "Quarterly sales 2025" in text, text
    assert all(quarter in text for quarter in samples.QUARTERS), text
    assert all(f"{value:.1f}" in text for value in samples.QUARTERS.values()), text


def test_a_seeded_invoice_and_receipt_show_their_facts():
    invoice = samples.invoice(random.Random(3))
    text = read(invoice.image)
    assert invoice.kind == "invoice" and invoice.facts["number"] in text, text
    for fact in ("date", "buyer", "seller"):
        assert f"{invoice.facts[fact]}" in text, text
    assert samples.money(invoice.facts["total"]) in text, text
    receipt = samples.receipt(random.Random(3))
    text = read(receipt.image)
    assert receipt.facts["shop"] in text and samples.money(receipt.facts["total"]) in text, text


def test_forms_tables_and_charts_carry_their_facts():
    rng = random.Random(5)
    form = samples.form(rng)
    assert form.facts["fields"]["ID number"] in read(form.image)
    table = samples.table(rng)
    assert [row["product"] for row in table.facts["rows"]] == [line.split()[0] for line in table.text.splitlines()[2:]]
    for make in (samples.bar_chart, samples.line_chart, samples.pie_chart):
        chart = make(rng)
        assert len(chart.facts["categories"]) == len(chart.facts["values"]) >= 4
    assert samples.scene(rng).facts["shapes"]


def test_the_contract_has_its_answer_on_page_13_as_text_or_as_pictures():
    pdf = pdfium.PdfDocument(samples.contract_pdf(scanned=False))
    assert len(pdf) == 20
    assert samples.CONTRACT_ANSWER in pdf[12].get_textpage().get_text_range()
    assert samples.CONTRACT_ANSWER not in pdf[11].get_textpage().get_text_range()
    scan = pdfium.PdfDocument(samples.contract_pdf(scanned=True, pages=2, answer_page=2))
    assert len(scan) == 2 and scan[1].get_textpage().get_text_range().strip() == ""  # pictures only
    page = scan[1].render(scale=150 / 72).to_pil()
    line = read(page.crop((0, 520, page.width, 590)))  # the answer's line: 100 + 9 * 48 px from the top
    assert "Either party may terminate" in line and "ninety (90)" in line, line


def test_the_same_seed_draws_the_same_documents():
    for make in (samples.invoice, samples.receipt, samples.form, samples.table, samples.bar_chart, samples.scene):
        first, again = make(random.Random(11)), make(random.Random(11))
        assert first.image.tobytes() == again.image.tobytes() and first.facts == again.facts
    assert samples.invoice(random.Random(11)).facts != samples.invoice(random.Random(12)).facts
    assert samples.contract_pdf(scanned=True, pages=2) == samples.contract_pdf(scanned=True, pages=2)
    assert samples.contract_pdf(scanned=False, pages=2) == samples.contract_pdf(scanned=False, pages=2)


def test_ready_samples_by_name():
    for name, filename in samples.SAMPLES.items():
        label, content = samples.sample(name)
        assert label == filename
        if name == "contract":
            assert content.startswith(b"%PDF")
        else:
            assert content.tobytes() == samples.sample(name)[1].tobytes()
    with pytest.raises(ValueError, match="no sample 'menu': choose one of invoice, receipt, chart, contract"):
        samples.sample("menu")


def test_cli_ask_with_samples_gives_them_to_the_agent(tiny_model, capsys):
    from qwenvl_agent.cli import main

    runtime = ChatQwenVL(model=tiny_model, engine="torch").runtime
    replies = [tool_call_text("ocr_image", {"image_id": "img-1"}), "The total is 1,234,560.00."]
    with scripted_replies(runtime, replies) as left:
        code = main(["ask", "--sample", "invoice", "--sample", "chart", "-q", "What is the total?",
                     "--model", tiny_model, "--engine", "torch", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert left == [] and result["answer"] == "The total is 1,234,560.00."
    assert result["images"] == {"img-1": "invoice.png", "img-2": "sales-chart.png"}
    assert result["steps"][0]["tool"] == "ocr_image" and samples.INVOICE_TOTAL in result["steps"][0]["output"]


def test_cli_ask_needs_files_or_a_sample(tiny_model, capsys):
    from qwenvl_agent.cli import main

    assert main(["ask", "-q", "What is the total?", "--model", tiny_model]) == 2
    assert "error: name the files to ask about, or try a sample: --sample invoice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ask", "--sample", "menu", "-q", "x", "--model", tiny_model])
    assert "invalid choice: 'menu'" in capsys.readouterr().err
