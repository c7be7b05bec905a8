"""What a chart says, as data: the result model of chart reading and a tolerant parser for it.

A 2B model asked for chart JSON writes something close to it: fenced or surrounded by prose, with
single quotes, trailing commas, Python literals, numbers such as "1.2M" or "$4.50", other key names,
or cut off at the token limit. ``parse_chart_json`` accepts all of these; ``ChartData`` coerces the
values, so ``ChartData.model_validate`` is equally forgiving of structured output from any model.

Length rule: every series and the category list are padded to the longest of them, with ``None``
values and ``""`` labels, so a table never silently loses a value the model did read.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import json_repair
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from qwenvl_agent.vlm.tool_calls import json_value_span

__all__ = ["CHART_JSON_INSTRUCTIONS", "ChartData", "ChartParseError", "ChartSeries", "parse_chart_json"]

CHART_JSON_INSTRUCTIONS = """\
Reply with one JSON object and nothing else, like this:
{"chart_type": "bar", "title": "Sales by year", "x_axis": "Year", "y_axis": "Sales (USD)",
 "categories": ["2021", "2022", "2023"],
 "series": [{"name": "Online", "values": [120, 135.5, null]}, {"name": "Store", "values": [80, 75, 90]}],
 "answer": null}
Rules:
- chart_type: bar, line, pie, scatter, area or other.
- categories: the labels along the x axis (for a pie chart: the slice labels), left to right.
- series: one per legend entry (one if there is no legend), values in the same order as categories.
- values are plain numbers: 1200000, not "1.2M"; 33.3, not "33.3%". Use null for a value you cannot read.
- answer: a short answer to the question, if there is one; otherwise null."""

MAX_QUOTED_CHARS = 200
MAX_CANDIDATES = 20  # JSON starts tried per reply; bounds the work on long, bracket-heavy prose
# A chart nests a few levels deep; deeper text is a model repeating "{" or "[" to its limit, which costs
# seconds to repair and holds no chart.
MAX_DEPTH = 16

_KEY_ALIASES = {
    "type": "chart_type", "chart": "chart_type", "kind": "chart_type", "charttype": "chart_type",
    "graph_type": "chart_type", "chart_title": "title", "caption": "title",
    "x_label": "x_axis", "xlabel": "x_axis", "x_title": "x_axis", "xaxis": "x_axis", "x_axis_label": "x_axis",
    "y_label": "y_axis", "ylabel": "y_axis", "y_title": "y_axis", "yaxis": "y_axis", "y_axis_label": "y_axis",
    "labels": "categories", "x": "categories", "x_labels": "categories", "xlabels": "categories",
    "x_values": "categories", "x_axis_labels": "categories", "category": "categories",
    "datasets": "series", "series_data": "series", "values": "data", "y": "data", "y_values": "data",
    "response": "answer", "result": "answer", "final_answer": "answer",
}
_SERIES_KEY_ALIASES = {
    "label": "name", "series": "name", "legend": "name", "key": "name", "title": "name",
    "data": "values", "y": "values", "y_values": "values", "points": "values", "value": "values",
}
_LABEL_KEYS = ("label", "category", "name", "x", "key", "group", "year", "month", "date", "period")
_AXIS_TITLE_KEYS = ("title", "name", "label", "text")
_STRUCTURE_KEYS = ("categories", "series", "data")

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
_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


class ChartParseError(ValueError):
    """The model's reply holds no chart JSON that can be read."""


class ChartSeries(BaseModel):
    """One legend entry: a name and one value per category (``None`` where unreadable)."""

    name: str = ""
    values: list[float | None] = []

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            return {"values": data}
        if isinstance(data, dict):
            return _rename_keys(data, _SERIES_KEY_ALIASES)
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _coerce_name(cls, value: Any) -> str:
        return _to_text(value) or ""

    @field_validator("values", mode="before")
    @classmethod
    def _coerce_values(cls, value: Any) -> list[float | None]:
        return [_to_number(item) for item in _as_list(value)]


