"""Charts: bar, line and pie charts drawn from a seed (with the values they show), the benchmark's quarterly
sales chart, and a small bar chart for quick tries."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from . import fonts
from .page import Document

QUARTERS = {"Q1": 0.8, "Q2": 0.9, "Q3": 1.2, "Q4": 1.0}  # millions, as on ``sales_chart``
BAR_COLOR = (70, 120, 200)


def bar_chart(rng: random.Random, lang: str = "en") -> Document:
    """Sales per quarter or per region. Facts: title, categories, values, unit."""
    categories = rng.choice([["Q1", "Q2", "Q3", "Q4"], ["North", "South", "East", "West", "Central"]])
    values = [round(rng.uniform(0.5, 9.5), 1) for _ in categories]
    unit = rng.choice(["million CNY", "thousand units", "million USD"])
    title = f"{'Quarterly sales' if categories[0] == 'Q1' else 'Sales by region'} ({unit})"
    image = _axes_chart(title, categories, values, kind="bar")
    return Document("bar_chart", "en", image, "", {"title": title, "categories": categories, "values": values, "unit": unit})


def line_chart(rng: random.Random, lang: str = "en") -> Document:
    """Visitors per month over four to six months. Facts: title, categories, values, unit."""
    categories = ["Jan", "Feb", "Mar", "Apr", "May", "Jun"][: rng.randint(4, 6)]
    values = [round(rng.uniform(10, 90)) * 1.0 for _ in categories]
    title = "Website visitors (thousands)"
    image = _axes_chart(title, categories, values, kind="line")
    return Document("line_chart", "en", image, "", {"title": title, "categories": categories, "values": values, "unit": "thousands"})


def pie_chart(rng: random.Random, lang: str = "en") -> Document:
    """A budget's shares of four categories, in per cent. Facts: title, categories, values, unit."""
    categories = rng.sample(["Rent", "Salaries", "Marketing", "Travel", "Equipment", "Training"], 4)
    cuts = sorted(rng.sample(range(5, 95), 3))
    shares = [b - a for a, b in zip([0] + cuts, cuts + [100])]
    image = Image.new("RGB", (760, 480), "white")
    draw = ImageDraw.Draw(image)
    draw.text((200, 16), "Budget by category (%)", fill="black", font=fonts.latin(26))
    colors = [BAR_COLOR, (230, 140, 60), (90, 170, 90), (200, 80, 90)]
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


def _axes(draw: ImageDraw.ImageDraw, left: float, top: float, bottom: float, right: float) -> None:
    draw.line([left, top, left, bottom], fill="black", width=2)
    draw.line([left, bottom, right, bottom], fill="black", width=2)


def _tick(draw: ImageDraw.ImageDraw, left: float, y: float, label: str, offset: tuple[int, int], size: int) -> None:
    draw.line([left - 6, y, left, y], fill="black")
    draw.text((left + offset[0], y + offset[1]), label, fill="black", font=fonts.latin(size))


def _axes_chart(title: str, categories: list[str], values: list[float], kind: str) -> Image.Image:
    image = Image.new("RGB", (820, 520), "white")
    draw = ImageDraw.Draw(image)
    draw.text((150, 14), title, fill="black", font=fonts.latin(26))
    left, bottom, top, right = 90, 450, 80, 780
    top_value = max(values) * 1.2
    step = 10 ** math.floor(math.log10(top_value / 4)) * (2 if top_value / 10 ** math.floor(math.log10(top_value / 4)) > 10 else 1)
    _axes(draw, left, top, bottom, right)
    scale = (bottom - top) / top_value
    tick = 0.0
    while tick <= top_value:
        _tick(draw, left, bottom - tick * scale, f"{tick:g}", (-64, -10), 18)
        tick += step
    slot = (right - left) / len(categories)
    points = []
    for index, (category, value) in enumerate(zip(categories, values)):
        center = left + slot * (index + 0.5)
        y = bottom - value * scale
        if kind == "bar":
            draw.rectangle([center - slot * 0.3, y, center + slot * 0.3, bottom], fill=BAR_COLOR)
        points.append((center, y))
        draw.text((center - 20, y - 30), f"{value:g}", fill="black", font=fonts.latin(20))
        draw.text((center - 18, bottom + 10), category, fill="black", font=fonts.latin(20))
    if kind == "line":
        draw.line(points, fill=(200, 80, 60), width=4)
        for x, y in points:
            draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(200, 80, 60))
    return image


def sales_chart(size: tuple[int, int] = (800, 520)) -> Image.Image:
    """A bar chart of ``QUARTERS`` (sales per quarter, million CNY), with a title, axis ticks and values on the
    bars. Always the same chart (the benchmark's); ``size`` only makes it larger."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((220, 16), "Quarterly sales 2025 (million CNY)", fill="black", font=fonts.latin(24))
    left, bottom, top = 90, size[1] - 70, 80
    _axes(draw, left, top, bottom, size[0] - 40)
    scale = (bottom - top) / 1.4
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4):
        _tick(draw, left, bottom - tick * scale, f"{tick:.1f}", (-50, -9), 16)
    width = (size[0] - left - 80) / len(QUARTERS)
    for index, (quarter, value) in enumerate(QUARTERS.items()):
        x = left + 30 + index * width
        draw.rectangle([x, bottom - value * scale, x + width * 0.6, bottom], fill=BAR_COLOR)
        draw.text((x + width * 0.18, bottom - value * scale - 24), f"{value:.1f}", fill="black", font=fonts.latin(18))
        draw.text((x + width * 0.2, bottom + 10), quarter, fill="black", font=fonts.latin(18))
    return image


def small_bar_chart(values: tuple[float, ...] = tuple(QUARTERS.values())) -> Image.Image:
    """A small bar chart of one bar a quarter (``Q1``, ``Q2``, …), titled "Quarterly sales (M)"."""
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    font = fonts.latin(16)
    draw.text((150, 8), "Quarterly sales (M)", fill="black", font=font)
    for i, value in enumerate(values):
        left = 60 + i * 100
        draw.rectangle([left, 290 - int(value * 200), left + 60, 290], fill=(60, 110, 200))
        draw.text((left + 18, 296), f"Q{i + 1}", fill="black", font=font)
    return image
