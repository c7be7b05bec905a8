"""Invoices and receipts: drawn from a seed (with their facts), or the fixed ones the benchmark and the tests use."""

from __future__ import annotations

import random

from PIL import Image

from .page import Document, Page, money, text_image

INVOICE_TOTAL = "1,234,560.00"  # the total on ``invoice_screenshot``

_COMPANIES = ["ACME Trading Ltd.", "Northwind Components Co.", "Blue River Foods", "Summit Office Supply",
              "Harbor Logistics Inc.", "Greenfield Tools GmbH", "Orion Medical Devices", "Lakeside Printing"]
_COMPANIES_ZH = ["深圳市华强电子有限公司", "杭州西湖食品有限公司", "上海浦东物流有限公司", "北京中关村科技有限公司",
                 "广州南方纺织有限公司", "成都天府医疗器械有限公司"]
_ITEMS = [("Industrial sensor kit", 1200), ("Control board v2", 320), ("Cable assembly, 5 m", 42),
          ("Installation service", 850), ("Safety gloves, box", 18), ("LED panel 60x60", 65),
          ("Printer toner", 95), ("Office chair", 210), ("Network switch", 380), ("Label tape", 7)]
_ITEMS_ZH = [("办公用品", 120), ("电子元件", 35), ("技术服务费", 800), ("打印纸", 25), ("显示器", 1100),
             ("网络设备", 460), ("包装材料", 15), ("运输服务", 300)]


def invoice(rng: random.Random, lang: str = "en", scale: float = 1.0) -> Document:
    """An invoice of a few items (English, or Chinese with ``lang="zh"``); ``scale`` multiplies every price
    (the same draws otherwise). Facts: number, code, date, buyer, seller, items, subtotal, tax, total, rate."""
    zh = lang == "zh"
    page = Page((1000, 760), lang)
    number, code = f"{rng.randint(10_000_000, 99_999_999)}", f"0{rng.randint(10**10, 10**11 - 1)}"
    date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    buyer, seller = rng.sample(_COMPANIES_ZH if zh else _COMPANIES, 2)
    page.row(30, (40, "增值税普通发票" if zh else "INVOICE"), size=38)
    page.row(100, (40, f"{'发票代码' if zh else 'Invoice code'}: {code}"), (560, f"{'发票号码' if zh else 'Invoice No.'}: {number}"))
    page.row(140, (40, f"{'开票日期' if zh else 'Date'}: {date}"))
    page.row(180, (40, f"{'购买方' if zh else 'Buyer'}: {buyer}"))
    page.row(220, (40, f"{'销售方' if zh else 'Seller'}: {seller}"))
    columns = (40, 440, 600, 790)
    header = ("项目名称", "数量", "单价", "金额") if zh else ("Item", "Qty", "Unit price", "Amount")
    page.draw.rectangle([30, 280, 970, 316], fill=(232, 238, 246))
    page.row(286, *zip(columns, header))
    items, subtotal = [], 0.0
    for index, (name, base) in enumerate(rng.sample(_ITEMS_ZH if zh else _ITEMS, rng.randint(2, 4))):
        quantity = rng.randint(1, 60)
        price = round(base * scale * rng.uniform(0.8, 1.3), 2)
        amount = round(quantity * price, 2)
        subtotal += amount
        items.append({"name": name, "quantity": quantity, "price": price, "amount": amount})
        page.row(330 + index * 40, *zip(columns, (name, str(quantity), money(price), money(amount))))
    rate = 0.13 if rng.random() < 0.7 else 0.06
    tax = round(subtotal * rate, 2)
    total = round(subtotal + tax, 2)
    y = 520
    labels = ("合计", f"税额 ({rate:.0%})", "价税合计") if zh else ("Subtotal", f"Tax ({rate:.0%})", "Total")
    for label, value in zip(labels, (subtotal, tax, total)):
        page.row(y, (560, f"{label}:"), (790, money(value)), size=24)
        y += 40
    facts = {"number": number, "code": code, "date": date, "buyer": buyer, "seller": seller, "items": items,
             "subtotal": round(subtotal, 2), "tax": tax, "total": total, "rate": rate}
    return Document("invoice", lang, page.image, page.text(), facts)


