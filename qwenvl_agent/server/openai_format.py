"""The OpenAI chat-completions format, both ways: a request into LangChain messages and generation
options, a LangChain reply (whole or streamed) into a completion or its chunks. Pure functions; every
problem with a request is a ``RequestError`` that becomes a 400 in the OpenAI error shape."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image

from qwenvl_agent.vlm.constrain import ConstraintError
from qwenvl_agent.vlm.reply_grammar import check_json_schema, json_schema_of
from qwenvl_agent.vlm.tool_choice import normalise_tool_choice


class RequestError(ValueError):
    """A request the server will not run; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.param = param
        self.status = status
        self.kind = kind
        self.code = code


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def to_messages(raw: Any, load_image: Callable[[str, str], Image.Image], max_images: int) -> list[BaseMessage]:
    """OpenAI messages as LangChain messages; ``image_url`` parts are decoded by ``load_image(url, where)``
    (which enforces the server's rules) and handed on as decoded images."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list.", "messages")
    messages: list[BaseMessage] = []
    images = 0
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where} must be an object with a role and content.", where)
        role = item.get("role")
        if role in ("system", "developer"):
            messages.append(SystemMessage(_text(item.get("content"), where)))
        elif role == "user":
            parts, count = _parts(item.get("content"), where, load_image, max_images - images)
            images += count
            messages.append(HumanMessage(content=parts))
        elif role == "assistant":
            messages.append(AIMessage(content=_text(item.get("content") or "", where), tool_calls=_calls(item.get("tool_calls"), where)))
        elif role == "tool":
            if not item.get("tool_call_id"):
                raise RequestError(f"{where} is a tool message without tool_call_id.", f"{where}.tool_call_id")
            parts, count = _parts(item.get("content"), where, load_image, max_images - images)
            images += count
            messages.append(ToolMessage(content=parts, tool_call_id=str(item["tool_call_id"])))
        else:
            raise RequestError(f"{where} has the role {role!r}; use system, user, assistant or tool.", f"{where}.role")
    return messages


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(f"{where} may only hold text here.", where)
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise RequestError(f"{where}.content must be a string or a list of parts.", f"{where}.content")


def _parts(content: Any, where: str, load_image, images_left: int) -> tuple[list[dict[str, Any]], int]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}], 0
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of parts.", f"{where}.content")
    parts, images = [], 0
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise RequestError(f"{where}.content[{number}] has no image_url.url.", f"{where}.content[{number}]")
            images += 1
            if images > images_left:
                raise RequestError("Too many images in one request.", "messages")
            parts.append({"type": "image", "image": load_image(url, f"{where}.content[{number}]")})
        else:
            raise RequestError(
                f"{where}.content[{number}] has the type {kind!r}; this server takes 'text' and 'image_url' parts.",
                f"{where}.content[{number}].type",
            )
    return parts, images


def _calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is not None and not isinstance(raw, list):
        raise RequestError(f"{where}.tool_calls must be a list.", f"{where}.tool_calls")
    calls = []
    for call in raw or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RequestError(f"{where}.tool_calls needs a function with a name in each call.", f"{where}.tool_calls")
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise RequestError(f"{where}.tool_calls has arguments that are not a JSON object.", f"{where}.tool_calls")
        calls.append({"name": function["name"], "args": args, "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:12]}")})
    return calls


def generation_options(body: dict[str, Any], max_tokens_cap: int) -> dict[str, Any]:
    """The per-call keyword arguments for ChatQwenVL from a request's sampling fields and its
    ``response_format`` (a JSON schema or any JSON object: the reply is constrained to it)."""
    options: dict[str, Any] = {}
    schema = response_schema(body)
    if schema is not None:
        options["response_format"] = schema
    requested = body.get("max_completion_tokens", body.get("max_tokens"))
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise RequestError("max_tokens must be a positive integer.", "max_tokens")
        if requested > max_tokens_cap:
            raise RequestError(f"max_tokens may be at most {max_tokens_cap} on this server.", "max_tokens")
        options["max_tokens"] = requested
    else:
        options["max_tokens"] = min(512, max_tokens_cap)
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise RequestError(f"{name} must be a number from {low:g} to {high:g}.", name)
            options[name] = float(value)
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise RequestError("seed must be an integer.", "seed")
        options["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            raise RequestError("stop must be a string or a list of at most 4 strings.", "stop")
        options["stop"] = stops
    return options


def tools_and_choice(body: dict[str, Any]) -> tuple[list[dict] | None, Any]:
    """The request's tools and tool_choice (none with a JSON ``response_format``: the reply is JSON or calls)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools and response_schema(body) is not None:
        raise RequestError("response_format json_schema or json_object cannot be combined with tools in one request: "
                           "the reply is either JSON or tool calls.", "response_format")
    if tools is not None and (not isinstance(tools, list) or not all(_is_function(t) for t in tools)):
        raise RequestError(
            "tools must be a list of {'type': 'function', 'function': {'name': ..., 'parameters': {...}}} objects.",
            "tools",
        )
    try:  # the chat model's own reading of tool_choice, so the server accepts exactly what bind_tools does
        choice = normalise_tool_choice(choice, [t["function"]["name"] for t in tools or []])
    except ValueError as exc:
        raise RequestError(str(exc), "tool_choice") from exc
    return tools or None, choice


