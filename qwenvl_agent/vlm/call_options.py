"""One call's prompt and generation settings: a chat model's fields, overridden by the call's own keyword
arguments (``llm.invoke(messages, max_tokens=64)``), with the tools it offers, a forced call's prefix and the
grammar that constrains the reply (``reply_grammar``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage

from .generation import GenerationSettings, Prompt
from .messages import to_qwen_messages
from .reply_grammar import call_grammar
from .tool_calls import CLOSE
from .tool_choice import forced_call_prefix, offered_tools

_SAMPLING = ("temperature", "top_p", "top_k", "repetition_penalty")


def call_request(
    fields: Any,
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict[str, Any],
    generation_config: Callable[[], Any],
) -> tuple[Prompt, GenerationSettings]:
    """The prompt and settings of one call. ``fields``: the chat model whose fields are the defaults;
    ``generation_config``: the loaded checkpoint's own generation settings (read for ``sampling="model"``)."""

    def option(name: str) -> Any:
        return kwargs.get(name, getattr(fields, name))

    timeout = option("timeout")
    deadline = time.monotonic() + timeout if timeout else None  # the clock starts with the call
    qwen_messages, images = to_qwen_messages(
        messages,
        allow_remote=option("allow_remote_images"),
        allow_private=option("allow_private_urls"),
        local_files=option("allow_local_files"),
    )
    tools, choice = offered_tools(kwargs.get("tools"), kwargs.get("tool_choice"))
    prefix = forced_call_prefix(choice, tools) if tools else ""
    grammar = None
    if option("constrain"):
        grammar = call_grammar(tools, choice, kwargs.get("allowed_ids"), kwargs.get("response_format"))
    elif tools and kwargs.get("response_format") is not None:
        raise ValueError("response_format and tools cannot be used in one call: the reply is either calls or JSON.")
    stops = list(stop if stop is not None else fields.stop or [])
    if prefix and grammar is None:
        stops.append(CLOSE)  # one forced call, then stop (a grammar lets a turn hold several and ends it itself)
    settings = GenerationSettings(
        max_new_tokens=option("max_tokens"),
        stop=tuple(stops),
        deadline=deadline,
        max_image_tokens=option("max_image_tokens"),
        min_image_tokens=option("min_image_tokens"),
        cache_images=option("cache_images"),
        reuse_prefix=option("reuse_prefix"),
        seed=option("seed"),
        repetition_guard=option("repetition_guard"),
        grammar=grammar,
        prompt_lookup_num_tokens=_draft_count(option("prompt_lookup_num_tokens")),
        draft_text=_draft_text(kwargs.get("draft_text")),
        **sampling_options({name: option(name) for name in _SAMPLING}, option("sampling"), generation_config),
    )
    return Prompt(messages=qwen_messages, images=images, tools=tools, assistant_prefix=prefix), settings


def _draft_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"prompt_lookup_num_tokens must be a whole number of draft tokens, 0 or more; got {value!r}.")
    return value


def _draft_text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"draft_text must be a string (text the reply is likely to repeat) or None; got {type(value).__name__}.")
    return value or None


def sampling_options(given: dict[str, Any], sampling: str, generation_config: Callable[[], Any]) -> dict[str, Any]:
    """Temperature, top_p, top_k and repetition penalty: the given ones, else the checkpoint's own for
    ``sampling="model"``, else greedy."""
    if sampling not in ("greedy", "model"):
        raise ValueError(f"sampling must be 'greedy' or 'model'; got {sampling!r}.")
    if sampling == "greedy":
        return given
    config = generation_config()
    own = {name: getattr(config, name, None) for name in given}
    if not getattr(config, "do_sample", False):
        own["temperature"] = None
    return {name: value if value is not None else own[name] for name, value in given.items()}
