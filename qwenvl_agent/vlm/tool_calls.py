"""Qwen's tool-call format: ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`` blocks in a reply.

``parse_tool_calls`` splits a whole reply; ``ToolCallSplitter`` does the same incrementally for streams,
never letting a half-written ``<tool_call>`` marker leak out as text. The JSON is read leniently, as
small Qwen models write it: single quotes, trailing commas, a missing brace or ``</tool_call>``,
``arguments`` as a JSON string (json-repair does the repairing). ``bare_calls`` recognises calls written
as plain JSON without the tags.

The parts live in their own modules: ``call_blocks`` (the tagged blocks, whole or streamed), ``bare_calls``
(calls without tags), ``lenient_json`` (the repairs) and ``reply_splitter`` (reasoning, text and calls of a
streamed reply). Every name stays importable from here.
"""

from __future__ import annotations

from .bare_calls import bare_call_start, bare_calls
from .call_blocks import (
    CLOSE,
    OPEN,
    ParsedCall,
    ParsedReply,
    ToolCallSplitter,
    new_call_id,
    parse_call,
    parse_tool_calls,
)
from .lenient_json import json_value, json_value_span, lenient_json
from .reply_splitter import THINK_END, Reasoning, ReplySplitter

__all__ = [
    "CLOSE", "OPEN", "THINK_END", "ParsedCall", "ParsedReply", "Reasoning", "ReplySplitter", "ToolCallSplitter",
    "bare_call_start", "bare_calls", "json_value", "json_value_span", "lenient_json", "new_call_id", "parse_call",
    "parse_tool_calls",
]
