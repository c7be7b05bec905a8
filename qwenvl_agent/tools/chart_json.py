"""Finding the JSON in a model's reply (fenced, in prose, cut off) and repairing it as models write it."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import json_repair

from qwenvl_agent.vlm.tool_calls import json_value_span

MAX_CANDIDATES = 20  # JSON starts tried per reply; bounds the work on long, bracket-heavy prose
# A chart nests a few levels deep; deeper text is a model repeating "{" or "[" to its limit, which costs
# seconds to repair and holds no chart.
MAX_DEPTH = 16
FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def json_candidates(text: str):
    """Yield ``(json_text, whole)``: fenced blocks and the whole reply first, then every object or
    list that starts inside the prose, cut off where its brackets balance."""
    for block in FENCE.findall(text):
        yield block.strip(), True
    yield text.strip(), True
    starts = [index for index, char in enumerate(text) if char in "{["]
    for start in starts[:MAX_CANDIDATES]:
        yield _balanced(text, start), False


def _balanced(text: str, start: int) -> str:
    """The object or list starting at ``start``; if the reply stops early, it is closed here."""
    end, quote, closers = json_value_span(text, start)
    if not closers:
        return text[start:end]
    return (text[start:] + quote).rstrip().rstrip(",") + closers


def load_json(candidate: str) -> tuple[Any, bool]:
    """``candidate`` parsed as JSON, else repaired as models write it (single quotes, trailing commas, Python
    literals, unquoted words, a cut-off end) by json-repair; and whether it was repaired. None if nothing is
    left."""
    if _depth(candidate) > MAX_DEPTH:
        return None, False
    try:
        return json.loads(candidate, strict=False), False
    except (ValueError, RecursionError):
        pass
    try:
        repaired = json_repair.loads(candidate)
    except (ValueError, RecursionError):  # nested deeper than the repairer recurses
        return None, True
    return (repaired if isinstance(repaired, (dict, list)) and repaired else None), True


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_STEP = {"{": 1, "[": 1, "}": -1, "]": -1}


def _depth(text: str) -> int:
    """How deep the brackets of ``text`` nest, outside double-quoted strings."""
    return max(accumulate(_STEP.get(char, 0) for char in _QUOTED.sub("", text)), default=0)
