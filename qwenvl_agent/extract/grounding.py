"""Where each extracted value is written in the document, and the rule against invented values.

The rule: a string, a date or a number the model gives is kept only if the document's text (its PDF text
layer, or what RapidOCR read) contains it, after normalising both sides; otherwise the field is null and
the value is reported as ``dropped``. Normalising: Unicode NFKC, case, runs of white space (and the spaces
OCR puts between Chinese characters); a number is found where a number of the same value is written
("1,234.50" is 1234.5); a date where the same day is written in any common form ("2026-03-14",
"14/03/2026", "March 14, 2026", "2026年3月14日"). A boolean is a judgement, not a quotation: it is kept,
without a source. A value found on a line of the page has that line's page and box (0-1000 grid of the
page); a string that spans lines has its page and no box.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..tools.page_index import IndexedPage

_SPACE = re.compile(r"\s+")
_CJK_GAP = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])\s+|\s+(?=[\u3000-\u9fff\uff00-\uffef])")
_NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")
_MONTHS = {name: number for number, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
     ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")], start=1) for name in names}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATES = [
    (re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"), ("y", "m", "d")),
    (re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})"), ("d", "m", "y")),
    (re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})"), ("m", "d", "y")),
    (re.compile(_MONTH + r"\s+(\d{1,2}),?\s+(\d{4})", re.I), ("M", "d", "y")),
    (re.compile(r"(\d{1,2})\s+" + _MONTH + r",?\s+(\d{4})", re.I), ("d", "M", "y")),
]


@dataclass(frozen=True)
class Source:
    """Where a value is written: its page (1-based), the line's box on the page's 0-1000 grid (None when the
    value spans lines), the line's text, and how the page's text was read ("text layer" or "OCR")."""

    page: int
    box: tuple[float, float, float, float] | None
    text: str
    read_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"page": self.page, "box": list(self.box) if self.box else None, "text": self.text, "read_by": self.read_by}


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _CJK_GAP.sub("", text)).strip()


def numbers_in(text: str) -> list[float]:
    return [float(match.replace(",", "")) for match in _NUMBER.findall(unicodedata.normalize("NFKC", text))]


def dates_in(text: str) -> set[date]:
    found = set()
    text = unicodedata.normalize("NFKC", text)
    for pattern, order in _DATES:
        for match in pattern.finditer(text):
            parts = dict(zip(order, match.groups()))
            try:
                month = _MONTHS[parts["M"].lower()] if "M" in parts else int(parts["m"])
                found.add(date(int(parts["y"]), month, int(parts["d"])))
            except (ValueError, KeyError):
                continue
    return found


def as_date(value: str) -> date | None:
    """The day a date string names (its ISO form, or any form ``dates_in`` reads), or None."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        days = dates_in(value)
        return next(iter(days)) if len(days) == 1 else None


def locate(value: Any, kind: str, pages: list[tuple[int, IndexedPage]]) -> Source | None:
    """Where ``value`` (of ``kind``: string, date, number, integer) is written in ``pages`` ((number, page)
    pairs); None if it is not."""
    match = _matcher(value, kind)
    if match is None:
        return None
    for number, page in pages:
        for line in page.lines:
            if match(line.text):
                return Source(number, tuple(line.box), line.text, page.source)
    if kind == "string":
        for number, page in pages:
            if match(" ".join(line.text for line in page.lines)):
                return Source(number, None, "", page.source)
    return None


def _matcher(value: Any, kind: str):
    if kind == "date" and isinstance(value, str):
        day = as_date(value)
        if day is not None:
            return lambda text: day in dates_in(text)
        kind = "string"
    if kind in ("number", "integer") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return lambda text: any(math.isclose(n, value, rel_tol=1e-9, abs_tol=1e-9) for n in numbers_in(text))
    if isinstance(value, str) and normalise(value):
        wanted = normalise(value)
        return lambda text: wanted in normalise(text)
    return None
