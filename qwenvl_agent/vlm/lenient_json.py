"""JSON as small models write it, read leniently: single quotes, trailing commas, a missing brace or code
fences are repaired (json-repair does the repairing); ``json_value_span`` finds where a value written so far
ends, or what it still has to close."""

from __future__ import annotations

import json
import re
from typing import Any

import json_repair

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def json_value(text: str) -> Any:
    """``text`` as JSON, repaired if written loosely (single quotes, trailing commas, a missing brace); None
    if even that fails (nested deeper than Python recurses)."""
    try:
        return json.loads(text)
    except RecursionError:
        return None
    except ValueError:  # not JSON as written (or an integer of thousands of digits): repair it
        pass
    try:
        return json_repair.loads(text)
    except (ValueError, RecursionError):
        return None


def json_value_span(text: str, start: int) -> tuple[int, str, str]:
    """Scan the object or list opening at ``start``, quotes of either kind respected: ``(end, quote,
    closers)``. ``end`` is just past its closing bracket (or a bracket that does not match), else the end of
    the text, where ``quote`` is the quote still open and ``closers`` the brackets still to close, innermost
    first."""
    closers: list[str] = []
    quote, escaped = "", False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]":
            if not closers or closers.pop() != char or not closers:
                return index + 1, "", ""
    return len(text), quote, "".join(reversed(closers))


def lenient_json(text: str) -> Any:
    """``text`` as JSON once its code fences are dropped, repaired if need be (see ``json_value``)."""
    return json_value(_FENCE.sub("", text))
