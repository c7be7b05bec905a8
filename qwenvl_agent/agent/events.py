"""The typed events of one agent run: the single stream every front end (CLI, Streamlit, server) renders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class StepStarted:
    """The planner is thinking about step ``step`` (1-based)."""

    step: int


@dataclass(frozen=True)
class ToolCall:
    """The planner asked for a tool."""

    name: str
    args: dict[str, Any]
    call_id: str
    step: int


@dataclass(frozen=True)
class ToolResult:
    """A tool finished. ``image_ids`` are the images it looked at or made; ``data`` holds structured
    results front ends can draw (a chart's table, a zoom box)."""

    name: str
    output: str
    image_ids: list[str]
    seconds: float
    call_id: str
    step: int
    is_error: bool = False
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class AnswerToken:
    """A piece of the planner's text as it is generated. Text streamed during a step that ends in a tool
    call was the planner thinking aloud, not the answer; ``Answer`` always carries the final text."""

    text: str
    step: int


@dataclass(frozen=True)
class Step:
    """One tool use, as recorded in ``Answer.steps`` and ``AgentResult.steps``."""

    tool: str
    args: dict[str, Any]
    output: str
    image_ids: list[str]
    seconds: float
    is_error: bool = False
    data: dict[str, Any] | None = None


def trail(steps: list[Step], limit: int = 200) -> str:
    """The steps in a line, for people: "searched 20 pages → doc-1/page-13 → read text of doc-1/page-13"."""
    parts = []
    for step in steps:
        target = step.image_ids[0] if step.image_ids else str(step.args.get("image_id") or step.args.get("page_id") or "")
        if step.is_error:
            parts.append(f"{step.tool} failed")
        elif step.tool == "search_document":
            searched = (step.data or {}).get("searched")
            pages = f"{searched} pages" if isinstance(searched, int) else "the pages"
            parts.append(f"searched {pages} → {', '.join(step.image_ids[:3])}" if step.image_ids else f"searched {pages}, no match")
        else:
            verb = _VERBS.get(step.tool, step.tool)
            parts.append(f"{verb} {target}".strip())
    line = " → ".join(parts)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


_VERBS = {
    "read_page_text": "read text of",
    "ocr_image": "OCR of",
    "read_chart": "read chart",
    "describe_image": "looked at",
    "zoom_image": "zoomed into",
    "locate_in_image": "located in",
}


@dataclass(frozen=True)
class Answer:
    """The run is over: the final answer and every tool step taken for it. ``seconds``: the whole run;
    ``first_token_seconds``: from the question to the first streamed token of the answer (None when the answer
    was not streamed, such as the step limit's message)."""

    text: str
    steps: list[Step] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float | None = None
    first_token_seconds: float | None = None


@dataclass(frozen=True)
class Error:
    """The run failed; ``message`` says what to do about it."""

    message: str


Event = Union[StepStarted, ToolCall, ToolResult, AnswerToken, Answer, Error]


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with the event's type under ``"event"``."""
    return {"event": type(event).__name__, **asdict(event)}
