"""Forms and tables drawn from a seed, with the values written in them."""

from __future__ import annotations

import random

from .page import Document, Page, money


def form(rng: random.Random, lang: str = "en") -> Document:
    """An application form of five boxed fields. Facts: fields (label -> value)."""
    page = Page((900, 520), "en")
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
    """Sales by product: four rows of product, region, units and revenue. Facts: rows."""
    page = Page((900, 420), "en")
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
