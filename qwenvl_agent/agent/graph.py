"""The document agent: LangChain's ``create_agent`` over the image tools, with a prompt for a small model
and a bound on the number of steps."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelCallLimitMiddleware, hook_config
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool

from qwenvl_agent.tools import DEFAULT_OCR_ENGINE, ImageStore, make_tools
from qwenvl_agent.vlm.cancel import current as current_cancel
from qwenvl_agent.vlm.errors import GenerationCancelled
from qwenvl_agent.vlm.tool_calls import parse_call

from .backends import planner_model

SYSTEM_PROMPT = """You answer questions about the user's images and documents. You cannot see them: you use \
tools on their ids (img-1, doc-1/page-2).

How to work:
1. Call every tool you need at once, one <tool_call> block each. For a question about two images, read both \
in one turn:
<tool_call>
{"name": "ocr_image", "arguments": {"image_id": "img-1"}}
</tool_call>
<tool_call>
{"name": "read_chart", "arguments": {"image_id": "img-2"}}
</tool_call>
2. Long documents: search_document first, then read_page_text on the pages it finds.
3. Text and numbers: read_page_text, else ocr_image. Charts: read_chart. Photos: describe_image. Small print: \
locate_in_image, then zoom_image, then ocr_image on the new id.
4. If a tool fails, read the error and call again with a fix.
5. When you have what you need, answer without tools.

Your answer:
- In the language of the question.
- Give each figure with its source (for example: "total 1,500.00, doc-1/page-7").
- Compare numbers step by step.
- If the images do not hold the answer, say so. Never invent a number."""

LIMIT_MESSAGE = (
    "I stopped after {steps} steps without reaching a final answer. Ask a narrower question (for example about "
    "one image), or allow more steps (max_steps)."
)


class StepLimit(ModelCallLimitMiddleware):
    """Ends a run after ``max_steps`` planner calls with a message a user understands."""

    def __init__(self, max_steps: int):
        super().__init__(run_limit=max_steps, exit_behavior="end")
        self.max_steps = max_steps

    @hook_config(can_jump_to=["end"])
    def before_model(self, state, runtime) -> dict[str, Any] | None:
        return self._explain(super().before_model(state, runtime))

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state, runtime) -> dict[str, Any] | None:
        return self._explain(await super().abefore_model(state, runtime))

    def _explain(self, update: dict[str, Any] | None) -> dict[str, Any] | None:
        if update and update.get("messages"):
            text = LIMIT_MESSAGE.format(steps=self.max_steps)
            update["messages"] = [AIMessage(content=text, response_metadata={"stopped_early": True})]
        return update


class ReturnBrokenCalls(AgentMiddleware):
    """A tool call the planner wrote but that could not be parsed goes back to it as an error tool message
    naming the problem, and the run goes on (within the step limit), instead of ending with the broken call
    as the answer."""

    @hook_config(can_jump_to=["model"])
    def after_model(self, state, runtime) -> dict[str, Any] | None:
        last = state["messages"][-1] if state["messages"] else None
        if not isinstance(last, AIMessage) or not last.invalid_tool_calls:
            return None
        replies = [
            ToolMessage(
                content=f"Error: {_problem(call)} Call the tool again.",
                tool_call_id=call.get("id") or "invalid",
                name=call.get("name") or "invalid_tool_call",
                status="error",
            )
            for call in last.invalid_tool_calls
        ]
        update: dict[str, Any] = {"messages": replies}
        if not last.tool_calls:  # nothing valid to run: straight back to the planner
            update["jump_to"] = "model"
        return update

    @hook_config(can_jump_to=["model"])
    async def aafter_model(self, state, runtime) -> dict[str, Any] | None:
        return self.after_model(state, runtime)


class CallsInOrder(AgentMiddleware):
    """The calls of one planner turn run one after another, in the order the planner wrote them. LangGraph
    starts them all at once; the tools share one model, and a reply read with the second call's image but
    meant for the first would be wrong (the bench and the tests script the replies in that order)."""

    def __init__(self) -> None:
        super().__init__()
        self._turn = threading.Condition()
        self._done: dict[tuple[str, ...], int] = {}  # calls of each turn that have run

    def wrap_tool_call(self, request, handler):
        turn, index = _place(request.state, request.tool_call.get("id"))
        stop = current_cancel()
        with self._turn:
            while self._done.get(turn, 0) < index:
                _check(stop)
                self._turn.wait(0.1)
        _check(stop)  # the call before this one may have ended because the run was stopped
        try:
            return handler(request)
        finally:
            self._finish(turn)

    async def awrap_tool_call(self, request, handler):
        turn, index = _place(request.state, request.tool_call.get("id"))
        stop = current_cancel()
        while self._done.get(turn, 0) < index:
            _check(stop)
            await asyncio.sleep(0.01)
        _check(stop)
        try:
            return await handler(request)
        finally:
            self._finish(turn)

    def _finish(self, turn: tuple[str, ...]) -> None:
        """One more call of ``turn`` has run (or failed)."""
        with self._turn:
            self._done[turn] = self._done.get(turn, 0) + 1
            if self._done[turn] >= len(turn):
                del self._done[turn]
            self._turn.notify_all()


def _check(stop: Any) -> None:
    """A run stopped while a call waited for its turn: the call is not made."""
    if stop is not None and stop.is_set():
        raise GenerationCancelled("The run was stopped before this tool call's turn came.")


def _place(state: Any, call_id: str | None) -> tuple[tuple[str, ...], int]:
    """The ids of the calls of the planner turn that made ``call_id``, and its place among them."""
    messages = state.get("messages", []) if isinstance(state, dict) else getattr(state, "messages", [])
    for message in reversed(messages):
        if isinstance(message, AIMessage) and message.tool_calls:
            ids = tuple(str(call.get("id")) for call in message.tool_calls)
            if str(call_id) in ids:
                return ids, ids.index(str(call_id))
            break
    return (str(call_id),), 0

class KnownIds(AgentMiddleware):
    """At each planner step, a local ``ChatQwenVL`` planner is told the ids the conversation's store holds at that
    moment (``allowed_ids``), so its tool-call grammar admits those and no other: a call on an id that does not
    exist cannot be written. Other planners are left as they are (they constrain on their side or not at all).
    ``tool_choice``, when given, is the planner's at every step ("any": each step calls a tool)."""

    def __init__(self, stores: Sequence[ImageStore], tool_choice: str | None = None):
        super().__init__()
        self.stores = list(stores)
        self.tool_choice = tool_choice

    def wrap_model_call(self, request, handler):
        return handler(self._told(request))

    async def awrap_model_call(self, request, handler):
        return await handler(self._told(request))

    def _told(self, request):
        from qwenvl_agent.vlm.chat_model import ChatQwenVL

        overrides: dict[str, Any] = {}
        if self.tool_choice is not None:
            overrides["tool_choice"] = self.tool_choice
        if isinstance(request.model, ChatQwenVL) and self.stores:
            overrides["model_settings"] = {**request.model_settings, "allowed_ids": ids_by_argument(self.stores)}
        return request.override(**overrides) if overrides else request


