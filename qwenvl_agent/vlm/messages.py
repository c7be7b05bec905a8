"""LangChain messages → Qwen3-VL chat-template messages plus the decoded images, in order.

``message.content_blocks`` normalises every LangChain image form (standard ``image`` blocks with
``url``/``base64``, OpenAI ``image_url`` blocks, v0 ``source_type`` blocks), so there is one path here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from .errors import ImageInputError
from .images import decode_base64_image, load_image

IMAGE_PLACEHOLDER = {"type": "image"}


def to_qwen_messages(
    messages: Sequence[BaseMessage], *, allow_remote: bool = True
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Convert messages; return the template messages and the images their placeholders stand for."""
    converted: list[dict[str, Any]] = []
    images: list[Any] = []
    for index, message in enumerate(messages):
        role = _role(message)
        if isinstance(message, AIMessage):
            converted.append(_assistant(message))
            continue
        content = _content(message, images, allow_remote, where=f"message {index + 1} ({role})")
        converted.append({"role": role, "content": content})
    return converted, images


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage):
        return {"human": "user", "ai": "assistant"}.get(message.role, message.role)
    raise ValueError(f"ChatQwenVL cannot send a {type(message).__name__}.")


def _content(message: BaseMessage, images: list[Any], allow_remote: bool, where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in message.content_blocks:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            images.append(_image(block, allow_remote, where))
            parts.append(dict(IMAGE_PLACEHOLDER))
        else:
            raise ImageInputError(f"{where} has a '{kind}' content block; ChatQwenVL accepts text and images.")
    return parts


def _image(block: dict[str, Any], allow_remote: bool, where: str):
    try:
        if block.get("base64"):
            return decode_base64_image(block["base64"])
        if block.get("url"):
            return load_image(block["url"], allow_remote=allow_remote)
        if block.get("path"):
            return load_image(str(block["path"]))
        if block.get("image") is not None:  # the Qwen processor's own form: a PIL image, path or bytes
            return load_image(block["image"], allow_remote=allow_remote)
    except ImageInputError as exc:
        raise ImageInputError(f"{where}: {exc}") from exc
    raise ImageInputError(f"{where} has an image block without 'url' or 'base64' data (file ids are not supported).")


def _assistant(message: AIMessage) -> dict[str, Any]:
    text = "".join(b["text"] for b in message.content_blocks if b.get("type") == "text")
    calls = [_template_call(c["name"], c["args"]) for c in message.tool_calls]
    calls += [_template_call(c.get("name") or "unknown", c.get("args") or "{}") for c in message.invalid_tool_calls]
    result: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        result["tool_calls"] = calls
    return result


def _template_call(name: str, args: Any) -> dict[str, Any]:
    arguments = args if isinstance(args, (dict, str)) else json.dumps(args)
    return {"type": "function", "function": {"name": name, "arguments": arguments}}
