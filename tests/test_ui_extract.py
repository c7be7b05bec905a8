"""The page's Extract mode in a real browser (Debian's headless Chromium): fields in, two generated invoices
uploaded, the table shown, the CSV downloaded. The model's replies are scripted (tests/scripted_page.py)."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest
from test_extract import reply
from test_ui_browser import CHROMIUM, browser_page, scripted_server

from qwenvl_agent.samples import invoice, png_bytes

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def test_extract_mode_fields_in_table_out_csv_download(tiny_model, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    docs = [invoice(random.Random(seed)) for seed in (11, 12)]
    files = []
    for number, doc in enumerate(docs, start=1):
        files.append(tmp_path / f"invoice-{number}.png")
        files[-1].write_bytes(png_bytes(doc.image))
    # The second reply names a total the invoice does not show: its cell stays empty.
    replies = [reply({"invoice_number": docs[0].facts["number"], "total": docs[0].facts["total"]}),
               reply({"invoice_number": docs[1].facts["number"], "total": 4242.42})]
    screenshot = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui-extract.png"
    with scripted_server(tiny_model, tmp_path, replies) as url, browser_page(sync_api, screenshot) as page:
        page.goto(url, timeout=30_000)
        page.get_by_test_id("stSidebar").get_by_text("Extract", exact=True).click()
        expect(page.get_by_role("heading", name="Extract fields")).to_be_visible(timeout=90_000)
        page.get_by_test_id("stMain").locator("input[type=file]").set_input_files([str(f) for f in files])
        expect(page.get_by_text("invoice-1.png")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("invoice-2.png")).to_be_visible()
        fields = page.get_by_label("Fields", exact=True)
        fields.fill("invoice_number, total:number")
        fields.press("Enter")
        button = page.get_by_role("button", name="Extract")
        expect(button).to_be_enabled(timeout=30_000)
        button.click()

        table = page.get_by_test_id("stTable")
        expect(table).to_contain_text(docs[0].facts["number"], timeout=120_000)
        expect(table).to_contain_text(docs[1].facts["number"])
        expect(page.get_by_test_id("stException")).to_have_count(0)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert [r["document"] for r in rows] == ["invoice-1.png", "invoice-2.png"]
    assert [r["invoice_number"] for r in rows] == [d.facts["number"] for d in docs]
    assert float(rows[0]["total"]) == docs[0].facts["total"] and rows[0]["total_page"] == "1"
    assert rows[1]["total"] == "" and rows[1]["error"] == ""