def ids_by_argument(stores: Sequence[ImageStore]) -> dict[str, list[str]]:
    """The values the tools' id arguments may take now: every image and page for ``image_id`` and ``page_id``;
    every document and image (``doc-1``, ``img-2``) for ``doc_id``."""
    ids = list(dict.fromkeys(image_id for store in stores for image_id in store.ids()))
    documents = list(dict.fromkeys(image_id.split("/")[0] for image_id in ids))
    return {"image_id": ids, "page_id": ids, "doc_id": documents}


def _problem(call: dict[str, Any]) -> str:
    """What is wrong with a broken call. A streamed call loses its parser's message on the way (LangChain
    rebuilds it from the chunks), so it is read again."""
    if call.get("error"):
        return call["error"]
    raw = call.get("args") or ""
    try:
        decoded = json.loads(raw)
        raw = decoded if isinstance(decoded, str) else raw
    except (TypeError, ValueError):
        pass
    return parse_call(str(raw)).error or f"The tool call could not be read: {str(raw)[:200]}"


def build_agent(
    model: BaseChatModel | str | None = None,
    tools: Sequence[BaseTool] | None = None,
    *,
    backend: str = "local",
    base_url: str | None = None,
    api_key: str | None = None,
    store: ImageStore | None = None,
    max_steps: int = 8,
    vlm: BaseChatModel | None = None,
    system_prompt: str = SYSTEM_PROMPT,
    checkpointer: Any = None,
    ocr_engine: str = DEFAULT_OCR_ENGINE,
    max_image_tokens: int | None = None,
    max_tokens: int | None = None,
    tool_choice: str | None = None,
):
    """The compiled LangGraph agent (``invoke``/``stream`` with ``{"messages": [...]}``).

    ``model`` is the planner, any tool-calling chat model, or a model name built with ``backend`` (``"local"``:
    ``ChatQwenVL``; ``"openai"``: a server at ``base_url`` with ``api_key``); by default ``ChatQwenVL()``, which
    shares its loaded weights with the tools. ``tools`` default to ``make_tools(vlm or model, store, ocr_engine=…,
    max_image_tokens=…, max_tokens=…)``. ``max_steps`` bounds the planner calls of one run. ``tool_choice``: the
    planner's at every step (None: it decides; "any": every step is a tool call, until ``max_steps``).

    A local ``ChatQwenVL`` planner writes its calls under a grammar of the tools (unless built with
    ``constrain=False``), told at each step the ids the store holds: it can only call a tool that exists on an
    id that exists.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    model = planner_model(model, backend, base_url, api_key)
    if store is None and tools is None:
        store = ImageStore()
    if tools is None:
        tools = make_tools(
            vlm or model,
            store,
            ocr_engine=ocr_engine,
            max_image_tokens=max_image_tokens,
            max_tokens=max_tokens,
        )
    found = [store] + [getattr(tool, "store", None) for tool in tools]
    stores = list({id(s): s for s in found if isinstance(s, ImageStore)}.values())
    # create_agent's own recursion limit is 10,000; the middleware is the real bound.
    return create_agent(
        model,
        list(tools),
        system_prompt=system_prompt,
        middleware=[StepLimit(max_steps), ReturnBrokenCalls(), KnownIds(stores, tool_choice), CallsInOrder()],
        checkpointer=checkpointer,
    )
