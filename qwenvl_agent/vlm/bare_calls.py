"""Tool calls written as plain JSON, without their ``<tool_call>`` tags: ``{"name": …, "arguments": …}``
objects at the end of a reply (one after another, or in a list; fenced or not), each naming a tool offered.
``bare_calls`` reads them from a whole reply; ``bare_call_start`` says, while a reply is still being written,
where such calls may begin."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .call_blocks import ParsedCall, parse_call
from .lenient_json import json_value, json_value_span

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
        found = _as_calls(json_value(tail[position:end]), tool_names)
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
