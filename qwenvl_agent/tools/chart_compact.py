"""The compact form of a chart reply: a few ``key: value`` lines and a ``|`` table, a third of the tokens of
the same chart as JSON (every token of a reply is a decode step, the slowest part of a step on a CPU);
``EXAMPLE`` shows it.

The table's header names the x axis (the ``x:`` line is its title), then one column per series; each row is a category and its values.
Markdown's outer pipes and separator row are accepted, as are fences around the whole reply and a line of
prose before it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .chart_json import FENCE
from .chart_values import format_number

if TYPE_CHECKING:
    from .chart_data import ChartData

EXAMPLE = """\
type: bar
title: Sales by year
x: Year
y: Sales (USD)
Year | Online | Store
2021 | 120 | 80
2022 | 135.5 | ?
answer: none
"""

CHART_INSTRUCTIONS = "Reply in this form and nothing else:\n" + EXAMPLE + """\
Rules:
- type: bar, line, pie, scatter, area or other.
- The table: a header (the x axis, then one column per legend entry; one if there is no legend), then one \
row per label along the x axis (for a pie chart: per slice), left to right.
- Values are plain numbers: 1200000, not 1.2M; 33.3, not 33.3%. Write ? for a value you cannot read.
- answer: a short answer to the question, if there is one; otherwise none."""

_KEYS = {
    "type": "chart_type", "chart": "chart_type", "chart type": "chart_type", "chart_type": "chart_type",
    "title": "title", "x": "x_axis", "x axis": "x_axis", "x_axis": "x_axis", "y": "y_axis", "y axis": "y_axis",
    "y_axis": "y_axis", "answer": "answer",
}
_KEY_LINE = re.compile(r"\s*[-*]?\s*(?P<key>[A-Za-z][A-Za-z _]{0,11}?)\s*:\s*(?P<value>.*)")
_SEPARATOR = re.compile(r"[\s|:+-]*-[\s|:+-]*")
_NONE = {"", "none", "null", "n/a", "-"}


def may_be_compact(text: str) -> bool:
    """Whether ``text`` may be the compact form: it does not open (fences aside) with a JSON object or list."""
    return not _unfenced(text).lstrip().startswith(("{", "["))


def parse_compact(text: str) -> dict[str, Any] | None:
    """The fields of a compact chart reply (for ``ChartData``), or None if it holds no table."""
    fields: dict[str, Any] = {}
    rows: list[list[str]] = []
    last = None  # the field the previous line set: a long answer may go on over several lines
    for line in _unfenced(text).splitlines():
        if not line.strip() or _SEPARATOR.fullmatch(line):
            continue
        match = _KEY_LINE.fullmatch(line)
        key = _KEYS.get(match["key"].strip().lower()) if match else None
        if key:
            value = match["value"].strip()
            fields[key] = None if value.lower() in _NONE else value
            last = key
        elif "|" in line:
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            last = None
        elif last == "answer" and fields.get("answer"):
            fields["answer"] += "\n" + line.strip()
    if len(rows) < 2:
        return None
    header, body = rows[0], rows[1:]
    fields["categories"] = [row[0] for row in body]
    names = header[1:] or ["value"]
    fields["series"] = [
        {"name": name, "values": [row[column] if column < len(row) else None for row in body]}
        for column, name in enumerate(names, start=1)
    ]
    return fields


def chart_text(chart: ChartData) -> str:
    """``chart`` in the compact form (what the chart prompt asks a model to write)."""
    lines = [f"type: {chart.chart_type}"]
    lines += [f"{key}: {value}" for key, value in (("title", chart.title), ("x", chart.x_axis), ("y", chart.y_axis)) if value]
    lines.append(" | ".join([chart.x_axis or "category"] + [series.name for series in chart.series]))
    for index, category in enumerate(chart.categories):
        values = [format_number(series.values[index]) or "?" for series in chart.series]
        lines.append(" | ".join([category, *values]))
    lines.append(f"answer: {chart.answer or 'none'}")
    return "\n".join(lines)


def _unfenced(text: str) -> str:
    blocks = FENCE.findall(text)
    return blocks[0] if blocks else text
