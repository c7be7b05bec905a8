"""An answer being written: the assistant's run in a worker thread, folded into the answer's ``Turn`` as it goes.

The run belongs to the conversation, not to one run of the page's script. Streamlit stops a script run
whenever the page reruns (an upload, a changed setting, a click), but the answer goes on: its worker
thread folds every event into the ``Turn`` it writes, whether or not a page is drawing it. Each run of
the page draws the answer as it stands (``snapshot``) and follows it from there (``follow``), until it
ends. ``stop()`` is the one way to end it early.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from qwenvl_agent.agent import Answer, AnswerToken, Error, Event, StepStarted, ToolCall, ToolResult, trail
from qwenvl_agent.tools import ImageStore
from qwenvl_agent.vlm.bridge import WorkerRun

from . import render
from .render import StepView, Turn

log = logging.getLogger("qwenvl_agent.ui")


@dataclass
class AnswerView:
    """The answer as it stands, for drawing: a copy of its turn, and what is still in the making."""

    turn: Turn
    streamed: str  # text of the step being written, not yet known to be the answer or a thought
    label: str  # what the run is doing ("Step 2: ocr_image…")
    queued: str  # a note while the answer waits for the model, else ""
    seconds: float
    done: bool


class Answering:
    """``events()`` (the assistant's stream for one question) running in a worker thread, folded into ``reply``."""

    def __init__(self, events: Callable[[], Iterable[Event]], reply: Turn, store: ImageStore, queued: str = "",
                 tick_seconds: float = 0.25):
        self.reply = reply
        self._store = store
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._label = "Thinking…"
        self._streamed, self._streamed_step = "", -1
        self._queued = queued
        self._open: dict[str, StepView] = {}  # call id -> its step, until its result comes
        self._folded = 0
        self._tick = tick_seconds
        self._run = WorkerRun(lambda: self._fold_all(events()), name="qwenvl-page-answer")

    @property
    def done(self) -> bool:
        """True once the run has ended and ``reply`` says how (complete, error or stopped)."""
        return self._run.done

    def stop(self) -> None:
        """End the answer: its generation stops within a token, what it had written is kept."""
        self._run.cancel()

    def follow(self) -> Iterator[Any]:
        """The events from now on, or ``TICK`` when none came for a moment, until the answer ends. Leaving
        early (the page reran) leaves the answer running."""
        with self._lock:
            start = self._folded
        return self._run.iterate(start, tick=self._tick, cancel_on_exit=False)

    def snapshot(self) -> AnswerView:
        with self._lock:
            turn = replace(self.reply, steps=[replace(step) for step in self.reply.steps],
                           errors=list(self.reply.errors), notes=list(self.reply.notes))
            return AnswerView(turn, self._streamed, self._label, self._queued, self._seconds(), self.done)

    # In the worker thread

    def _fold_all(self, events: Iterable[Event]) -> Iterator[Event]:
        try:
            with contextlib.closing(iter(events)) as stream:  # closed when stopped: its generation ends
                for event in stream:
                    with self._lock:
                        self._fold(event)
                        self._folded += 1
                    yield event
        except Exception as exc:  # noqa: BLE001 - shown on the page, never a traceback
            log.exception("The answer failed")
            with self._lock:
                self._fail(f"Something went wrong: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._settle()

    def _fold(self, event: Event) -> None:
        if not isinstance(event, StepStarted):
            self._queued = ""  # the model has started on it
        if isinstance(event, StepStarted):
            self._label = f"Step {event.step}: planning…"
        elif isinstance(event, AnswerToken):
            if event.step != self._streamed_step:
                self._streamed, self._streamed_step = "", event.step
                self._label = f"Step {event.step}: writing…"
            self._streamed += event.text
        elif isinstance(event, ToolCall):
            self._call(event)
        elif isinstance(event, ToolResult):
            self._result(event)
        elif isinstance(event, Answer):
            self._streamed = ""
            self.reply.text = event.text
            self.reply.label, self.reply.state = summary(event, self._seconds()), "complete"
        elif isinstance(event, Error):
            self._fail(event.message)

    def _call(self, call: ToolCall) -> None:
        view = StepView(len(self.reply.steps) + 1, call.name, call.args)
        if self._streamed_step == call.step:
            view.thought, self._streamed = self._streamed, ""  # text before a tool call was thinking aloud
        self.reply.steps.append(view)
        self._open[call.call_id] = view
        self._label = f"Step {call.step}: {call.name}…"

    def _result(self, result: ToolResult) -> None:
        view = self._open.pop(result.call_id, None)
        if view is None:  # a malformed tool call is answered without a ToolCall event
            view = StepView(len(self.reply.steps) + 1, result.name, {})
            self.reply.steps.append(view)
        view.pictures = render.step_pictures(result, self._store)
        view.chart = (result.data or {}).get("chart") if result.name == "read_chart" else None
        view.done, view.output, view.seconds, view.is_error = True, result.output, result.seconds, result.is_error

    def _fail(self, message: str) -> None:
        self._streamed = ""
        self.reply.errors.append(message)
        self.reply.label, self.reply.state = f"Failed after {self._seconds():.1f} s", "error"

    def _settle(self) -> None:
        """However the run ended: one cut short keeps what it had written, marked as stopped."""
        self._queued = ""
        if self.reply.state != "running":
            return
        self.reply.text = (self.reply.text or self._streamed).strip()
        self._streamed = ""
        self.reply.state = "stopped"
        self.reply.label = f"Stopped after {self._seconds():.1f} s"
        self.reply.notes.append(
            "This answer was stopped before it was complete"
            + (": what it had written is kept below." if self.reply.text else ".")
        )

    def _seconds(self) -> float:
        return time.perf_counter() - self._started


def summary(answer: Answer, seconds: float) -> str:
    """The status label of a finished answer: its steps in a line, and how long it took."""
    count = len(answer.steps)
    if answer.stopped_early:
        return f"Stopped at the step limit after {count} steps · {seconds:.1f} s"
    if count == 0:
        return f"Answered without tools · {seconds:.1f} s"
    return f"{count} step{'s' if count != 1 else ''} · {seconds:.1f} s: {render.escape_markdown(trail(answer.steps))}"
