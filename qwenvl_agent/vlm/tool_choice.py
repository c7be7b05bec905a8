"""Which tools a call offers and whether it must call one: ``tool_choice`` in every form LangChain and
OpenAI use, read in one place, and the start of the reply that enforces a forced choice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.utils.function_calling import convert_to_openai_tool

from .tool_calls import OPEN

_FORCED = ("any", "required")


def offered_tools(tools: Sequence[Any] | None, choice: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The tools one call offers, in OpenAI's format, and its ``tool_choice`` normalised: the one way in for
    tools and a choice given to ``bind_tools``, to ``bind`` or per call. "none" offers no tools."""
    formatted = [convert_to_openai_tool(tool) for tool in tools or []]
    choice = normalise_tool_choice(choice, [t["function"]["name"] for t in formatted])
    return (formatted or None) if choice != "none" else None, choice


def normalise_tool_choice(choice: Any, names: list[str]) -> str | None:
    """None, "auto", "none", "any" or a tool name, from each form LangChain and OpenAI use: None/"auto",
    "none"/False, "any"/"required"/True, a tool name, ``{"type": "function", "function": {"name": …}}``,
    ``{"type": "tool", "name": …}`` or ``{"type": "any"}``. ``ValueError`` naming the value for anything else."""
    given = choice
    if isinstance(choice, dict):
        function = choice.get("function")
        choice = (function.get("name") if isinstance(function, dict) else None) or choice.get("name") or choice.get("type")
    if choice is None or choice == "auto":
        return choice
    if choice is True or choice in _FORCED:
        return "any"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(f"tool_choice {given!r} is not 'auto', 'none', 'any', 'required' or one of the tools {names}.")


def forced_call_prefix(choice: str | None, tools: list[dict[str, Any]]) -> str:
    """The start of the assistant turn that makes the model call a tool (or the named tool)."""
    if choice is None or choice in ("auto", "none"):
        return ""
    if choice == "any" and len(tools) == 1:
        choice = tools[0]["function"]["name"]
    if choice == "any":
        return f'{OPEN}\n{{"name": "'
    return f'{OPEN}\n{{"name": "{choice}", "arguments": '
