"""The evaluation: a deterministic generated set, its scores, and ``qwenvl eval`` end to end (mechanics on
the tiny checkpoint, whose answers are noise; the offline OCR engine's scores are real)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qwenvl_agent.samples import fonts
from qwenvl_agent.eval.dataset import build_set
from qwenvl_agent.eval.metrics import abstained, anls, char_accuracy, chart_value_accuracy, number_match, yes_no
from qwenvl_agent.eval.runner import EvalSettings, run_eval
from qwenvl_agent.vlm import ChatQwenVL

needs_cjk = pytest.mark.skipif(not fonts.has_cjk(), reason="Chinese documents need Debian's fonts-noto-cjk")


@needs_cjk
def test_the_sets_are_generated_the_same_every_time():
    quick, again, full = build_set("quick"), build_set("quick"), build_set("full")
    assert 18 <= len(quick) <= 24 and len(full) >= 200
    assert [i.id for i in quick] == [i.id for i in again]
    assert all([im.tobytes() for im in a.images] == [im.tobytes() for im in b.images] and a.pdf == b.pdf
               for a, b in zip(quick, again))
    assert {i.task for i in quick} == {"ocr", "chart", "qa", "search"} and {i.lang for i in quick} == {"en", "zh"}
    categories = {i.category for i in full}
    for needed in ("ocr/invoice", "ocr/receipt", "ocr/form", "ocr/table", "chart/bar_chart", "chart/line_chart",
                   "chart/pie_chart", "qa/scene", "qa/cross-document", "qa/unanswerable", "qa/bar_chart-multistep"):
        assert needed in categories
    assert build_set("quick", seed=1)[0].text != quick[0].text


def test_a_missing_cjk_font_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(fonts, "CJK_CANDIDATES", ())
    monkeypatch.setattr(fonts.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no fc-match")))
    fonts.cjk_path.cache_clear()
    try:
        with pytest.raises(fonts.FontMissingError, match="apt-get install fonts-noto-cjk"):
            build_set("quick")
        assert len(build_set("quick", langs=("en",))) > 10  # English alone needs no extra font
    finally:
        fonts.cjk_path.cache_clear()


def test_scores():
    truth = "Item Qty\nPen 2\nTotal: 5.00"
    assert char_accuracy("| Item | Qty |\n| --- | --- |\n| Pen | 2 |\nTotal:  5.00", truth) == 1.0
    assert 0.85 < char_accuracy("Item Qty\nPen 2\nTotal: 5.0O", truth) < 1.0
    assert char_accuracy("", truth) == 0.0
    assert anls("The buyer is ACME Trading Ltd.", "ACME Trading Ltd.") == 1.0
    assert anls("ACME Tradng", "ACME Trading") > 0.8 and anls("Northwind", "ACME Trading") == 0.0
    assert number_match("The total is 1,234.56 CNY.", 1234.56) == 1.0 and number_match("It is 1,200.", 1234.56) == 0.0
    assert yes_no("Yes, it is higher.", "yes") == 1.0 and yes_no("No, it is lower.", "yes") == 0.0
    assert abstained("The image does not show an email address.") == 1.0 and abstained("anna@example.com") == 0.0
    assert chart_value_accuracy({"Q1": 0.8, "q2": 0.91, "Q3": 2.0}, {"Q1": 0.8, "Q2": 0.9, "Q3": 1.2}) == pytest.approx(2 / 3)


def test_rapidocr_reads_the_generated_invoices_and_receipts_well(tmp_path):
    items = [i for i in build_set("quick", langs=("en",)) if i.task == "ocr"]
    results = run_eval(items, None, EvalSettings(tasks=("ocr",)), tmp_path, progress=False)
    assert all(r.error is None for r in results), [r.error for r in results]
    documents = [r for r in results if r.category in ("ocr/invoice", "ocr/receipt")]
    assert documents and min(r.score for r in documents) > 0.9, [(r.category, r.score) for r in documents]


def test_qwenvl_eval_end_to_end_on_the_tiny_checkpoint(tiny_model, tmp_path):
    command = [sys.executable, "-m", "qwenvl_agent.cli", "eval", "--set", "quick", "--model", tiny_model,
               "--engine", "torch", "--max-new-tokens", "8", "--lang", "en", "--output", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    items = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert len(items) == len(build_set("quick", langs=("en",)))
    assert all(0 <= item["score"] <= 1 and item["seconds"] >= 0 for item in items)
    assert {item["task"] for item in items} == {"ocr", "chart", "qa", "search"}
    metrics = {item["task"]: item["metric"] for item in items}
    assert metrics["ocr"] == "character accuracy" and metrics["search"] == "right page in the first three"
    text_answers = [item for item in items if item["task"] == "qa" and item["metric"] == "ANLS"]
    assert text_answers and all(item["exact_match"] in (0.0, 1.0) for item in text_answers)
    # Questions naming an invoice number or a person are found through the PDF's text layer.
    found = [item["score"] for item in items if item["category"] == "search/text-layer"]
    assert found and all(score == 1 for score in found), items
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"model {tiny_model} (engine torch" in summary and "| ocr (all) |" in summary and "| qa/invoice |" in summary
    assert "qwenvl eval (quick)" in done.stderr  # the progress bar


def test_the_agent_mode_runs_questions_through_the_agent(tiny_model, tmp_path):
    items = [i for i in build_set("quick", langs=("en",)) if i.task == "qa"][:2]
    vlm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=8)
    results = run_eval(items, vlm, EvalSettings(mode="agent", tasks=("qa",)), tmp_path, progress=False)
    assert len(results) == 2 and all(r.error is None for r in results), [r.error for r in results]
    assert all(isinstance(r.prediction, str) for r in results)


def test_a_model_that_cannot_load_is_one_clear_error_before_any_item(tmp_path, capsys):
    from qwenvl_agent.cli import main

    code = main(["eval", "--set", "quick", "--model", str(tmp_path / "no-model"), "--engine", "torch",
                 "--output", str(tmp_path / "out")])
    assert code == 1
    assert "no-model" in capsys.readouterr().err and not (tmp_path / "out" / "items.jsonl").exists()
