"""A scripted planner for agent tests: a chat model that replays preset replies (tool calls, then an answer).

The tiny checkpoint's own replies are random, so the planner is scripted; the tools it calls still run
the real vision path on the tiny checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


class ScriptedPlanner(BaseChatModel):
    """Each reply is a list of tool calls (dicts from ``call``) or a final answer string.

    ``loop=True`` repeats the script forever (a planner that never stops). ``seen`` records the messages
    each call received, so tests can check what the planner was shown.
    """

    script: list[Any]
    loop: bool = False
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[str] = Field(default_factory=list)
    _counter: Any = None

    @property
    def _llm_type(self) -> str:
        return "scripted-planner"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        self.bound_tools = [getattr(t, "name", None) or t["function"]["name"] for t in tools]
        return self

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        if self._counter is None:
            self._counter = itertools.count()
        index = next(self._counter)
        reply = self.script[index % len(self.script)] if self.loop else self.script[min(index, len(self.script) - 1)]
        if isinstance(reply, str):
            message = AIMessage(content=reply)
        else:
            calls = [{**c, "id": f"call-{index}-{i}", "type": "tool_call"} for i, c in enumerate(reply)]
            message = AIMessage(content="", tool_calls=calls)
        return ChatResult(generations=[ChatGeneration(message=message)])
