"""The benchmark's documents, drawn on the spot: the seed's invoice screenshot and quarterly sales chart."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

QUARTERS = {"Q1": 0.8, "Q2": 0.9, "Q3": 1.2, "Q4": 1.0}  # millions, as in the seed's chart
INVOICE_TOTAL = "1,234,560.00"


def _font(size: int):
    return ImageFont.load_default(size=size)


def invoice_screenshot(size: tuple[int, int] = (1100, 780)) -> Image.Image:
    """An invoice as a screenshot: header, parties, a table of line items, tax and total."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 30), "INVOICE", fill="black", font=_font(40))
    header = ["Invoice code: 044031900111", "Invoice No.: 12345678", "Date: 2026-03-14", "Due: 2026-04-13"]
    for row, line in enumerate(header):
        draw.text((680, 30 + row * 26), line, fill="black", font=_font(20))
    draw.text((40, 140), "Buyer: ACME Trading Ltd., 88 Harbour Road, Shenzhen", fill="black", font=_font(20))
    draw.text((40, 170), "Seller: Northwind Components Co., 12 Lake Street, Hangzhou", fill="black", font=_font(20))
    columns = (40, 420, 560, 720, 900)
    draw.rectangle([30, 220, size[0] - 30, 256], fill=(230, 236, 245))
    for x, title in zip(columns, ("Item", "Qty", "Unit price", "Tax rate", "Amount")):
        draw.text((x, 228), title, fill="black", font=_font(20))
    items = [
        ("Industrial sensor kit", "40", "12,500.00", "13%", "500,000.00"),
        ("Control board v2", "120", "3,200.00", "13%", "384,000.00"),
        ("Cable assembly, 5 m", "300", "420.00", "13%", "126,000.00"),
        ("Installation service", "1", "82,584.07", "6%", "82,584.07"),
    ]
    for row, item in enumerate(items):
        y = 270 + row * 40
        for x, value in zip(columns, item):
            draw.text((x, y), value, fill="black", font=_font(20))
        draw.line([30, y + 32, size[0] - 30, y + 32], fill=(200, 200, 200))
    lines = [("Subtotal:", "1,092,584.07"), ("Tax:", "141,975.93"), ("Total (CNY):", INVOICE_TOTAL)]
    for row, (label, value) in enumerate(lines):
        y = 470 + row * 36
        draw.text((700, y), label, fill="black", font=_font(22))
        draw.text((880, y), value, fill="black", font=_font(22))
    draw.text((40, 700), "Payment: bank transfer within 30 days. Thank you for your business.", fill="black", font=_font(18))
    return image


def sales_chart(size: tuple[int, int] = (800, 520)) -> Image.Image:
    """A bar chart of sales per quarter, with a title, axis labels and values on the bars."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((220, 16), "Quarterly sales 2025 (million CNY)", fill="black", font=_font(24))
    left, bottom, top = 90, size[1] - 70, 80
    draw.line([left, top, left, bottom], fill="black", width=2)
    draw.line([left, bottom, size[0] - 40, bottom], fill="black", width=2)
    scale = (bottom - top) / 1.4
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4):
        y = bottom - tick * scale
        draw.line([left - 6, y, left, y], fill="black")
        draw.text((left - 50, y - 9), f"{tick:.1f}", fill="black", font=_font(16))
    width = (size[0] - left - 80) / len(QUARTERS)
    for index, (quarter, value) in enumerate(QUARTERS.items()):
        x = left + 30 + index * width
        draw.rectangle([x, bottom - value * scale, x + width * 0.6, bottom], fill=(70, 120, 200))
        draw.text((x + width * 0.18, bottom - value * scale - 24), f"{value:.1f}", fill="black", font=_font(18))
        draw.text((x + width * 0.2, bottom + 10), quarter, fill="black", font=_font(18))
    return image


CONTRACT_ANSWER = "Either party may terminate this agreement with a written notice of ninety (90) days."


def contract_pages(pages: int = 20, answer_page: int = 13) -> list[list[str]]:
    """The lines of a long service contract; the termination notice is on ``answer_page``."""
    topics = ["scope of services", "service levels", "fees and invoicing", "payment terms", "confidentiality",
              "data protection", "liability", "insurance", "subcontractors", "audit rights", "force majeure",
              "intellectual property", "termination", "transition", "governing law", "notices", "warranties",
              "acceptance", "change control", "miscellaneous"]
    document = []
    for number in range(1, pages + 1):
        topic = topics[(number - 1) % len(topics)]
        lines = [f"SERVICE AGREEMENT - page {number} of {pages}", f"Clause {number}: {topic.title()}"]
        for line in range(1, 30):
            lines.append(f"{number}.{line} The supplier shall observe the {topic} provisions set out in schedule {line}.")
        if number == answer_page:
            lines[9] = f"{number}.8 {CONTRACT_ANSWER}"
        document.append(lines)
    return document


def contract_pdf(scanned: bool, pages: int = 20, answer_page: int = 13) -> bytes:
    """The contract as a PDF with a text layer, or as scanned pages (pictures only)."""
    import io

    lines = contract_pages(pages, answer_page)
    if not scanned:
        from fpdf import FPDF

        pdf = FPDF()
        pdf.set_font("helvetica", size=10)
        for page in lines:
            pdf.add_page()
            for line in page:
                pdf.cell(text=line, new_x="LMARGIN", new_y="NEXT")
        return bytes(pdf.output())
    images = []
    for page in lines:
        image = Image.new("RGB", (1240, 1754), "white")  # A4 at 150 dpi
        draw = ImageDraw.Draw(image)
        for row, line in enumerate(page):
            draw.text((100, 100 + row * 48), line, fill="black", font=_font(24))
        images.append(image)
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=150)
    return buffer.getvalue()
