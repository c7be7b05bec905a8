"""Property tests of the parsers a model's output goes through: tool calls, chart JSON, grounding boxes and
zoom boxes, and the OCR layout. Any text in (and near-valid output: JSON with random fields, cut short,
nested, wrapped in prose or fences, in any script), only the documented results or errors out, and the
results keep their promises (boxes inside the image, numbers finite, tables rectangular)."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from qwenvl_agent.tools.chart_data import ChartData, ChartParseError, parse_chart_json
from qwenvl_agent.tools.layout import TextPiece, group_rows, to_text
from qwenvl_agent.tools.locate import MAX_BOXES, parse_boxes
from qwenvl_agent.tools.store import _relative_box
from qwenvl_agent.tools.zoom import ZoomArgs
from qwenvl_agent.vlm.tool_calls import (
    CLOSE,
    OPEN,
    ReplySplitter,
    ToolCallSplitter,
    bare_calls,
    json_value_span,
    parse_tool_calls,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# JSON values as models write them: any scalar (huge integers and floats too), nested lists and objects.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
# Words that matter to the parsers, so random objects often look almost right.
keys = st.sampled_from([
    "name", "arguments", "parameters", "bbox_2d", "label", "text_content", "chart_type", "type", "title",
    "categories", "labels", "series", "data", "datasets", "values", "x_axis", "y_axis", "answer", "value", "x", "y",
])
numberish = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.sampled_from(
        ["1.2M", "$4.50", "33.3%", "1,200", "4,50", "N/A", "-", "1e999", "nan", "inf", "-inf", "NaN", "1.234.567",
         "¥1,234.00", "−7", "1e-400", "9" * 400]),
)
structured = st.recursive(
    st.one_of(scalars, numberish),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.one_of(keys, st.text(max_size=8)), inner, max_size=6),
    max_leaves=30,
)


@st.composite
def model_output(draw) -> str:
    """Text a model could write: random text, or JSON (valid, cut short, with Python literals, NaN, single
    quotes), nested braces, inside prose, a fence or tool-call tags."""
    kind = draw(st.sampled_from(["text", "json", "truncated", "python"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    value = draw(structured)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if kind == "truncated":
        text = text[: draw(st.integers(0, len(text)))]
    elif kind == "python":
        text = text.replace("null", "None").replace("true", "True").replace('"', "'").replace("Infinity", "NaN")
    if draw(st.integers(0, 4)) == 0:  # nested deeper than any parser recurses
        text = draw(st.sampled_from(["{", "[", '{"a":', '{"name": "f", "arguments": '])) * draw(st.integers(1, 1500)) + text
    if draw(st.booleans()):
        text = f"{OPEN}\n{text}\n{CLOSE}"
    before, after = draw(st.text(max_size=30)), draw(st.text(max_size=30))
    fence = draw(st.sampled_from(["", "```json\n", "```\n"]))
    return before + fence + text + ("\n```" if fence else "") + after


any_output = st.one_of(st.text(max_size=300), model_output())


def chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(max(cut, 0), len(text)) for cut in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


def call_summary(call) -> tuple:
    return (call.name, json.dumps(call.args, sort_keys=True, default=str) if call.args is not None else None, call.error is None)


# Tool calls


@FAST
@given(any_output)
def test_tool_calls_parse_to_valid_calls_or_named_errors(text):
    reply = parse_tool_calls(text)
    assert isinstance(reply.content, str)
    for call in reply.calls:
        if call.error is None:
            assert isinstance(call.name, str) and call.name.strip() == call.name and call.name
            assert isinstance(call.args, dict)
            json.dumps(call.args)  # arguments can be sent on as JSON
        else:
            assert isinstance(call.error, str) and call.error
    for call in reply.tool_calls + reply.invalid_tool_calls:
        assert call["id"].startswith("call_")


@FAST
@given(any_output, st.lists(st.integers(0, 400), max_size=8))
def test_a_streamed_reply_splits_as_the_whole_reply_does(text, cuts):
    whole = ToolCallSplitter()
    pieces = whole.feed(text) + whole.finish()
    streamed = ToolCallSplitter()
    parts = [part for chunk in chunks(text, cuts) for part in streamed.feed(chunk)] + streamed.finish()
    assert "".join(p for p in parts if isinstance(p, str)) == "".join(p for p in pieces if isinstance(p, str))
    assert [call_summary(p) for p in parts if not isinstance(p, str)] == [call_summary(p) for p in pieces if not isinstance(p, str)]


@FAST
@given(
    st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    st.text(max_size=40),
)
def test_a_well_formed_call_comes_back_exactly(name, args, prose):
    text = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    if OPEN in text or CLOSE in text or OPEN in prose:
        return  # the format cannot carry its own tags
    reply = parse_tool_calls(f"{prose}{OPEN}\n{text}\n{CLOSE}")
    assert [(call.name, call.args, call.error) for call in reply.calls] == [(name, args, None)]
    assert reply.content == prose.strip()


@FAST
@given(any_output, st.lists(st.sampled_from(["get_weather", "ocr_image", "name", "a"]), max_size=3))
def test_bare_json_calls_name_only_the_tools_given(text, names):
    before, calls = bare_calls(text, names)
    assert text.startswith(before)
    for call in calls:
        assert call.error is None and call.name in names and isinstance(call.args, dict)


@FAST
@given(any_output, st.booleans(), st.lists(st.integers(0, 400), max_size=6))
def test_reasoning_and_answer_split_without_losing_text(text, thinking, cuts):
    splitter = ReplySplitter(thinking=thinking)
    parts = [part for chunk in chunks(text, cuts) for part in splitter.feed(chunk)] + splitter.finish()
    for part in parts:
        assert isinstance(part, str) or hasattr(part, "text") or hasattr(part, "args")


@FAST
@given(any_output, st.data())
def test_a_json_span_ends_inside_the_text(text, data):
    starts = [index for index, char in enumerate(text) if char in "{["]
    if not starts:
        return
    start = data.draw(st.sampled_from(starts))
    end, quote, closers = json_value_span(text, start)
    assert start < end <= len(text) and quote in ("", '"', "'") and set(closers) <= {"}", "]"}


# Chart JSON


def check_chart(chart: ChartData) -> None:
    length = len(chart.categories)
    names = [series.name for series in chart.series]
    assert len(set(names)) == len(names) and all(names)
    for series in chart.series:
        assert len(series.values) == length
        assert all(value is None or (isinstance(value, float) and math.isfinite(value)) for value in series.values)
    assert all(isinstance(category, str) for category in chart.categories)
    assert isinstance(chart.chart_type, str) and chart.chart_type
    chart.to_markdown()
    assert len(chart.to_rows()) == length


@FAST
@given(any_output)
def test_chart_replies_parse_to_a_consistent_chart_or_chart_parse_error(text):
    try:
        chart = parse_chart_json(text)
    except ChartParseError:
        return
    check_chart(chart)


@FAST
@given(structured)
def test_chart_data_validates_any_json_to_a_consistent_chart_or_validation_error(value):
    try:
        chart = ChartData.model_validate(value)
    except ValidationError:
        return
    check_chart(chart)


# Grounding and zoom boxes


def box_reply_items():
    number = st.one_of(numberish, st.integers(-2000, 3000), st.floats(-2000, 3000))
    box = st.lists(number, min_size=3, max_size=5)
    item = st.fixed_dictionaries({"bbox_2d": box}, optional={"label": st.one_of(st.text(max_size=10), json_values),
                                                            "text_content": st.text(max_size=10)})
    return st.lists(item, max_size=40)


@st.composite
def grounding_reply(draw) -> str:
    items = draw(box_reply_items())
    if draw(st.booleans()):
        text = json.dumps(items, ensure_ascii=False)
    else:  # one object per line
        text = "\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return draw(st.sampled_from(["", "```json\n"])) + text


@FAST
@given(st.one_of(any_output, grounding_reply()))
def test_grounding_replies_give_boxes_inside_the_image(reply):
    boxes = parse_boxes(reply)
    assert len(boxes) <= MAX_BOXES
    for box in boxes:
        x1, y1, x2, y2 = box["bbox_2d"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in box["bbox_2d"])
        assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000
        assert isinstance(box["label"], str) and box["label"]


@FAST
@given(st.one_of(any_output, structured, grounding_reply()))
def test_zoom_boxes_validate_to_an_area_inside_the_image_or_a_clear_error(box):
    try:
        args = ZoomArgs.model_validate({"image_id": "img-1", "box": box})
    except ValidationError:
        return
    try:
        x1, y1, x2, y2 = _relative_box(args.box)
    except ValueError as error:
        assert "box must be [x1, y1, x2, y2]" in str(error)
        return
    assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000


# OCR layout

coordinate = st.floats(0, 5000, allow_nan=False)


@st.composite
def text_piece(draw) -> TextPiece:
    x1, y1 = draw(coordinate), draw(coordinate)
    width, height = draw(st.floats(0, 800)), draw(st.floats(0, 200))
    text = draw(st.one_of(st.text(max_size=12), st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)))
    return TextPiece(text, (x1, y1, x1 + width, y1 + height), draw(st.floats(0, 1)))


@FAST
@given(st.lists(text_piece(), max_size=30))
def test_layout_keeps_every_piece_once_and_every_word(pieces):
    rows = group_rows(pieces)
    assert sorted(id(p) for row in rows for p in row) == sorted(id(p) for p in pieces)
    for row in rows:
        assert [p.box[0] for p in row] == sorted(p.box[0] for p in row)
    text = to_text(pieces)
    for piece in pieces:
        for word in piece.text.split():
            assert word in text or word.replace("|", "\\|") in text  # a table escapes its cell separator


def test_a_reply_of_repeated_brackets_is_refused_at_once():
    """A small model can repeat one token to its limit; every candidate used to be closed and repaired."""
    import time

    for reply in ["{" * 1000, "[{" * 500, '{"a": [' * 300]:
        start = time.perf_counter()
        try:
            parse_chart_json(reply)
        except ChartParseError:
            pass
        assert time.perf_counter() - start < 0.5, reply[:10]
