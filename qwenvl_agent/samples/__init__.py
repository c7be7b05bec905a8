"""Sample documents drawn on the spot: invoices, receipts, forms, tables, charts, scenes and a long contract.

Nothing is downloaded. Try the assistant without documents of your own, test a tool, or build an
evaluation from them; the benchmark, the evaluation set and the tests all draw theirs here.

Three kinds:

- **Ready samples by name** (``SAMPLES``): ``sample("invoice")``, ``"receipt"``, ``"chart"`` and
  ``"contract"`` give a file name and its content (a PIL image, or PDF bytes for the 20-page contract),
  the same every time. ``qwenvl ask --sample invoice -q "What is the total?"`` uses them.
- **Fixed documents**: ``invoice_screenshot()`` (its total is ``INVOICE_TOTAL``), ``sales_chart()`` (its
  values are ``QUARTERS``), ``contract_pdf(scanned)`` (with ``CONTRACT_ANSWER`` on page 13), and the small
  ``small_invoice()``, ``small_bar_chart()`` and ``text_image(lines)``.
- **Documents from a seed**: ``invoice``, ``receipt``, ``form``, ``table``, ``bar_chart``, ``line_chart``,
  ``pie_chart`` and ``scene`` take a ``random.Random`` and return a ``Document``: the image, its text in
  reading order (the ground truth for OCR) and its facts (totals, values, fields). The same seed gives
  the same documents, pixel for pixel. ``invoice`` and ``receipt`` also draw Chinese (``lang="zh"``),
  which needs a CJK font (``has_cjk()``; Debian: ``apt-get install fonts-noto-cjk``).

Example::

    import random

    from qwenvl_agent import DocumentAssistant, samples

    doc = samples.invoice(random.Random(7))
    print(doc.facts["total"], doc.text.splitlines()[0])      # the total it shows; "INVOICE"
    name, image = samples.sample("chart")                    # "sales-chart.png", a PIL image
    pdf = samples.text_layer_pdf([doc.text.splitlines()])    # its text as a one-page PDF
    DocumentAssistant().ask("Which quarter is best?", [image])
"""

from __future__ import annotations

import random
from typing import Any

from .charts import QUARTERS, bar_chart, line_chart, pie_chart, sales_chart, small_bar_chart
from .contracts import CONTRACT_ANSWER, contract_pages, contract_pdf
from .fonts import FontMissingError, has_cjk
from .forms import form, table
from .invoices import INVOICE_TOTAL, invoice, invoice_screenshot, receipt, small_invoice
from .page import Document, money, png_bytes, text_image
from .pdf import scanned_pdf, text_layer_pdf
from .scenes import scene

SAMPLES: dict[str, str] = {
    "invoice": "invoice.png",
    "receipt": "receipt.png",
    "chart": "sales-chart.png",
    "contract": "contract.pdf",
}


def sample(name: str) -> tuple[str, Any]:
    """The ready sample ``name`` (one of ``SAMPLES``): its file name, and a PIL image (or PDF bytes)."""
    if name not in SAMPLES:
        raise ValueError(f"There is no sample {name!r}: choose one of {', '.join(SAMPLES)}.")
    if name == "invoice":
        content = invoice_screenshot()
    elif name == "receipt":
        content = receipt(random.Random(0)).image
    elif name == "chart":
        content = sales_chart()
    else:
        content = contract_pdf(scanned=False)
    return SAMPLES[name], content


__all__ = [
    "CONTRACT_ANSWER",
    "INVOICE_TOTAL",
    "QUARTERS",
    "SAMPLES",
    "Document",
    "FontMissingError",
    "bar_chart",
    "contract_pages",
    "contract_pdf",
    "form",
    "has_cjk",
    "invoice",
    "invoice_screenshot",
    "line_chart",
    "money",
    "pie_chart",
    "png_bytes",
    "receipt",
    "sample",
    "sales_chart",
    "scanned_pdf",
    "scene",
    "small_bar_chart",
    "small_invoice",
    "table",
    "text_image",
    "text_layer_pdf",
]
