"""What one call's reply may be, as a grammar for constrained decoding (``constrain.py``): calls of the bound
tools on ids that exist, or one JSON value of a requested schema.

``call_grammar`` reads a call's tools, ``tool_choice``, ``allowed_ids`` and ``response_format`` into a
``Grammar`` (or None: unconstrained), for ``GenerationSettings.grammar``. The engine takes a forced call's
start (``Prompt.assistant_prefix``) as the reply's first text, so the grammar is the whole reply's.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .constrain import ConstraintError, Grammar, JsonSchemaGrammar, ToolCallGrammar

# Grammars are compiled once per object; the same tools with the same ids (a planner's steps between two
# new images) reuse the object, so they reuse its compiled matcher.
_CACHE_SIZE = 32
_cache: OrderedDict[str, Grammar] = OrderedDict()
_cache_lock = threading.Lock()

_FORMAT_TYPES = ("text", "json_object", "json_schema")


def call_grammar(
    tools: list[dict[str, Any]] | None,
    choice: str | None,
    allowed_ids: Mapping[str, Sequence[str]] | None = None,
    response_format: Any = None,
) -> Grammar | None:
    """The grammar of one call's reply. ``tools`` in OpenAI's format with ``choice`` normalised (see
    ``tool_choice``); ``allowed_ids`` maps an argument name to the values it may take (``{"image_id": [...]}``);
    ``response_format`` as OpenAI's API takes it, or the schema itself (see ``json_schema_of``).

    With ``tool_choice="auto"`` and no tool callable (each needs an id and there is none), the reply is left
    free: the model answers in words. A forced choice in that case is a ``ConstraintError`` saying why."""
    schema = json_schema_of(response_format)
    if schema is not None:
        if tools:
            raise ValueError("response_format and tools cannot be used in one call: the reply is either calls or JSON.")
        return _cached(("json", schema), lambda: JsonSchemaGrammar(schema))
    if not tools:
        return None
    ids = {field: [str(i) for i in values] for field, values in (allowed_ids or {}).items()}
    try:
        return _cached(("tools", tools, choice, ids), lambda: ToolCallGrammar.from_tools(tools, ids, tool_choice=choice))
    except ConstraintError:
        if choice in (None, "auto"):
            return None
        raise


def json_schema_of(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for: ``{"type": "json_schema", "json_schema": {"schema": …}}``,
    ``{"type": "json_object"}`` (any object), ``{"type": "text"}`` or None (no schema), or the schema itself (a
    pydantic model, a TypedDict or a JSON schema). ``ValueError`` naming what is wrong otherwise."""
    if response_format is None:
        return None
    if isinstance(response_format, Mapping) and response_format.get("type") in _FORMAT_TYPES:
        kind = response_format["type"]
        if kind == "text":
            return None
        if kind == "json_object":
            return {"type": "object"}
        described = response_format.get("json_schema")
        schema = described.get("schema") if isinstance(described, Mapping) else None
        if not isinstance(schema, Mapping):
            raise ValueError("response_format json_schema needs the schema: {'type': 'json_schema', "
                             "'json_schema': {'name': ..., 'schema': {...}}}.")
        return dict(schema)
    if isinstance(response_format, Mapping):
        return dict(response_format)
    try:
        return JsonSchemaGrammar(response_format).schema
    except ConstraintError as exc:
        raise ValueError(f"response_format must be a JSON schema, a pydantic model or a TypedDict: {exc}") from exc


def check_json_schema(schema: Mapping[str, Any]) -> None:
    """``ConstraintError`` naming the problem if no grammar can be made of ``schema`` (a feature the matcher
    does not support, bounds no value meets): checked without a tokenizer, before any model runs."""
    import llguidance

    try:
        problem = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_json_schema(dict(schema)))
    except (ValueError, TypeError) as exc:
        problem = str(exc)
    if problem:
        raise ConstraintError(f"The JSON schema cannot be used: {problem.splitlines()[0]}")


def _cached(key: Any, make: Callable[[], Grammar]) -> Grammar:
    text = json.dumps(key, sort_keys=True, default=str)
    with _cache_lock:
        if text in _cache:
            _cache.move_to_end(text)
            return _cache[text]
    grammar = make()
    with _cache_lock:
        _cache[text] = grammar
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return grammar