class ChartData(BaseModel):
    """A chart read off an image: its type, title, axes, categories, series and an optional answer."""

    chart_type: str = "unknown"
    title: str | None = None
    x_axis: str | None = None
    y_axis: str | None = None
    categories: list[str] = []
    series: list[ChartSeries] = []
    answer: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_shapes(cls, data: Any) -> Any:
        return _normalise_chart(data)

    @field_validator("chart_type", mode="before")
    @classmethod
    def _coerce_chart_type(cls, value: Any) -> str:
        text = (_to_text(value) or "unknown").lower()
        return re.sub(r"[\s_-]*(chart|graph|plot)$", "", text) or "unknown"

    @field_validator("title", "x_axis", "y_axis", "answer", mode="before")
    @classmethod
    def _coerce_text(cls, value: Any) -> str | None:
        return _to_text(value)

    @field_validator("categories", mode="before")
    @classmethod
    def _coerce_categories(cls, value: Any) -> list[str]:
        return [_to_text(item) or "" for item in _as_list(value)]

    @model_validator(mode="after")
    def _align(self) -> ChartData:
        """Pad categories and series to one length, and give every series a distinct name."""
        length = max([len(self.categories)] + [len(series.values) for series in self.series])
        self.categories += [""] * (length - len(self.categories))
        taken: set[str] = set()
        for number, series in enumerate(self.series, start=1):
            series.values += [None] * (length - len(series.values))
            series.name = _unique(series.name or f"series {number}", taken)
        return self

    def to_markdown(self) -> str:
        """Title, type and axes lines, a table (categories down, one column per series), the answer."""
        lines = [f"**{self.title}**"] if self.title else []
        facts = [f"Type: {self.chart_type}"]
        facts += [f"X axis: {self.x_axis}"] if self.x_axis else []
        facts += [f"Y axis: {self.y_axis}"] if self.y_axis else []
        lines.append(" · ".join(facts))
        if self.categories:
            header = [self.x_axis or "category"] + [series.name for series in self.series]
            lines += ["", _table_row(header), "| --- |" + " ---: |" * len(self.series)]
            for index, category in enumerate(self.categories):
                cells = [category] + [_format_number(series.values[index]) for series in self.series]
                lines.append(_table_row(cells))
        if self.answer:
            lines += ["", f"Answer: {self.answer}"]
        return "\n".join(lines)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per category, ``{"category": label, <series name>: value, ...}``, for a dataframe."""
        return [
            {"category": category, **{series.name: series.values[index] for series in self.series}}
            for index, category in enumerate(self.categories)
        ]


def parse_chart_json(text: str) -> ChartData:
    """The chart in a model's reply; ``ChartParseError`` if the reply holds no usable chart JSON."""
    for candidate, whole in _json_candidates(text):
        parsed, repaired = _loads(candidate)
        if parsed is None or (not whole and not _looks_like_chart(parsed)):
            continue
        if whole and repaired and not isinstance(parsed, dict):
            continue  # repaired prose around several values: the objects inside are tried one by one below
        try:
            chart = ChartData.model_validate(parsed)
        except ValidationError:
            continue
        if chart.categories or chart.series or chart.answer:
            return chart
    quoted = text.strip()[:MAX_QUOTED_CHARS]
    raise ChartParseError(
        "The model's reply was not chart JSON (an object with \"categories\" and \"series\"). "
        f"It began: {quoted!r}"
    )


# Shapes: from what models write to ChartData's fields.


def _normalise_chart(data: Any) -> Any:
    """Rename alternative keys, unwrap ``{"chart": {...}}`` and turn ``data``/``series`` into series."""
    if isinstance(data, (list, tuple)):
        data = {"series": list(data)}
    if not isinstance(data, dict):
        return data
    data = _unwrap(data)
    chart = _rename_keys(data, _KEY_ALIASES)
    axis = chart.get("x_axis")
    if isinstance(axis, dict):  # {"title": "Year", "labels": [...]}
        labels = _first(axis, ("labels", "categories", "values", "ticks"))
        if labels is not None:
            chart.setdefault("categories", labels)
    raw = chart.pop("data", None)
    if isinstance(raw, dict) and any(_canonical(key, _KEY_ALIASES) in _STRUCTURE_KEYS for key in raw):
        # Chart.js style: {"type": ..., "data": {"labels": [...], "datasets": [...]}}
        for key, value in _rename_keys(raw, _KEY_ALIASES).items():
            chart.setdefault(key, value)
        raw = chart.pop("data", None)
    if "series" not in chart and raw is not None:
        chart["series"] = raw
    if "series" in chart:
        chart["series"] = _series_list(chart["series"], chart)
    return chart


def _unwrap(data: dict) -> dict:
    """``{"chart": {...}}`` and the like hold the chart one level down."""
    while len(data) == 1:
        (key, value), = data.items()
        if not isinstance(value, dict) or _canonical(key, _KEY_ALIASES) in _STRUCTURE_KEYS:
            break
        data = value
    return data


