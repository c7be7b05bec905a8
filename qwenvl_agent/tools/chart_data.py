"""What a chart says, as data: the result model of chart reading and a tolerant parser for it.

The chart prompt asks for the compact form (``chart_compact``: key lines and a ``|`` table). A 2B model may
write JSON instead, or something close to it: fenced or surrounded by prose, with single quotes, trailing
commas, Python literals, numbers such as "1.2M" or "$4.50", other key names, or cut off at the token limit.
``parse_chart_json`` accepts both forms and all of these; ``ChartData`` coerces the
values, so ``ChartData.model_validate`` is equally forgiving of structured output from any model.

Length rule: every series and the category list are padded to the longest of them, with ``None``
values and ``""`` labels, so a table never silently loses a value the model did read.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator, model_validator

from .chart_compact import CHART_INSTRUCTIONS, chart_text, may_be_compact, parse_compact
from .chart_json import json_candidates, load_json
from .chart_values import format_number, to_number, to_text

__all__ = ["CHART_INSTRUCTIONS", "ChartData", "ChartParseError", "ChartSeries", "chart_text", "parse_chart_json"]

MAX_QUOTED_CHARS = 200

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
_STRUCTURE_KEYS = ("categories", "series", "data")


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
        return to_text(value) or ""

    @field_validator("values", mode="before")
    @classmethod
    def _coerce_values(cls, value: Any) -> list[float | None]:
        return [to_number(item) for item in _as_list(value)]


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
        text = (to_text(value) or "unknown").lower()
        return re.sub(r"[\s_-]*(chart|graph|plot)$", "", text) or "unknown"

    @field_validator("title", "x_axis", "y_axis", "answer", mode="before")
    @classmethod
    def _coerce_text(cls, value: Any) -> str | None:
        return to_text(value)

    @field_validator("categories", mode="before")
    @classmethod
    def _coerce_categories(cls, value: Any) -> list[str]:
        return [to_text(item) or "" for item in _as_list(value)]

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
                cells = [category] + [format_number(series.values[index]) for series in self.series]
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
    """The chart in a model's reply, in the compact form or as JSON; ``ChartParseError`` if it holds neither."""
    fields = parse_compact(text) if may_be_compact(text) else None
    if fields is not None:
        try:
            return ChartData.model_validate(fields)
        except ValidationError:
            pass  # then it may still hold JSON
    for candidate, whole in json_candidates(text):
        parsed, repaired = load_json(candidate)
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
        "The model's reply was not chart JSON (an object with \"categories\" and \"series\") nor a chart table "
        "(\"type:\" lines over a table of values). "
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
        label_key = next((key for key in keys if to_number(records[0].get(key)) is None), None)
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


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(" ".join(cell.split()).replace("|", "\\|") for cell in cells) + " |"
