"""A long service contract: the benchmark's question about one clause on one of its many pages."""

from __future__ import annotations

from .page import Page
from .pdf import scanned_pdf, text_layer_pdf

CONTRACT_ANSWER = "Either party may terminate this agreement with a written notice of ninety (90) days."

_TOPICS = ["scope of services", "service levels", "fees and invoicing", "payment terms", "confidentiality",
           "data protection", "liability", "insurance", "subcontractors", "audit rights", "force majeure",
           "intellectual property", "termination", "transition", "governing law", "notices", "warranties",
           "acceptance", "change control", "miscellaneous"]


def contract_pages(pages: int = 20, answer_page: int = 13) -> list[list[str]]:
    """The lines of each page of the contract; the termination notice (``CONTRACT_ANSWER``) is on ``answer_page``."""
    document = []
    for number in range(1, pages + 1):
        topic = _TOPICS[(number - 1) % len(_TOPICS)]
        lines = [f"SERVICE AGREEMENT - page {number} of {pages}", f"Clause {number}: {topic.title()}"]
        for line in range(1, 30):
            lines.append(f"{number}.{line} The supplier shall observe the {topic} provisions set out in schedule {line}.")
        if number == answer_page:
            lines[9] = f"{number}.8 {CONTRACT_ANSWER}"
        document.append(lines)
    return document


def contract_pdf(scanned: bool = False, pages: int = 20, answer_page: int = 13) -> bytes:
    """The contract as a PDF with a text layer, or as scanned A4 pages at 150 dpi (pictures only)."""
    lines = contract_pages(pages, answer_page)
    if not scanned:
        return text_layer_pdf(lines, font_size=10)
    images = []
    for page_lines in lines:
        page = Page((1240, 1754))  # A4 at 150 dpi
        for row, line in enumerate(page_lines):
            page.row(100 + row * 48, (100, line), size=24)
        images.append(page.image)
    return scanned_pdf(images, resolution=150)
