"""Scenes without text: coloured shapes on a lawn, for questions about what a picture shows."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from .page import Document

COLORS = {"red": (210, 50, 50), "blue": (50, 90, 210), "green": (40, 160, 70), "yellow": (230, 200, 40)}


def scene(rng: random.Random, lang: str = "en") -> Document:
    """Three to seven circles, squares and triangles. Facts: shapes (shape, color), in drawing order."""
    image = Image.new("RGB", (800, 560), (235, 242, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 420, 800, 560], fill=(170, 210, 150))  # grass
    shapes = []
    slots = rng.sample([(x, y) for x in range(60, 760, 140) for y in range(60, 400, 130)], rng.randint(3, 7))
    for x, y in slots:
        shape, color = rng.choice(["circle", "square", "triangle"]), rng.choice(list(COLORS))
        size = rng.randint(36, 56)
        box = [x - size, y - size, x + size, y + size]
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[color])
        else:
            draw.polygon([(x, y - size), (x - size, y + size), (x + size, y + size)], fill=COLORS[color])
        shapes.append({"shape": shape, "color": color})
    return Document("scene", "en", image, "", {"shapes": shapes})
