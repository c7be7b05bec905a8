"""Qwen's tagged tool calls: ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`` blocks in a reply.

``parse_tool_calls`` splits a whole reply; ``ToolCallSplitter`` does the same incrementally for streams,
never letting a half-written ``<tool_call>`` marker leak out as text. The JSON is read leniently
(``lenient_json``): a missing brace or ``</tool_call>``, ``arguments`` as a JSON string.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .lenient_json import lenient_json

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


@dataclass
class ParsedCall:
    """One tool-call block: ``name`` and ``args`` when it parsed, else ``error`` and the raw text."""

    id: str
    raw: str
    name: str | None = None
    args: dict[str, Any] | None = None
    error: str | None = None

    def as_tool_call(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args, "id": self.id, "type": "tool_call"}

    def as_invalid_tool_call(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.raw, "id": self.id, "error": self.error, "type": "invalid_tool_call"}

    def as_chunk(self, index: int) -> dict[str, Any]:
        """A ``tool_call_chunk``. Valid calls carry their arguments as JSON. Broken ones carry their raw text
        as a JSON string, so that LangChain's partial-JSON repair cannot turn them into a valid-looking call:
        the merged message lists them under ``invalid_tool_calls``."""
        args = json.dumps(self.args if self.error is None else self.raw, ensure_ascii=False)
        return {"name": self.name, "args": args, "id": self.id, "index": index, "type": "tool_call_chunk"}


@dataclass
class ParsedReply:
    content: str
    calls: list[ParsedCall] = field(default_factory=list)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [c.as_tool_call() for c in self.calls if c.error is None]

    @property
    def invalid_tool_calls(self) -> list[dict[str, Any]]:
        return [c.as_invalid_tool_call() for c in self.calls if c.error is not None]


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_call(block: str) -> ParsedCall:
    """Parse the JSON inside one ``<tool_call>`` block."""
    raw = block.strip()
    call = ParsedCall(id=new_call_id(), raw=raw)
    data = lenient_json(raw)
    if not isinstance(data, dict) or not data:
        call.name = _guess_name(raw)
        call.error = (
            "The tool call is not a JSON object. Write it as <tool_call>\n"
            '{"name": "<tool name>", "arguments": {<arguments>}}\n</tool_call>.'
        )
        return call
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        call.error = "The tool call has no 'name'."
        return call
    call.name = name.strip()
    args = _decode_arguments(data.get("arguments", data.get("parameters")))
    if not isinstance(args, dict):
        call.error = "The tool call's 'arguments' must be a JSON object."
        return call
    call.args = args
    return call


def _decode_arguments(args: Any) -> Any:
    """Arguments as a dict; models sometimes write them as a JSON string, or leave them out."""
    if args is None:
        return {}
    if isinstance(args, str):
        if not args.strip():
            return {}
        decoded = lenient_json(args)
        return decoded if isinstance(decoded, dict) else args
    return args


def _guess_name(raw: str) -> str | None:
    match = re.search(r"""["']name["']\s*:\s*["']([^"']+)["']""", raw)
    return match.group(1) if match else None


def parse_tool_calls(text: str) -> ParsedReply:
    """Split a whole reply into its text and its tool calls."""
    splitter = ToolCallSplitter()
    parts = splitter.feed(text) + splitter.finish()
    content = "".join(p for p in parts if isinstance(p, str))
    calls = [p for p in parts if isinstance(p, ParsedCall)]
    return ParsedReply(content=content.strip() if calls else content, calls=calls)


class ToolCallSplitter:
    """Feed text as it streams in; get back text pieces and ``ParsedCall``s in order."""

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False

    def feed(self, text: str) -> list[str | ParsedCall]:
        self._buffer += text
        out: list[str | ParsedCall] = []
        while True:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return out
                out.append(parse_call(self._buffer[:end]))
                self._buffer = self._buffer[end + len(CLOSE) :]
                self._in_call = False
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                if start:
                    out.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_call = True
                continue
            keep = _partial_marker_length(self._buffer)
            if len(self._buffer) > keep:
                out.append(self._buffer[: len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep :]
            return out

    def finish(self) -> list[str | ParsedCall]:
        """Flush what is left; an unclosed block (the reply was cut short) is still parsed."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:
            self._in_call = False
            return [parse_call(rest)] if rest.strip() else []
        return [rest] if rest else []


def _partial_marker_length(text: str) -> int:
    """Length of the longest tail of ``text`` that could be the start of ``<tool_call>``."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
