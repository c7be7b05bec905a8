"""Qwen's tool-call format: ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`` blocks in a reply.

``parse_tool_calls`` splits a whole reply; ``ToolCallSplitter`` does the same incrementally for streams,
never letting a half-written ``<tool_call>`` marker leak out as text. The JSON is read leniently, as
small Qwen models write it: single quotes, trailing commas, a missing brace or ``</tool_call>``,
``arguments`` as a JSON string (json-repair does the repairing). ``bare_calls`` recognises calls written
as plain JSON without the tags.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


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
    data = _lenient_json(raw)
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


# Where plain JSON may begin: a line opening with { or [, or a ```json fence before one.
_JSON_LINE = re.compile(r"^[ \t]*(?:```(?:json)?[ \t]*\n[ \t]*)?[\[{]", re.M)
# What a line can be while it is still being written and may yet become the start above.
_JSON_LINE_SO_FAR = re.compile(r"[ \t]*(?:`{1,3}(?:j|js|jso|json)?[ \t]*(?:\n[ \t]*)?)?")
_FENCES = ("```json", "```")


def bare_calls(text: str, tool_names: list[str]) -> tuple[str, list[ParsedCall]]:
    """Calls a model wrote as plain JSON without their tags: the reply ends with one or more
    ``{"name": …, "arguments": …}`` objects (one after another, or in a list; fenced or not), each naming one
    of the tools. Returns the text before them and the calls, or the text unchanged and no calls."""
    for start in _line_starts(text):
        if _JSON_LINE.match(text, start):
            calls = _calls_in(text[start:], tool_names)
            if calls:
                return text[:start].rstrip(), calls
    return text, []


def bare_call_start(text: str, tool_names: list[str], start: int = 0) -> int | None:
    """For a reply still being written: the first line start from ``start`` on where calls written as plain
    JSON may begin (the rest of the reply is such calls so far, or may still become them), else None.

    A line start it passes over can never begin such calls, however the reply goes on: what comes before the
    result can be shown as answer text at once."""
    for line in _line_starts(text, start):
        rest = text[line:]
        if _JSON_LINE_SO_FAR.fullmatch(rest):
            return line
        if _JSON_LINE.match(rest) and _calls_in(rest, tool_names, partial=True) is None:
            return line
    return None


def _line_starts(text: str, start: int = 0) -> Iterator[int]:
    if start == 0 or text[start - 1 : start] == "\n":
        yield start
    position = text.find("\n", start)
    while position >= 0:
        yield position + 1
        position = text.find("\n", position + 1)


def _calls_in(tail: str, tool_names: list[str], partial: bool = False) -> list[ParsedCall] | None:
    """The calls that ``tail`` consists of: JSON values separated by blanks, commas or code fences, each a call
    of one of the tools (or a list of them); [] if it is anything else. With ``partial`` (a reply still being
    written), None while it is calls so far and may go on: an unfinished value, or only calls yet."""
    calls: list[ParsedCall] = []
    position = 0
    while True:
        position = _skip_separators(tail, position, partial)
        if position is None:
            return None
        if position >= len(tail):
            return None if partial else calls
        if tail[position] not in "{[":
            return []
        end, quote, closers = json_value_span(tail, position)
        if partial and (quote or closers):
            return None
        found = _as_calls(_json_value(tail[position:end]), tool_names)
        if not found:
            return []
        calls += found
        position = end


def _skip_separators(text: str, position: int, partial: bool) -> int | None:
    """Past the blanks, commas and code fences at ``position``; None where a fence may still be being written."""
    while position < len(text):
        if text[position] in " \t\r\n,":
            position += 1
        elif partial and _FENCES[0].startswith(text[position:]):
            return None
        else:
            fence = next((f for f in _FENCES if text.startswith(f, position)), None)
            if fence is None:
                break
            position += len(fence)
    return position


def _json_value(text: str) -> Any:
    """``text`` as JSON, repaired if written loosely (single quotes, trailing commas, a missing brace); None
    if even that fails (nested deeper than Python recurses)."""
    try:
        return json.loads(text)
    except RecursionError:
        return None
    except ValueError:  # not JSON as written (or an integer of thousands of digits): repair it
        pass
    try:
        return json_repair.loads(text)
    except (ValueError, RecursionError):
        return None


def _as_calls(value: Any, tool_names: list[str]) -> list[ParsedCall]:
    """A call (or a list of calls) of one of the tools, as ``ParsedCall``s; [] if it is anything else."""
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            return []
        call = parse_call(json.dumps(item, ensure_ascii=False))
        if call.error is not None or call.name not in tool_names:
            return []
        calls.append(call)
    return calls


def json_value_span(text: str, start: int) -> tuple[int, str, str]:
    """Scan the object or list opening at ``start``, quotes of either kind respected: ``(end, quote,
    closers)``. ``end`` is just past its closing bracket (or a bracket that does not match), else the end of
    the text, where ``quote`` is the quote still open and ``closers`` the brackets still to close, innermost
    first."""
    closers: list[str] = []
    quote, escaped = "", False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]":
            if not closers or closers.pop() != char or not closers:
                return index + 1, "", ""
    return len(text), quote, "".join(reversed(closers))


def _lenient_json(text: str) -> Any:
    """``text`` as JSON once its code fences are dropped, repaired if need be (see ``_json_value``)."""
    return _json_value(_FENCE.sub("", text))


def _decode_arguments(args: Any) -> Any:
    """Arguments as a dict; models sometimes write them as a JSON string, or leave them out."""
    if args is None:
        return {}
    if isinstance(args, str):
        if not args.strip():
            return {}
        decoded = _lenient_json(args)
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


THINK_END = "</think>"


@dataclass
class Reasoning:
    """A piece of a Thinking model's reasoning: not the answer, and never a tool call."""

    text: str


