"""The evaluation set: documents from ``qwenvl_agent.samples`` with tasks and their ground truth, from a seed.

Four kinds of task:
- ``ocr``: read the whole document; scored by character accuracy against its text.
- ``chart``: read a chart's values; scored by the share of values read within 2 %.
- ``qa``: a question with an answer of a type: ``number`` (within 1 %), ``text`` (ANLS), ``yesno``, or
  ``none`` (the images do not hold the answer: the right reply says so). Some take two steps ("sum of Q2
  and Q3", "is the invoice total above the best quarter in the chart?").
- ``search``: a question about one page of a long PDF (with its own text layer, or scanned); scored by
  whether ``search_document`` ranks that page among its first three.

``build_set("quick")`` has 24 items, ``build_set("full")`` about 470; the same seed gives the same set,
image for image.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .. import samples
from ..samples import Document, fonts, money, scanned_pdf, text_layer_pdf

SETS = ("quick", "full")


@dataclass
class EvalItem:
    id: str
    category: str
    task: str  # "ocr", "chart", "qa" or "search"
    lang: str
    images: list[Image.Image]
    question: str = ""
    answer: Any = None
    answer_type: str = "text"  # for qa: "number", "text", "yesno" or "none"
    text: str = ""  # for ocr: the document's text in reading order
    values: dict[str, float] = field(default_factory=dict)  # for chart: category -> value
    pdf: bytes | None = None  # for search: the long document
    pdf_id: str = ""  # for search: items that share a PDF share its index


def build_set(name: str = "quick", seed: int = 0, langs: tuple[str, ...] = ("en", "zh")) -> list[EvalItem]:
    """The items of set ``name``; Chinese ones only if ``"zh"`` is in ``langs`` (they need a CJK font)."""
    if name not in SETS:
        raise ValueError(f"The evaluation set must be one of {', '.join(SETS)}; got {name!r}.")
    if "zh" in langs:
        fonts.cjk_path()  # a clear error now, not halfway through
    rng = random.Random(seed)
    repeats = 1 if name == "quick" else 12
    items: list[EvalItem] = []
    for round_ in range(repeats):
        for make in _RECIPES:
            items += [item for item in make(rng, round_, name) if item.lang in langs]
    for index, item in enumerate(items, start=1):
        item.id = f"{name}-{index:03d}-{item.category}"
    return items


def _ocr(doc: Document) -> EvalItem:
    return EvalItem("", f"ocr/{doc.kind}", "ocr", doc.lang, [doc.image], text=doc.text)


def _qa(doc: Document | list[Document], category: str, question: str, answer: Any, answer_type: str) -> EvalItem:
    docs = doc if isinstance(doc, list) else [doc]
    return EvalItem("", category, "qa", docs[0].lang, [d.image for d in docs], question, answer, answer_type)


def _invoices(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    for lang in ("en", "zh"):
        doc = samples.invoice(rng, lang) if lang == "en" or fonts.has_cjk() else None
        if doc is None:
            continue
        facts = doc.facts
        yield _ocr(doc)
        yield _qa(doc, "qa/invoice", "What is the invoice total?" if lang == "en" else "价税合计是多少？", facts["total"], "number")
        if set_name == "full" or lang == "en":
            yield _qa(doc, "qa/invoice", "What is the invoice number?" if lang == "en" else "发票号码是多少？", facts["number"], "text")
        if set_name == "full":
            yield _qa(doc, "qa/invoice", "Who is the buyer?" if lang == "en" else "购买方是谁？", facts["buyer"], "text")
            most = max(facts["items"], key=lambda item: item["amount"])
            question = "Which item has the largest amount?" if lang == "en" else "金额最大的项目是哪一个？"
            yield _qa(doc, "qa/invoice-multistep", question, most["name"], "text")
        if lang == "en" and (set_name == "full" or round_ == 0):
            yield _qa(doc, "qa/unanswerable", "What is the buyer's email address?", None, "none")


def _receipts(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    for lang in ("en", "zh") if set_name == "full" else ("en",):
        if lang == "zh" and not fonts.has_cjk():
            continue
        doc = samples.receipt(rng, lang)
        yield _ocr(doc)
        yield _qa(doc, "qa/receipt", "What is the total on the receipt?" if lang == "en" else "小票合计多少钱？", doc.facts["total"], "number")


def _forms_and_tables(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    form = samples.form(rng)
    yield _ocr(form)
    yield _qa(form, "qa/form", "What is the applicant's ID number?", form.facts["fields"]["ID number"], "text")
    if set_name == "full":
        yield _qa(form, "qa/form", "In which city does the applicant live?", form.facts["fields"]["City"], "text")
    table = samples.table(rng)
    yield _ocr(table)
    rows = table.facts["rows"]
    best = max(rows, key=lambda row: row["revenue"])
    yield _qa(table, "qa/table", "Which product has the highest revenue?", best["product"], "text")
    if set_name == "full":
        yield _qa(table, "qa/table-multistep", "How many units were sold in total?", sum(r["units"] for r in rows), "number")


def _charts(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    makers: list[Callable] = [samples.bar_chart, samples.line_chart, samples.pie_chart]
    if set_name == "quick":
        makers = [samples.bar_chart, samples.pie_chart]
    for make in makers:
        doc = make(rng)
        facts = doc.facts
        values = dict(zip(facts["categories"], facts["values"]))
        yield EvalItem("", f"chart/{doc.kind}", "chart", "en", [doc.image], "Read every value of the chart.", values=values)
        best = max(values, key=values.get)
        yield _qa(doc, f"qa/{doc.kind}", "Which category has the highest value?", best, "text")
        first, second = facts["categories"][1], facts["categories"][2]
        if set_name == "full" or make is samples.bar_chart:
            yield _qa(doc, f"qa/{doc.kind}-multistep", f"What is the sum of {first} and {second}?",
                      round(values[first] + values[second], 2), "number")


def _cross_document(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    """The seed's question: an invoice and a quarterly sales chart in the same currency."""
    chart = samples.bar_chart(rng)
    best = max(chart.facts["values"])
    # Put the total just above or below the best quarter (in millions), so the comparison decides.
    scale = 1_000_000 if "million" in chart.facts["unit"] else 1_000
    target = best * scale * (1.1 if rng.random() < 0.5 else 0.9)
    state = rng.getstate()
    total = samples.invoice(rng, "en").facts["total"]
    rng.setstate(state)  # the same invoice again, its prices scaled to bring the total near the target
    invoice = samples.invoice(rng, "en", scale=target / total)
    above = invoice.facts["total"] > best * scale
    question = f"Is the invoice total more than the best quarter or region in the chart (chart values in {chart.facts['unit']})?"
    yield _qa([invoice, chart], "qa/cross-document", question, "yes" if above else "no", "yesno")
    if set_name == "full" or round_ == 0:
        yield _qa(chart, "qa/unanswerable", "What was the sales figure for the year 2019?", None, "none")


