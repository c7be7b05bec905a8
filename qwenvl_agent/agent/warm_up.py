"""What an assistant prepares before its questions: the planner's prompt prefix, the tools' fixed instructions on
the tools' model, and the offline OCR engine (see ``DocumentAssistant.warm``)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import SystemMessage

from qwenvl_agent.tools import ImageStore, make_tools, prepare_ocr
from qwenvl_agent.vlm.registry import loaded_runtimes


def warm_up(assistant: Any, load_planner: bool, load_tools_model: bool) -> Any:
    """Prepare what ``assistant`` runs with; a model not loaded yet is warmed (so loaded) only if asked. The
    planner's ``WarmPrefix``, or None for a planner that keeps no prefix or was not warmed."""
    prepare_ocr(assistant.ocr_engine)
    model, vlm = assistant.model, assistant.vlm
    tools = make_tools(vlm, ImageStore(index_pages=False), ocr_engine=assistant.ocr_engine, **assistant.tool_budgets)
    warm_tool = getattr(vlm, "warm_prefix", None)
    if warm_tool is not None and (is_loaded(vlm) or load_tools_model or (vlm is model and load_planner)):
        # The tools' fixed instructions first: the planner's prefix is the one left held.
        for prompt in dict.fromkeys(tool.system_prompt for tool in tools if tool.system_prompt):
            warm_tool([SystemMessage(content=prompt)])
    warm = getattr(model, "warm_prefix", None)
    if warm is None or not (load_planner or is_loaded(model)):
        return None
    return warm([SystemMessage(content=assistant.system_prompt)], tools)


def is_loaded(model: Any) -> bool:
    """Whether ``model`` is a local model whose weights are already loaded (warming it would not load them)."""
    name = getattr(model, "model", None)
    return hasattr(model, "warm_prefix") and any(runtime.model_id == str(name) for runtime in loaded_runtimes())
