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
    messages: Sequence[BaseMessage], *, allow_remote: bool = True, **access: Any
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Convert messages; return the template messages and the images their placeholders stand for.

    Qwen3-VL's chat template renders a system message only in first place (its text only) and the user,
    assistant and tool roles; anything else it drops without a word. So: the text of every system message
    goes into one system message at the start; an image in a system message goes into a user turn where
    it stood; other roles become user turns that name them. Nothing given is lost.
    """
    converted: list[dict[str, Any]] = []
    images: list[Any] = []
    system_text: list[str] = []
    for index, message in enumerate(messages):
        role = _role(message)
        if isinstance(message, AIMessage):
            converted.append(_assistant(message))
            continue
        content = _content(message, images, {"allow_remote": allow_remote, **access}, where=f"message {index + 1} ({role})")
        if role == "system":
            system_text += [part["text"] for part in content if part["type"] == "text"]
            pictures = [part for part in content if part["type"] == "image"]
            if pictures:
                converted.append({"role": "user", "content": [{"type": "text", "text": "(Images given with the instructions:)"}, *pictures]})
            continue
        if role == "assistant":  # a ChatMessage in the assistant's role
            converted.append({"role": "assistant", "content": "".join(p["text"] for p in content if p["type"] == "text")})
            continue
        if role not in ("user", "tool"):
            content = [{"type": "text", "text": f"[{role}]\n"}, *content]
            role = "user"
        converted.append({"role": role, "content": content})
    if system_text or not converted:  # messages whose every part was empty still make a (blank) prompt
        converted.insert(0, {"role": "system", "content": [{"type": "text", "text": "\n\n".join(system_text)}]})
    return converted, images


_ROLE_NAMES = {"human": "user", "ai": "assistant", "developer": "system"}


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
        return _ROLE_NAMES.get(message.role, message.role)
    raise ValueError(f"ChatQwenVL cannot send a {type(message).__name__}.")


def _content(message: BaseMessage, images: list[Any], access: dict[str, Any], where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in message.content_blocks:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            images.append(_image(block, access, where))
            parts.append(dict(IMAGE_PLACEHOLDER))
        else:
            raise ImageInputError(f"{where} has a '{kind}' content block; ChatQwenVL accepts text and images.")
    return parts


def _image(block: dict[str, Any], access: dict[str, Any], where: str):
    try:
        if block.get("base64"):
            return decode_base64_image(block["base64"])
        if block.get("url"):
            return load_image(block["url"], **access)
        if block.get("path"):
            return load_image(str(block["path"]), **access)
        if block.get("image") is not None:  # the Qwen processor's own form: a PIL image, path or bytes
            return load_image(block["image"], **access)
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