def _series_list(value: Any, chart: dict) -> list[Any]:
    """Series items from a ``{name: values}``, ``{name: {label: value}}`` or ``{label: value}`` dict,
    records, or a list of series.

    Labels found on the way (dict keys, record labels) become the categories unless there are some.
    """
    if isinstance(value, dict):
        if value and all(isinstance(item, (list, tuple)) for item in value.values()):
            return [{"name": name, "values": values} for name, values in value.items()]
        if value and all(isinstance(item, dict) for item in value.values()):
            inner = dict.fromkeys(label for points in value.values() for label in points)
            labels = chart.setdefault("categories", list(inner))
            return [{"name": name, "values": [points.get(label) for label in labels]} for name, points in value.items()]
        chart.setdefault("categories", list(value))
        return [{"name": "value", "values": list(value.values())}]
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [value]
    if value and all(not isinstance(item, (dict, list, tuple, ChartSeries)) for item in value):
        return [{"values": list(value)}]
    if value and all(isinstance(item, dict) and not _has_list(item) for item in value):
        labels, columns = _records(value)
        if labels is not None:
            chart.setdefault("categories", labels)
        return [{"name": name, "values": column} for name, column in columns.items()]
    return [_series_item(item, chart) for item in value]


def _series_item(item: Any, chart: dict) -> Any:
    """A series whose values are ``{label, value}`` points gets plain values; labels go to categories.

    ``ChartSeries`` objects are copied: aligning a chart must not change the caller's series.
    """
    if isinstance(item, ChartSeries):
        return item.model_dump()
    if not isinstance(item, dict):
        return item
    series = _rename_keys(item, _SERIES_KEY_ALIASES)
    points = series.get("values")
    if isinstance(points, list) and points and all(isinstance(point, dict) for point in points):
        labels, columns = _records(points)
        if labels is not None:
            chart.setdefault("categories", labels)
        series["values"] = next(iter(columns.values()), [])
    return series


def _records(records: list[dict]) -> tuple[list[Any] | None, dict[str, list[Any]]]:
    """Rows such as ``{"label": "Q1", "sales": 3, "cost": 2}`` as (labels, one column per other key)."""
    keys = list(dict.fromkeys(key for record in records for key in record))
    label_key = next((key for key in keys if str(key).lower() in _LABEL_KEYS), None)
    if label_key is None:
        label_key = next((key for key in keys if _to_number(records[0].get(key)) is None), None)
    if label_key is None and len(keys) > 1:  # every value numeric: the first key holds the labels
        label_key = keys[0]
    labels = None if label_key is None else [record.get(label_key) for record in records]
    columns = {str(key): [record.get(key) for record in records] for key in keys if key != label_key}
    return labels, columns


def _rename_keys(data: dict, aliases: dict[str, str]) -> dict[str, Any]:
    """Keys in canonical form; when two keys mean the same field, the first one wins."""
    renamed: dict[str, Any] = {}
    for key, value in data.items():
        renamed.setdefault(_canonical(key, aliases), value)
    return renamed


def _canonical(key: Any, aliases: dict[str, str]) -> str:
    key = re.sub(r"[\s-]+", "_", str(key).strip().lower())
    return aliases.get(key, key)


def _first(data: dict, keys: tuple[str, ...]) -> Any:
    return next((data[key] for key in keys if key in data), None)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _has_list(item: dict) -> bool:
    return any(isinstance(value, (list, tuple)) for value in item.values())


def _looks_like_chart(parsed: Any) -> bool:
    """Whether JSON found inside prose could be the chart: an object, or a list holding containers
    (``[1]`` in "see [1]" is not a chart)."""
    if isinstance(parsed, dict):
        return True
    return isinstance(parsed, list) and any(isinstance(item, (dict, list)) for item in parsed)


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name} ({number})"
    taken.add(candidate)
    return candidate


# Values: numbers and text as models write them.


def _to_number(value: Any) -> float | None:
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


def _to_text(value: Any) -> str | None:
    """Display text: stripped, None when empty; 2019.0 becomes "2019"; {"title": ...} its title."""
    if value is None:
        return None
    if isinstance(value, dict):
        return _to_text(_first(value, _AXIS_TITLE_KEYS))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _format_number(value: float | None) -> str:
    if value is None:
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(" ".join(cell.split()).replace("|", "\\|") for cell in cells) + " |"


# Text: finding the JSON in a reply and repairing it.


def _json_candidates(text: str):
    """Yield ``(json_text, whole)``: fenced blocks and the whole reply first, then every object or
    list that starts inside the prose, cut off where its brackets balance."""
    for block in _FENCE.findall(text):
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


def _loads(candidate: str) -> tuple[Any, bool]:
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
