"""Numbers and text in a chart as small models write them: "1.2M", "33.3%", "$4.50", "¥1,234.00", "N/A"."""

from __future__ import annotations

import math
import re
from typing import Any

_AXIS_TITLE_KEYS = ("title", "name", "label", "text")
_MISSING = {"", "n/a", "na", "-", "--", "—", "–", "?", "null", "none", "nan", "unknown"}
_SCALES = {
    "k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "mio": 1e6, "million": 1e6,
    "b": 1e9, "bn": 1e9, "billion": 1e9, "t": 1e12, "tn": 1e12, "trillion": 1e12,
}
# Sign and currency ("-$", "US$", "USD "), the digits, then a unit ("M", "%", "kg", "USD"). Letters
# alone never prefix a number, so a label such as "Q1" is not read as 1.
_NUMBER_TEXT = re.compile(
    r"(?P<prefix>[-+\u2212~≈]?\s*(?:[A-Za-z]{0,3}[$€£¥₹₩]|[A-Za-z]{2,3}\s)?\s*[-+\u2212]?)\s*"
    r"(?P<digits>\d[\d,.]*|\.\d+)\s*(?P<unit>[^\d]{0,20})"
)


def to_number(value: Any) -> float | None:
    """A float from a number or from text such as "1.2M", "33.3%", "$4.50", "¥1,234.00"; None if
    missing ("", "N/A", "-") or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return None
        return number if math.isfinite(number) else None
    if not isinstance(value, str) or value.strip().lower() in _MISSING:
        return None
    return _number_from_text(value.strip())


def _number_from_text(text: str) -> float | None:
    try:
        number = float(text)  # plain and scientific notation: "12", "-3.5", "1e5"
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    match = _NUMBER_TEXT.fullmatch(text)
    digits = _plain_digits(match["digits"]) if match else None
    if digits is None:
        return None
    unit = match["unit"].strip().lower().split(" ")[0].rstrip(".")
    number = float(digits) * _SCALES.get(unit, 1.0)
    if not math.isfinite(number):  # hundreds of digits
        return None
    return -number if "-" in match["prefix"] or "\u2212" in match["prefix"] else number


def _plain_digits(digits: str) -> str | None:
    """Digits with thousands separators removed and a "." decimal point, or None if ambiguous.

    "1,200" and "1.234.567" group thousands; "4,50" and "1.234,56" use a decimal comma.
    """
    digits = digits.rstrip(".,")
    if "," in digits and "." in digits:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        return digits.replace(thousands, "").replace(decimal, ".")
    for separator in ",.":
        groups = digits.split(separator)
        if len(groups) > 2 or (separator == "," and len(groups) == 2):
            if all(len(group) == 3 for group in groups[1:]):
                return "".join(groups)
            return ".".join(groups) if len(groups) == 2 else None
    return digits


def to_text(value: Any) -> str | None:
    """Display text: stripped, None when empty; 2019.0 becomes "2019"; {"title": ...} its title."""
    if value is None:
        return None
    if isinstance(value, dict):
        return to_text(next((value[key] for key in _AXIS_TITLE_KEYS if key in value), None))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def format_number(value: float | None) -> str:
    if value is None:
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"
