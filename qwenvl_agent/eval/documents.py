"""The evaluation's documents, drawn from a seed: invoices, receipts, forms, tables, charts and scenes.

Every generator takes a ``random.Random`` and returns a ``Document``: the image, its text in reading
order (rows top to bottom, cells left to right: the ground truth for OCR), and the facts questions are
asked about. Nothing is downloaded; Chinese text needs a CJK font (``fonts.py``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from . import fonts


@dataclass
class Document:
    kind: str
    lang: str
    image: Image.Image
    text: str
    facts: dict[str, Any] = field(default_factory=dict)


class _Page:
    """A white page written row by row; it remembers each row's text for the ground truth."""

    def __init__(self, size: tuple[int, int], lang: str):
        self.image = Image.new("RGB", size, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.lang = lang
        self.rows: list[str] = []

    def font(self, size: int):
        return fonts.cjk(size) if self.lang == "zh" else fonts.latin(size)

    def row(self, y: int, *cells: tuple[int, str], size: int = 22, color: str = "black") -> None:
        for x, text in cells:
            self.draw.text((x, y), text, fill=color, font=self.font(size))
        self.rows.append(" ".join(text for _, text in cells))

    def text(self) -> str:
        return "\n".join(self.rows)


def money(value: float) -> str:
    return f"{value:,.2f}"


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
    """An invoice; ``scale`` multiplies every price (the same draws otherwise)."""
    zh = lang == "zh"
    page = _Page((1000, 760), lang)
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
    zh = lang == "zh"
    shops = ["超市便利店", "老街面馆", "城市书店"] if zh else ["CORNER MARKET", "CITY BOOKS", "BLUE CUP CAFE"]
    page = _Page((480, 620), lang)
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


def form(rng: random.Random, lang: str = "en") -> Document:
    page = _Page((900, 520), "en")
    first = rng.choice(["Anna", "Li", "Mark", "Sofia", "Omar", "Chen", "Julia", "Ravi"])
    last = rng.choice(["Schmidt", "Wang", "Okafor", "Rossi", "Novak", "Garcia", "Tanaka"])
    fields = {
        "Name": f"{first} {last}",
        "Date of birth": f"19{rng.randint(55, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "ID number": f"{rng.choice('ABCDEFGH')}{rng.randint(1_000_000, 9_999_999)}",
        "Phone": f"+49 {rng.randint(100, 999)} {rng.randint(1_000_000, 9_999_999)}",
        "City": rng.choice(["Berlin", "Hamburg", "Munich", "Leipzig", "Cologne", "Dresden"]),
    }
    page.row(30, (40, "APPLICATION FORM"), size=34)
    for index, (label, value) in enumerate(fields.items()):
        y = 110 + index * 70
        page.draw.rectangle([300, y - 8, 860, y + 36], outline=(120, 120, 120))
        page.row(y, (40, f"{label}:"), (316, value), size=24)
    return Document("form", "en", page.image, page.text(), {"fields": fields})


def table(rng: random.Random, lang: str = "en") -> Document:
    page = _Page((900, 420), "en")
    regions = rng.sample(["North", "South", "East", "West", "Central", "Coastal"], 4)
    header = ("Product", "Region", "Units", "Revenue")
    columns = (40, 300, 520, 680)
    page.row(24, (40, "Sales by product"), size=30)
    page.row(90, *zip(columns, header))
    rows = []
    for index, product in enumerate(rng.sample(["Laptop", "Monitor", "Keyboard", "Mouse", "Printer", "Tablet"], 4)):
        units = rng.randint(10, 900)
        revenue = round(units * rng.uniform(15, 400), 2)
        rows.append({"product": product, "region": regions[index], "units": units, "revenue": revenue})
        page.row(140 + index * 50, *zip(columns, (product, regions[index], str(units), money(revenue))))
    for x in (30, 290, 510, 670, 870):
        page.draw.line([x, 80, x, 340], fill=(170, 170, 170))
    return Document("table", "en", page.image, page.text(), {"rows": rows})


def bar_chart(rng: random.Random, lang: str = "en") -> Document:
    categories = rng.choice([["Q1", "Q2", "Q3", "Q4"], ["North", "South", "East", "West", "Central"]])
    values = [round(rng.uniform(0.5, 9.5), 1) for _ in categories]
    unit = rng.choice(["million CNY", "thousand units", "million USD"])
    title = f"{'Quarterly sales' if categories[0] == 'Q1' else 'Sales by region'} ({unit})"
    image = _axes_chart(title, categories, values, kind="bar")
    return Document("bar_chart", "en", image, "", {"title": title, "categories": categories, "values": values, "unit": unit})


def line_chart(rng: random.Random, lang: str = "en") -> Document:
    categories = ["Jan", "Feb", "Mar", "Apr", "May", "Jun"][: rng.randint(4, 6)]
    values = [round(rng.uniform(10, 90)) * 1.0 for _ in categories]
    title = "Website visitors (thousands)"
    image = _axes_chart(title, categories, values, kind="line")
    return Document("line_chart", "en", image, "", {"title": title, "categories": categories, "values": values, "unit": "thousands"})


def pie_chart(rng: random.Random, lang: str = "en") -> Document:
    categories = rng.sample(["Rent", "Salaries", "Marketing", "Travel", "Equipment", "Training"], 4)
    cuts = sorted(rng.sample(range(5, 95), 3))
    shares = [b - a for a, b in zip([0] + cuts, cuts + [100])]
    image = Image.new("RGB", (760, 480), "white")
    draw = ImageDraw.Draw(image)
    draw.text((200, 16), "Budget by category (%)", fill="black", font=fonts.latin(26))
    colors = [(70, 120, 200), (230, 140, 60), (90, 170, 90), (200, 80, 90)]
    start = -90.0
    for share, color in zip(shares, colors):
        end = start + share * 3.6
        draw.pieslice([60, 80, 420, 440], start, end, fill=color, outline="white")
        start = end
    for index, (name, share, color) in enumerate(zip(categories, shares, colors)):
        y = 140 + index * 60
        draw.rectangle([470, y, 500, y + 30], fill=color)
        draw.text((515, y + 2), f"{name} {share}%", fill="black", font=fonts.latin(24))
    return Document("pie_chart", "en", image, "", {"title": "Budget by category (%)", "categories": categories,
                                                    "values": [float(s) for s in shares], "unit": "%"})


def _axes_chart(title: str, categories: list[str], values: list[float], kind: str) -> Image.Image:
    image = Image.new("RGB", (820, 520), "white")
    draw = ImageDraw.Draw(image)
    draw.text((150, 14), title, fill="black", font=fonts.latin(26))
    left, bottom, top, right = 90, 450, 80, 780
    top_value = max(values) * 1.2
    step = 10 ** math.floor(math.log10(top_value / 4)) * (2 if top_value / 10 ** math.floor(math.log10(top_value / 4)) > 10 else 1)
    draw.line([left, top, left, bottom], fill="black", width=2)
    draw.line([left, bottom, right, bottom], fill="black", width=2)
    scale = (bottom - top) / top_value
    tick = 0.0
    while tick <= top_value:
        y = bottom - tick * scale
        draw.line([left - 6, y, left, y], fill="black")
        draw.text((left - 64, y - 10), f"{tick:g}", fill="black", font=fonts.latin(18))
        tick += step
    slot = (right - left) / len(categories)
    points = []
    for index, (category, value) in enumerate(zip(categories, values)):
        center = left + slot * (index + 0.5)
        y = bottom - value * scale
        if kind == "bar":
            draw.rectangle([center - slot * 0.3, y, center + slot * 0.3, bottom], fill=(70, 120, 200))
        points.append((center, y))
        draw.text((center - 20, y - 30), f"{value:g}", fill="black", font=fonts.latin(20))
        draw.text((center - 18, bottom + 10), category, fill="black", font=fonts.latin(20))
    if kind == "line":
        draw.line(points, fill=(200, 80, 60), width=4)
        for x, y in points:
            draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(200, 80, 60))
    return image


_COLORS = {"red": (210, 50, 50), "blue": (50, 90, 210), "green": (40, 160, 70), "yellow": (230, 200, 40)}


def scene(rng: random.Random, lang: str = "en") -> Document:
    image = Image.new("RGB", (800, 560), (235, 242, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 420, 800, 560], fill=(170, 210, 150))  # grass
    shapes = []
    slots = rng.sample([(x, y) for x in range(60, 760, 140) for y in range(60, 400, 130)], rng.randint(3, 7))
    for x, y in slots:
        shape, color = rng.choice(["circle", "square", "triangle"]), rng.choice(list(_COLORS))
        size = rng.randint(36, 56)
        box = [x - size, y - size, x + size, y + size]
        if shape == "circle":
            draw.ellipse(box, fill=_COLORS[color])
        elif shape == "square":
            draw.rectangle(box, fill=_COLORS[color])
        else:
            draw.polygon([(x, y - size), (x - size, y + size), (x + size, y + size)], fill=_COLORS[color])
        shapes.append({"shape": shape, "color": color})
    return Document("scene", "en", image, "", {"shapes": shapes})