def _scenes(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    doc = samples.scene(rng)
    shapes = doc.facts["shapes"]
    color = rng.choice([s["color"] for s in shapes])
    count = sum(1 for s in shapes if s["color"] == color)
    yield _qa(doc, "qa/scene", f"How many {color} shapes are there?", count, "number")
    if set_name == "full":
        kind = rng.choice(["circle", "square", "triangle"])
        present = any(s["shape"] == kind for s in shapes)
        yield _qa(doc, "qa/scene", f"Is there a {kind} in the picture?", "yes" if present else "no", "yesno")


def _long_documents(rng: random.Random, round_: int, set_name: str) -> Iterator[EvalItem]:
    """A 20-page PDF of invoices, forms and tables, with its text layer and scanned; questions about one page."""
    if set_name == "quick" and round_ > 0 or set_name == "full" and round_ >= 4:
        return
    pages = [samples.invoice(rng, "en") if i % 3 == 0 else samples.form(rng) if i % 3 == 1 else samples.table(rng)
             for i in range(20)]
    questions = []
    names = [doc.facts["fields"]["Name"] for doc in pages if doc.kind == "form"]
    for number, doc in enumerate(pages, start=1):
        if doc.kind == "invoice":
            questions.append((number, f"What is the total of invoice No. {doc.facts['number']}?"))
        elif doc.kind == "form" and names.count(doc.facts["fields"]["Name"]) == 1:  # one page answers it
            questions.append((number, f"What is the date of birth of {doc.facts['fields']['Name']}?"))
    chosen = rng.sample(questions, 2 if set_name == "quick" else 8)
    text_layer = text_layer_pdf([doc.text.splitlines() for doc in pages])
    for variant, pdf in (("text layer", text_layer), ("scanned", scanned_pdf([doc.image for doc in pages]))):
        pdf_id = f"long-{round_}-{variant}"
        for number, question in chosen:
            yield EvalItem("", f"search/{variant.replace(' ', '-')}", "search", "en", [], question,
                           f"doc-1/page-{number}", "page", pdf=pdf, pdf_id=pdf_id)


_RECIPES = [_invoices, _receipts, _forms_and_tables, _charts, _cross_document, _scenes, _long_documents]

__all__ = ["SETS", "EvalItem", "build_set", "money"]
