"""Grammar-constrained decoding, engine-independent: what both engines' decode loops call at each step.

A grammar says what a reply may be: ``ToolCallGrammar`` (Qwen's ``<tool_call>`` blocks, each a call of
one of the bound tools with arguments that follow its JSON schema, ids limited to the ones that exist) or
``JsonSchemaGrammar`` (the whole reply is one JSON value of a schema). ``grammar.constraint(tokenizer)``
starts one generation's ``Constraint``; the decode loop then, at each step:

    constraint.close_within(n_tokens_left)     # the budget, so the reply never ends truncated
    forced = constraint.forced_tokens()          # jump-forward: the only continuation, fed in one pass
    if forced: feed them, constraint.accept(forced)
    else:      constraint.apply(logits); sample; constraint.accept(token)
    stop when constraint.done (a JSON value ends the reply by itself: no end token is needed)

Matching runs on llguidance (chosen by measurement, docs/CONSTRAINED_DECODING.md): a Lark grammar with the
JSON schemas embedded, token masks as bitmasks, forced tokens computed by the library. The grammars are
here; one generation's ``Constraint`` is in ``constraint.py``, the tokenizer and closing paths in
``grammar_match.py`` (all importable from here).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .constraint import CLOSING_WINDOW, Constraint, ConstraintLogitsProcessor
from .grammar_match import (
    END_TOKENS,
    THINK_END,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ConstraintError,
    _closing_path,
    _compile,
    _environment,
    _Environment,
    _lark_string,
    _Tokens,
)

__all__ = [
    "CLOSING_WINDOW", "END_TOKENS", "THINK_END", "TOOL_CALL_CLOSE", "TOOL_CALL_OPEN", "Constraint", "ConstraintError",
    "ConstraintLogitsProcessor", "Grammar", "JsonSchemaGrammar", "ToolCallGrammar",
]

# json.dumps' own separators, which Qwen's chat template writes arguments with: one way to write a value,
# so more of a call is forced (and jumped over) and the model sees the format it was trained on.
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# ---------------------------------------------------------------------------------------------- grammars


class Grammar:
    """What a constrained reply may be. Subclasses give the Lark rules; ``constraint`` starts a generation."""

    #: The constraint starts when the model opens a call (``<tool_call>``) rather than at the first token.
    triggered: bool = False

    def rules(self, tokens: _Tokens) -> str:
        """Lark rules defining ``body``: what follows the point where the constraint starts."""
        raise NotImplementedError

    def lark(self, tokens: _Tokens, *, after_think: bool = False) -> str:
        """The whole grammar: ``body``, after the blank line a Thinking model writes after ``</think>``."""
        prefix = '"\\n\\n" ' if after_think else ""
        return f"start: {prefix}body\n{self.rules(tokens)}"

    def constraint(
        self,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        end_token_ids: Sequence[int] | None = None,
        thinking: bool = False,
    ) -> Constraint:
        """A new generation under this grammar. ``tokenizer``: the model's Hugging Face (fast) tokenizer;
        ``vocab_size``: the width of the model's logits (Qwen3-VL's 151,936 is more than the tokenizer's
        151,669 tokens); ``end_token_ids``: the tokens that end a reply (default: ``<|im_end|>`` and
        ``<|endoftext|>``); ``thinking``: the reply opens inside ``<think>`` and is constrained only after
        ``</think>``."""
        env = _environment(tokenizer, vocab_size, end_token_ids)
        return Constraint(self, env, thinking=thinking)

    def _compiled(self, env: _Environment, after_think: bool) -> Any:
        """A fresh matcher at the grammar's start; compiled once per tokenizer, copied per generation."""
        return self._cached(env, after_think)[0].deep_copy()

    def _cost(self, env: _Environment, after_think: bool) -> int:
        """Tokens from the grammar's start to a finished reply, at the least."""
        return self._cached(env, after_think)[1]

    def _cached(self, env: _Environment, after_think: bool) -> tuple[Any, int]:
        cache = self.__dict__.setdefault("_compiled_for", {})
        key = (id(env), after_think)
        with env.lock:
            if key not in cache:
                matcher = _compile(env, self.lark(env.tokens, after_think=after_think))
                path = _closing_path(matcher, env, (False, False))
                if path is None:
                    raise ConstraintError("The schema admits no complete value (an empty enum, or bounds no value meets).")
                cache[key] = (matcher, len(path), env)  # env held: its id stays its own
            return cache[key][:2]