class ReplySplitter:
    """Splits a streamed reply into ``Reasoning`` pieces (for a Thinking model, whose reply opens inside
    ``<think>``, everything up to ``</think>``), then answer text and ``ParsedCall``s. A tool call written
    inside the reasoning stays reasoning: it is thought about, not made.

    With ``tool_names``, calls of those tools written as plain JSON (``bare_calls``) are calls too. Text that
    may still turn out to be such calls is held back until that is known, so a call never goes out as answer
    text; so are blanks, which go out with the text after them (the blanks around calls are not the answer).
    The pieces of a whole reply are the same however it was fed."""

    def __init__(self, thinking: bool = False, tool_names: Sequence[str] = ()) -> None:
        self.thinking = thinking
        self.reasoning = ""
        self._calls = ToolCallSplitter()
        self._answer_text = _HeldText(list(tool_names))
        self._held = ""
        self._strip_newlines = thinking  # the answer follows "</think>" after a blank line

    def feed(self, text: str) -> list[str | ParsedCall | Reasoning]:
        if not self.thinking:
            return self._answer(text)
        self._held += text
        end = self._held.find(THINK_END)
        if end < 0:
            keep = next((n for n in range(min(len(THINK_END) - 1, len(self._held)), 0, -1)
                         if THINK_END.startswith(self._held[-n:])), 0)
            piece, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
            return self._reason(piece)
        piece, rest = self._held[:end], self._held[end + len(THINK_END) :]
        self._held = ""
        self.thinking = False
        return self._reason(piece) + self._answer(rest)

    def finish(self) -> list[str | ParsedCall | Reasoning]:
        if self.thinking:  # the reply ended while still reasoning
            held, self._held = self._held, ""
            return self._reason(held)
        return self._answer_text.finish(self._calls.finish())

    def _reason(self, text: str) -> list[Reasoning]:
        self.reasoning += text
        return [Reasoning(text)] if text else []

    def _answer(self, text: str) -> list[str | ParsedCall]:
        if self._strip_newlines:
            text = text.lstrip("\n")
            self._strip_newlines = not text
        return self._answer_text.add(self._calls.feed(text)) if text else []


class _HeldText:
    """The answer's text and tagged calls on their way out (see ``ReplySplitter``)."""

    def __init__(self, tool_names: list[str]) -> None:
        self.tool_names = tool_names
        self.text = ""  # all the answer's text so far
        self.sent = 0  # how much of it has gone out
        self.checked = 0  # bare calls cannot begin before this
        self.called = False  # a tagged call came: plain JSON after it is text
        self.shown = False

    def add(self, parts: list[str | ParsedCall]) -> list[str | ParsedCall]:
        out: list[str | ParsedCall] = []
        for part in parts:
            if isinstance(part, str):
                self.text += part
                continue
            out += self._release(len(self.text))
            if not self.shown:  # only blanks before the first call: not part of the answer
                self.sent = len(self.text)
            self.called = True
            out.append(part)
        return out + self._release(self._hold_from())

    def finish(self, parts: list[str | ParsedCall]) -> list[str | ParsedCall]:
        out = self.add(parts)
        if not self.called and self.tool_names:
            before, calls = bare_calls(self.text, self.tool_names)
            if calls:
                self.called = True
                out += self._release(len(before)) + calls
                self.sent = len(self.text)
        rest = self.text[self.sent :]
        self.sent = len(self.text)
        rest = rest.rstrip() if self.called else rest
        return out + ([rest] if rest else [])

    def _hold_from(self) -> int:
        if self.called or not self.tool_names:
            return len(self.text)
        start = bare_call_start(self.text, self.tool_names, self.checked)
        self.checked = len(self.text) if start is None else start
        return self.checked

    def _release(self, end: int) -> list[str]:
        """The text up to ``end`` that has not gone out yet, but for its trailing blanks."""
        piece = self.text[self.sent : end]
        if self.called and not self.shown:  # blanks between a call and the first words are not the answer
            self.sent += len(piece) - len(piece.lstrip())
            piece = piece.lstrip()
        piece = piece.rstrip()
        if not piece:
            return []
        self.sent += len(piece)
        self.shown = True
        return [piece]