def response_format_of(body: dict[str, Any]) -> dict[str, Any]:
    response_format = body.get("response_format")
    if response_format is None:
        return {}
    if not isinstance(response_format, dict) or response_format.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError(
            "response_format must be an object whose type is 'text', 'json_object' or 'json_schema'.", "response_format"
        )
    return response_format


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the reply is constrained to: ``json_schema``'s schema, ``{"type": "object"}`` for
    ``json_object``, None for ``text`` or no ``response_format``. A schema no grammar can be made of is refused."""
    try:
        schema = json_schema_of(response_format_of(body) or None)
        if schema is not None:
            check_json_schema(schema)
    except (ValueError, ConstraintError) as exc:
        raise RequestError(str(exc), "response_format") from exc
    return schema


def _is_function(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return (
        isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and bool(function["name"])
        and isinstance(function.get("parameters", {}), dict)
    )


def completion(message: AIMessage, model: str, structured: bool) -> dict[str, Any]:
    """A whole reply as a ``chat.completion``. ``structured``: a reply to a json_schema ``response_format``, whose
    content is the JSON."""
    finish = message.response_metadata.get("finish_reason", "stop")
    body: dict[str, Any] = {"role": "assistant", "content": message.text or None}
    if structured:
        body["content"] = json.dumps(message.tool_calls[0]["args"], ensure_ascii=False) if message.tool_calls else message.text
        finish = "stop" if finish == "tool_calls" else finish
    elif message.tool_calls:
        body["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)}}
            for c in message.tool_calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": body, "finish_reason": _openai_reason(finish)}],
        "usage": usage(message.usage_metadata),
    }


def usage(metadata: dict | None) -> dict[str, int]:
    metadata = metadata or {}
    return {
        "prompt_tokens": metadata.get("input_tokens", 0),
        "completion_tokens": metadata.get("output_tokens", 0),
        "total_tokens": metadata.get("total_tokens", 0),
    }


def _openai_reason(reason: str) -> str:
    return {"timeout": "length", "repetition": "length", "cancelled": "stop"}.get(reason, reason)


class ChunkWriter:
    """Streamed chunks (``chat.completion.chunk``) of one reply."""

    def __init__(self, model: str, structured: bool):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.structured = structured

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices, **extra}

    def deltas(self, piece: AIMessageChunk) -> list[dict[str, Any]]:
        deltas = []
        if piece.text:
            deltas.append({"content": piece.text})
        for call in piece.tool_call_chunks:
            if self.structured:
                deltas.append({"content": _arguments_text(call.get("args"))})
                continue
            deltas.append({"tool_calls": [{
                "index": call.get("index") or 0,
                "id": call.get("id"),
                "type": "function",
                "function": {"name": call.get("name"), "arguments": call.get("args") or ""},
            }]})
        return deltas

    def finish_reason(self, piece: AIMessageChunk) -> str:
        reason = _openai_reason(piece.response_metadata.get("finish_reason", "stop"))
        return "stop" if self.structured and reason == "tool_calls" else reason


def _arguments_text(args: Any) -> str:
    if isinstance(args, str):
        try:
            return json.dumps(json.loads(args), ensure_ascii=False)
        except ValueError:
            return args
    return json.dumps(args or {}, ensure_ascii=False)