class ToolCallGrammar(Grammar):
    """Qwen's tool calls: ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>``, one or several in
    a turn, each naming one of the tools with arguments that validate against its schema.

    With ``tool_choice="auto"`` the model may answer in words; once it opens a call, the call (and any
    after it, until the reply ends) follows the grammar. ``"any"`` (or ``"required"``) makes the reply
    calls from its first token on, a tool's name makes it calls of that tool."""

    def __init__(self, tools: Sequence[Mapping[str, Any]], *, forced: bool = False) -> None:
        if not tools:
            raise ConstraintError("A tool-call grammar needs at least one tool.")
        self.tools = [dict(t) for t in tools]  # {"name": …, "parameters": <JSON schema>}
        self.triggered = not forced

    @classmethod
    def from_tools(
        cls,
        tools: Sequence[Any],
        ids_by_field: Mapping[str, Sequence[str]] | None = None,
        *,
        tool_choice: str | None = "auto",
    ) -> ToolCallGrammar:
        """The grammar of calls of ``tools`` (LangChain tools, pydantic models, functions or OpenAI tool
        dicts: whatever ``bind_tools`` takes). ``ids_by_field`` maps an argument name to the values it may
        take, for example ``{"image_id": store.ids(), "page_id": […]}``: a string argument of that name
        becomes an enum of them. A tool whose required id argument has no value to take is left out."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        functions = [convert_to_openai_tool(t)["function"] for t in tools]
        names = [f["name"] for f in functions]
        if tool_choice in (None, "auto", "any", "required"):
            chosen = names
        elif tool_choice == "none":
            raise ConstraintError('tool_choice "none" calls no tool: there is nothing to constrain.')
        elif tool_choice in names:
            chosen = [tool_choice]
        else:
            raise ConstraintError(f"tool_choice {tool_choice!r} is not 'auto', 'any', 'required' or one of the tools {names}.")
        kept, dropped = [], []
        for function in functions:
            if function["name"] not in chosen:
                continue
            schema = function.get("parameters") or {"type": "object", "properties": {}}
            schema = _restrict_ids(schema, ids_by_field or {})
            if schema is None:
                dropped.append(function["name"])
            else:
                kept.append({"name": function["name"], "parameters": schema})
        if not kept:
            empty = ", ".join(f for f, ids in (ids_by_field or {}).items() if not ids)
            raise ConstraintError(
                f"No tool can be called: {', '.join(dropped)} {'needs' if len(dropped) == 1 else 'each need'} an id "
                f"({empty}) and there is none. Add an image or a document first."
            )
        return cls(kept, forced=tool_choice not in (None, "auto"))

    def rules(self, tokens: _Tokens) -> str:
        open_, close = tokens.literal(TOOL_CALL_OPEN), tokens.literal(TOOL_CALL_CLOSE)
        start = "" if self.triggered else f"{open_} "
        lines = [
            f'body: {start}call ("\\n" {open_} call)*',
            f'call: "\\n{{\\"name\\": \\"" ({" | ".join(f"tool{i}" for i in range(len(self.tools)))}) "}}\\n" {close}',
        ]
        for i, tool in enumerate(self.tools):
            name = json.dumps(tool["name"])[1:-1]
            lines.append(f'tool{i}: {_lark_string(name + chr(34) + ", " + chr(34) + "arguments" + chr(34) + ": ")} args{i}')
            lines.append(f"args{i}: %json {_json_for_lark(tool['parameters'])}")
        return "\n".join(lines)


class JsonSchemaGrammar(Grammar):
    """The whole reply is one JSON value of ``schema``: a pydantic model, a TypedDict or a JSON schema."""

    def __init__(self, schema: Any) -> None:
        self.schema = _json_schema(schema)

    def rules(self, tokens: _Tokens) -> str:
        return f"body: %json {_json_for_lark(self.schema)}"


def _json_schema(schema: Any) -> dict[str, Any]:
    if isinstance(schema, Mapping):
        return dict(schema)
    from pydantic import BaseModel, TypeAdapter

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    try:
        return TypeAdapter(schema).json_schema()
    except Exception as exc:  # pydantic's errors for types it cannot describe vary by type
        raise ConstraintError(f"{schema!r} is not a pydantic model, TypedDict or JSON schema: {exc}") from exc


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on each object that does not say: a call's arguments
    are the declared ones (a small model gains nothing from inventing more)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) if k not in ("enum", "const", "default", "examples") else v for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _json_for_lark(schema: Mapping[str, Any]) -> str:
    return json.dumps({**_strict(dict(schema)), "x-guidance": _JSON_STYLE}, ensure_ascii=False)


def _restrict_ids(schema: Mapping[str, Any], ids_by_field: Mapping[str, Sequence[str]]) -> dict[str, Any] | None:
    """The arguments' schema with each id argument an enum of its ids; None if a required one has none."""
    schema = copy.deepcopy(dict(schema))
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    for field, ids in ids_by_field.items():
        if field not in properties:
            continue
        restricted = _restrict_one(properties[field], [str(i) for i in ids])
        if restricted is not None:
            properties[field] = restricted
        elif field in required:
            return None
        else:
            del properties[field]
    return schema


def _restrict_one(prop: dict[str, Any], ids: list[str]) -> dict[str, Any] | None:
    """A string property as an enum of ``ids`` (null stays allowed where it was); None if nothing is left."""
    keep = {k: v for k, v in prop.items() if k in ("description", "title", "default")}
    branches = prop.get("anyOf") or [prop]
    nullable = any(b.get("type") == "null" for b in branches)
    takes_strings = any(b.get("type") in ("string", None) and "enum" not in b and "const" not in b for b in branches)
    choices = [{"enum": ids}] if ids and takes_strings else []
    choices += [{"type": "null"}] if nullable else []
    if not choices:
        return None
    return {**keep, **choices[0]} if len(choices) == 1 else {**keep, "anyOf": choices}
