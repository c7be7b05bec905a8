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


@dataclass(frozen=True)
class Answer:
    """The run is over: the final answer and every tool step taken for it."""

    text: str
    steps: list[Step] = field(default_factory=list)
    stopped_early: bool = False


@dataclass(frozen=True)
class Error:
    """The run failed; ``message`` says what to do about it."""

    message: str


Event = Union[StepStarted, ToolCall, ToolResult, AnswerToken, Answer, Error]


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with the event's type under ``"event"``."""
    return {"event": type(event).__name__, **asdict(event)}