def receipt(rng: random.Random, lang: str = "en") -> Document:
    """A shop's receipt of three to five lines. Facts: shop, date, lines (name, price), total."""
    zh = lang == "zh"
    shops = ["超市便利店", "老街面馆", "城市书店"] if zh else ["CORNER MARKET", "CITY BOOKS", "BLUE CUP CAFE"]
    page = Page((480, 620), lang)
    shop = rng.choice(shops)
    date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}"
    page.row(24, (40, shop), size=30)
    page.row(76, (40, f"{'日期' if zh else 'Date'}: {date}"), size=20)
    goods = (["牛奶", "面包", "苹果", "咖啡", "鸡蛋", "米饭"] if zh else ["Milk", "Bread", "Apples", "Coffee", "Eggs", "Rice"])
    lines, total = [], 0.0
    for index, name in enumerate(rng.sample(goods, rng.randint(3, 5))):
        price = round(rng.uniform(1.5, 25.0), 2)
        total += price
        lines.append({"name": name, "price": price})
        page.row(130 + index * 38, (40, name), (340, money(price)), size=22)
    total = round(total, 2)
    y = 130 + len(lines) * 38 + 30
    page.draw.line([40, y - 12, 440, y - 12], fill="black")
    page.row(y, (40, "合计" if zh else "TOTAL"), (340, money(total)), size=26)
    page.row(y + 60, (40, "谢谢惠顾" if zh else "Thank you!"), size=20)
    return Document("receipt", lang, page.image, page.text(), {"shop": shop, "date": date, "lines": lines, "total": total})


def invoice_screenshot(size: tuple[int, int] = (1100, 780)) -> Image.Image:
    """An invoice as a screenshot: header, parties, a table of line items, tax and the total ``INVOICE_TOTAL``.
    Always the same invoice (the benchmark's); ``size`` only makes the page larger."""
    page = Page(size)
    page.row(30, (40, "INVOICE"), size=40)
    header = ["Invoice code: 044031900111", "Invoice No.: 12345678", "Date: 2026-03-14", "Due: 2026-04-13"]
    for row, line in enumerate(header):
        page.row(30 + row * 26, (680, line), size=20)
    page.row(140, (40, "Buyer: ACME Trading Ltd., 88 Harbour Road, Shenzhen"), size=20)
    page.row(170, (40, "Seller: Northwind Components Co., 12 Lake Street, Hangzhou"), size=20)
    columns = (40, 420, 560, 720, 900)
    page.draw.rectangle([30, 220, size[0] - 30, 256], fill=(230, 236, 245))
    page.row(228, *zip(columns, ("Item", "Qty", "Unit price", "Tax rate", "Amount")), size=20)
    items = [
        ("Industrial sensor kit", "40", "12,500.00", "13%", "500,000.00"),
        ("Control board v2", "120", "3,200.00", "13%", "384,000.00"),
        ("Cable assembly, 5 m", "300", "420.00", "13%", "126,000.00"),
        ("Installation service", "1", "82,584.07", "6%", "82,584.07"),
    ]
    for row, item in enumerate(items):
        y = 270 + row * 40
        page.row(y, *zip(columns, item), size=20)
        page.draw.line([30, y + 32, size[0] - 30, y + 32], fill=(200, 200, 200))
    lines = [("Subtotal:", "1,092,584.07"), ("Tax:", "141,975.93"), ("Total (CNY):", INVOICE_TOTAL)]
    for row, (label, value) in enumerate(lines):
        page.row(470 + row * 36, (700, label), (880, value), size=22)
    page.row(700, (40, "Payment: bank transfer within 30 days. Thank you for your business."), size=18)
    return page.image


SMALL_INVOICE_LINES = ["INVOICE No. 12345678", "Date: 2026-03-14", "Buyer: ACME Ltd", "Total: 1,500.00"]


def small_invoice() -> Image.Image:
    """A four-line invoice (number, date, buyer, total ``1,500.00``): small, quick to read."""
    return text_image(SMALL_INVOICE_LINES, size=(520, 200))
