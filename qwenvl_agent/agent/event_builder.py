"""LangGraph's ``updates``/``messages`` stream of one agent run, as the typed events every front end renders."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage

from qwenvl_agent.tools import ImageStore

from .events import Answer, AnswerToken, Event, Step, StepStarted, ToolCall, ToolResult


class EventBuilder:
    """Turns LangGraph's ``updates``/``messages`` stream into the typed events."""

    def __init__(self, store: ImageStore, started: float | None = None):
        self.store = store
        self.run_started = time.perf_counter() if started is None else started
        self.first_text: dict[int, float] = {}  # when each step's first text token came
        self.step = 1
        self.steps: list[Step] = []
        self.started: dict[str, float] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.pending: set[str] = set()  # ids of the calls of the current step not yet answered

    def feed(self, mode: str, chunk: Any) -> list[Event]:
        if mode == "messages":
            message, metadata = chunk
            if isinstance(message, AIMessageChunk) and metadata.get("langgraph_node") == "model" and message.text:
                self.first_text.setdefault(self.step, time.perf_counter())
                return [AnswerToken(message.text, self.step)]
            return []
        events: list[Event] = []
        for node, update in (chunk or {}).items():
            for message in (update or {}).get("messages", []) if isinstance(update, dict) else []:
                if node == "model" and isinstance(message, AIMessage):
                    events += self._calls(message)
                elif isinstance(message, ToolMessage):
                    events.append(self._result(message))
                    self.pending.discard(message.tool_call_id)
                    if not self.pending:  # every call of this step answered: the planner goes again
                        self.step += 1
                        events.append(StepStarted(self.step))
        return events

    def _calls(self, message: AIMessage) -> list[Event]:
        events: list[Event] = []
        for call in message.tool_calls:
            self.started[call["id"]] = time.perf_counter()
            self.calls[call["id"]] = call
            events.append(ToolCall(call["name"], dict(call["args"]), call["id"], self.step))
        # Broken calls are answered too (with an error), so they count as the step's calls.
        self.pending = {c["id"] for c in message.tool_calls} | {c.get("id") or "invalid" for c in message.invalid_tool_calls}
        return events

    def _result(self, message: ToolMessage) -> ToolResult:
        artifact = message.artifact if isinstance(message.artifact, dict) else {}
        call = self.calls.get(message.tool_call_id, {})
        args = dict(call.get("args", {}))
        image_ids = list(artifact.get("image_ids") or _ids_in(args, self.store))
        seconds = artifact.get("seconds")
        if seconds is None:
            seconds = round(time.perf_counter() - self.started.get(message.tool_call_id, time.perf_counter()), 3)
        result = ToolResult(
            name=message.name or call.get("name", "tool"),
            output=message.text,
            image_ids=image_ids,
            seconds=seconds,
            call_id=message.tool_call_id,
            step=self.step,
            is_error=message.status == "error",
            data=artifact.get("data"),
        )
        self.steps.append(
            Step(result.name, args, result.output, image_ids, seconds, result.is_error, result.data)
        )
        return result

    def answer(self, messages: list[Any]) -> Answer:
        last = messages[-1] if messages else None
        text = last.text if isinstance(last, AIMessage) else ""
        stopped = bool(isinstance(last, AIMessage) and last.response_metadata.get("stopped_early"))
        first = None if stopped else self.first_text.get(self.step)
        return Answer(
            text.strip(),
            list(self.steps),
            stopped_early=stopped,
            seconds=round(time.perf_counter() - self.run_started, 3),
            first_token_seconds=None if first is None else round(first - self.run_started, 3),
        )


def _ids_in(args: dict[str, Any], store: ImageStore) -> list[str]:
    image_id = args.get("image_id", args.get("page_id"))
    return [store.info(image_id).id] if isinstance(image_id, str) and image_id in store else []
