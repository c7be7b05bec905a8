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
JSON schemas embedded, token masks as bitmasks, forced tokens computed by the library.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import QwenVLError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
THINK_END = "</think>"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")
# json.dumps' own separators, which Qwen's chat template writes arguments with: one way to write a value,
# so more of a call is forced (and jumped over) and the model sees the format it was trained on.
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Within this many tokens of the end of the budget (or a whole reply's length, if more), each sampled token
# is checked to leave room to close.
CLOSING_WINDOW = 32
_CHECKED_CANDIDATES = 3
_REMEASURE_EVERY = 8
_MAX_CLOSING_TOKENS = 4096


class ConstraintError(QwenVLError, ValueError):
    """A grammar cannot be built (a schema the matcher does not support, no tool left to call), or a token
    the grammar does not allow was fed to a constraint."""


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


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


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


# ------------------------------------------------------------------------------------ tokenizer environment


@dataclass
class _Tokens:
    """The token ids of the markers a grammar names (None: the tokenizer has no single token for it)."""

    ids: dict[str, int | None]

    def literal(self, text: str) -> str:
        """The marker as a Lark terminal: its special token where there is one, else its text."""
        token = self.ids.get(text)
        return f"<[{token}]>" if token is not None else _lark_string(text)


@dataclass
class _Environment:
    """What a tokenizer means to the matcher: built once per (tokenizer, vocabulary width), cached."""

    tokenizer: Any  # llguidance.LLTokenizer
    vocab_size: int
    end_ids: list[int]
    tokens: _Tokens
    byte_tokens: list[int]  # the token of each single byte
    lock: threading.Lock

    def token_bytes(self, token: int) -> bytes:
        return b"" if token in self.end_ids else self.tokenizer.decode_bytes([token])


_ENVIRONMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENV_LOCK = threading.Lock()


def _environment(hf_tokenizer: Any, vocab_size: int | None, end_token_ids: Sequence[int] | None) -> _Environment:
    import llguidance.hf

    width = int(vocab_size or len(hf_tokenizer))
    if width < len(hf_tokenizer):
        raise ConstraintError(f"vocab_size {width} is smaller than the tokenizer's {len(hf_tokenizer)} tokens.")
    if end_token_ids is None:
        end_token_ids = [hf_tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS if t in hf_tokenizer.get_vocab()]
    ends = [int(t) for t in end_token_ids]
    if not ends:
        raise ConstraintError("The tokenizer has no end-of-reply token (<|im_end|>); pass end_token_ids.")
    key = (width, tuple(ends))
    with _ENV_LOCK:
        per_tokenizer = _ENVIRONMENTS.setdefault(hf_tokenizer, {})
        if key not in per_tokenizer:
            lt = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=width, eos_token=ends)
            vocab = hf_tokenizer.get_vocab()
            markers = {t: vocab.get(t) for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE, THINK_END)}
            singles = [lt.tokenize_bytes(bytes([b])) for b in range(256)]
            if any(len(s) != 1 for s in singles):
                raise ConstraintError("The tokenizer is not byte-level: some byte has no token of its own.")
            per_tokenizer[key] = _Environment(lt, width, ends, _Tokens(markers), [s[0] for s in singles], threading.Lock())
        return per_tokenizer[key]


def _compile(env: _Environment, lark: str) -> Any:
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        matcher = llguidance.LLMatcher(env.tokenizer, grammar, log_level=0)
    except (ValueError, TypeError) as exc:
        raise ConstraintError(f"The grammar could not be built: {_without_listing(str(exc))}") from exc
    if matcher.is_error():
        raise ConstraintError(f"The grammar could not be built: {_without_listing(matcher.get_error())}")
    return matcher


def _without_listing(message: str) -> str:
    """llguidance's message without the numbered listing of the grammar it appends (our own Lark text)."""
    return "\n".join(line for line in message.splitlines() if not re.match(r"\s*\d+ \| ", line)).strip()


# -------------------------------------------------------------------------------------------- constraint

# The order in which closing tries bytes: end what is open before starting anything new. In a string: its
# closing quote, then plain letters (an enum or a key name still to finish); elsewhere: closing brackets,
# a separator (before a digit: a number in progress ends rather than grows), the shortest values. Every
# other byte follows, so a path is found wherever one exists.
_IN_STRING = b'"abcdefghijklmnopqrstuvwxyz0123456789'
_ESCAPED = b'n"\\'
_OUTSIDE = b'}]",0ntf-: \n[{'


class Constraint:
    """One generation under a grammar. Not thread-safe: one decode loop drives it."""

    def __init__(self, grammar: Grammar, env: _Environment, *, thinking: bool = False) -> None:
        self.grammar = grammar
        self.env = env
        self.phase = "think" if thinking else ("free" if grammar.triggered else "grammar")
        self._after_think = thinking
        self._matcher = grammar._compiled(env, self._after_think) if self.phase == "grammar" else None
        self._tail = b""  # the last bytes of free text and reasoning, to see a marker written in pieces
        self._string = (False, False)  # inside a JSON string, just after a backslash
        self._budget: int | None = None
        self._closing: list[int] | None = None  # the path to the end, while closing
        self._path_cache: list[int] | None = None
        self._path_length: int | None = None  # as last measured
        self._checked_paths: dict[int, list[int]] = {}
        self._since_measured = 0
        self._bits = (env.vocab_size + 31) // 32
        self._at_start = True  # no token of the grammar yet
        self.done = False

    # ---- the decode loop's calls

    def allowed(self) -> np.ndarray | None:
        """The tokens allowed next, as a bitmask (int32 words, bit ``i % 32`` of word ``i // 32`` set when
        token ``i`` is allowed); None when this step is not constrained (words before a call, reasoning)."""
        if self.phase == "grammar":
            return self._grammar_mask()
        if self.phase == "free" and self._budget is not None and self._budget <= self._call_cost() + 1:
            return self._all_but([self.env.tokens.ids.get(TOOL_CALL_OPEN)])  # too late to open a call
        if self.phase == "think" and not self.grammar.triggered:
            return self._all_but(self.env.end_ids)  # a reply that must be a call or a value cannot end in thought
        return None

    def apply(self, logits: Any) -> Any:
        """Set the logits of the tokens not allowed to -inf, in place; a numpy array or a torch tensor of shape
        ``[vocab]`` or ``[1, vocab]``. Returns ``logits``."""
        mask = self.allowed()
        if mask is None:
            return logits
        if self.phase == "grammar" and self._in_window():
            mask = self._checked(mask, logits)
        import torch

        banned = torch.from_numpy(~_unpack(mask, logits.shape[-1]))
        # numpy logits are written through a torch view of the same memory: torch's masked fill is the faster
        target = torch.from_numpy(logits) if isinstance(logits, np.ndarray) else logits
        target.masked_fill_(banned.to(target.device), float("-inf"))
        return logits

    def accept(self, token_id: int | Sequence[int]) -> None:
        """Advance past ``token_id`` (or several ids, as forced_tokens() gave them), as appended to the reply."""
        for token in [token_id] if isinstance(token_id, (int, np.integer)) else token_id:
            self._accept_one(int(token))

    def forced_tokens(self) -> list[int]:
        """The tokens that are the only continuation from here (empty when there is a choice): feed them in
        one forward pass instead of one each, then ``accept`` them."""
        if self.phase == "think" and self._must_end_thinking():
            return [self.env.tokens.ids[THINK_END]]
        if self.phase != "grammar" or self.done:
            return []
        if self._closing is not None:
            return list(self._closing)
        return list(self._matcher.compute_ff_tokens())

    def release(self) -> None:
        """Stop constraining this reply: from here on every token is accepted and nothing is masked or forced
        (for a reply forced from outside, such as a scripted one, that leaves the grammar)."""
        self.phase = "released"
        self._closing = None

    def close_within(self, n_tokens_left: int) -> bool:
        """Tell the constraint how many tokens the reply may still add (the end token included). When what is
        open can no longer wait, it switches to closing: ``forced_tokens()`` is then the shortest way to a
        complete, valid reply (strings, arrays, objects and the call closed, required keys given), so the
        reply never ends truncated. Returns True once closing."""
        self._budget = int(n_tokens_left)
        if self.phase == "grammar" and self._closing is None and not self.done and self._near_end():
            path = self._path()
            if path is not None and len(path) > self._budget and self._at_start:
                raise ConstraintError(
                    f"The reply may have {self._budget} more tokens, but a complete one needs at least {len(path)} "
                    "tokens: raise max_tokens."
                )
            if path is not None and len(path) >= self._budget:
                self._closing = path
        return self._closing is not None

    def _near_end(self) -> bool:
        """Whether to measure the way to the end at this step: at every step once the budget comes within
        reach of it, every few tokens before. Reach is two windows: since the last measurement, one token
        (the newline after a call) may have opened a whole new call, and a forced run fed at once
        (jump-forward) may have carried the reply up to its next choice."""
        if self._path_length is None or self._since_measured >= _REMEASURE_EVERY:
            return True
        return self._budget <= self._path_length + 2 * self._window() + _REMEASURE_EVERY

    # ---- phases

    def _accept_one(self, token: int) -> None:
        if self.done:
            raise ConstraintError(f"Token {token} came after the constrained reply ended.")
        self._budget = None if self._budget is None else self._budget - 1
        if self.phase == "grammar":
            if self._closing is not None and (not self._closing or token != self._closing[0]):
                raise ConstraintError(f"Token {token} is not the next token of the closing path.")
            if not self._matcher.consume_token(token) or self._matcher.is_error():
                raise ConstraintError(f"Token {token} is not allowed here: {self._matcher.get_error() or 'grammar'}.")
            if self._closing is not None:
                self._closing.pop(0)
            self._at_start = False
            self._since_measured += 1
            self._path_cache = self._checked_paths.get(token)
            self._checked_paths = {}
            if self._path_cache is not None:
                self._path_length, self._since_measured = len(self._path_cache), 0
            self._string = _scan(self.env.token_bytes(token), *self._string)
            self.done = self._matcher.is_stopped()
            return
        if token in self.env.end_ids:
            self.done = True
            return
        self._tail = (self._tail + self.env.token_bytes(token))[-32:]
        if self.phase == "think" and self._tail.endswith(THINK_END.encode()):
            self._tail = b""
            self._start("free" if self.grammar.triggered else "grammar")
        elif self.phase == "free" and self._tail.endswith(TOOL_CALL_OPEN.encode()):
            self._start("grammar")

    def _start(self, phase: str) -> None:
        self.phase = phase
        if phase == "grammar":
            self._matcher = self.grammar._compiled(self.env, self._after_think and not self.grammar.triggered)
            self._string = (False, False)
            self._path_cache = self._path_length = None

    def _must_end_thinking(self) -> bool:
        """In a forced grammar, reasoning that runs into the budget ends in time for the grammar to fit."""
        if self.grammar.triggered or self._budget is None or self.env.tokens.ids.get(THINK_END) is None:
            return False
        return self._budget <= self._call_cost() + 1

    def _call_cost(self) -> int:
        return self.grammar._cost(self.env, self._after_think and not self.grammar.triggered)

    # ---- masks and closing

    def _grammar_mask(self) -> np.ndarray:
        import llguidance.numpy

        if self._closing is not None:
            return self._only(self._closing[0])
        mask = llguidance.numpy.allocate_token_bitmask(1, self.env.vocab_size)
        llguidance.numpy.fill_next_token_bitmask(self._matcher, mask, 0)
        return mask[0]

    def _path(self) -> list[int] | None:
        if self._path_cache is None:
            self._path_cache = _closing_path(self._matcher, self.env, self._string)
            self._path_length = None if self._path_cache is None else len(self._path_cache)
            self._since_measured = 0
        return self._path_cache

    def _in_window(self) -> bool:
        if self._budget is None or self._closing is not None or self._path_length is None:
            return False
        if self._budget - self._path_length >= self._window() + _REMEASURE_EVERY:
            return False
        path = self._path()
        return path is not None and self._budget - len(path) < self._window()

    def _window(self) -> int:
        """How near the end sampled tokens are checked: at least as far as one token can push the end away,
        which is as far as a whole new call or value (a newline after a call opens the next one)."""
        return max(CLOSING_WINDOW, self._call_cost() + _REMEASURE_EVERY)

    def _checked(self, mask: np.ndarray, logits: Any) -> np.ndarray:
        """Near the end of the budget: only the likeliest tokens that still leave room to close, and the
        first token of the closing path (which always does)."""
        path = self._path()
        allowed = _unpack(mask, self.env.vocab_size)
        scores = np.asarray(logits.detach().float().cpu() if hasattr(logits, "detach") else logits, dtype=np.float32)
        scores = scores.reshape(-1)[: self.env.vocab_size].copy()
        scores[~allowed[: scores.shape[0]]] = -np.inf
        keep = {path[0]}
        self._checked_paths = {path[0]: path[1:]}
        for token in np.argsort(-scores)[:_CHECKED_CANDIDATES]:
            if not np.isfinite(scores[token]) or int(token) in keep:
                continue
            trial = self._matcher.deep_copy()
            if not trial.consume_token(int(token)):
                continue
            state = _scan(self.env.token_bytes(int(token)), *self._string)
            rest = [] if trial.is_stopped() else _same_way(trial, path) or _closing_path(trial, self.env, state)
            if rest is not None and len(rest) <= self._budget - 1:
                keep.add(int(token))
                self._checked_paths[int(token)] = rest  # the next step's way to the end, if this is sampled
        out = np.zeros_like(mask)
        for token in keep:
            out[token // 32] |= np.int32(np.uint32(1 << (token % 32)).view(np.int32))
        return out

    def _only(self, token: int) -> np.ndarray:
        out = np.zeros(self._bits, dtype=np.int32)
        out[token // 32] = np.uint32(1 << (token % 32)).view(np.int32)
        return out

    def _all_but(self, tokens: Sequence[int | None]) -> np.ndarray | None:
        tokens = [t for t in tokens if t is not None]
        if not tokens:
            return None
        out = np.full(self._bits, -1, dtype=np.int32)
        for token in tokens:
            out[token // 32] &= ~np.uint32(1 << (token % 32)).view(np.int32)
        return out


class ConstraintLogitsProcessor:
    """A ``Constraint`` as a transformers logits processor, for decode loops that run a ``LogitsProcessorList``
    (``generate``, and the OpenVINO engine's loop): the tokens generated since the last step are accepted,
    the budget passed on, and the scores masked. Forced tokens become a one-token mask per step here (no
    step is saved: jump-forward needs a loop that can feed several tokens at once); a finished constrained
    reply gets its end token."""

    def __init__(self, constraint: Constraint, prompt_length: int, max_new_tokens: int) -> None:
        self.constraint = constraint
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens
        self._seen = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        produced = input_ids.shape[1] - self.prompt_length
        self.constraint.accept(input_ids[0, self.prompt_length + self._seen :].tolist())
        self._seen = produced
        if self.constraint.done:
            return self._only(scores, self.constraint.env.end_ids[0])
        self.constraint.close_within(self.max_new_tokens - produced)
        forced = self.constraint.forced_tokens()
        if forced:
            return self._only(scores, forced[0])
        return self.constraint.apply(scores)

    @staticmethod
    def _only(scores: Any, token: int) -> Any:
        kept = scores[..., token].clone()
        scores.fill_(float("-inf"))
        scores[..., token] = kept
        return scores


def _unpack(mask: np.ndarray, width: int) -> np.ndarray:
    """A bitmask as one bool per token, ``width`` long (tokens past the mask are not allowed)."""
    data = np.ascontiguousarray(mask).view(np.uint8)
    bits = np.unpackbits(data, bitorder="little", count=min(width, data.shape[0] * 8)).view(bool)
    if bits.shape[0] >= width:
        return bits
    return np.concatenate([bits, np.zeros(width - bits.shape[0], dtype=bool)])


def _scan(data: bytes, in_string: bool, escaped: bool) -> tuple[bool, bool]:
    """Whether the text is inside a JSON string (and just after a backslash) once ``data`` is added."""
    for byte in data:
        if escaped:
            escaped = False
        elif in_string and byte == 0x5C:
            escaped = True
        elif byte == 0x22:
            in_string = not in_string
    return in_string, escaped


def _closing_path(matcher: Any, env: _Environment, state: tuple[bool, bool]) -> list[int] | None:
    """The tokens of a short way from ``matcher``'s state to the end of the reply (end token included, unless
    the grammar ends by itself), or None if none is found. What the grammar forces is taken as it is; at each
    choice the byte that closes most. Then written in the tokenizer's own tokens where that is shorter."""
    trial = matcher.deep_copy()
    specials = [t for t in (env.tokens.ids.get(TOOL_CALL_CLOSE), env.tokens.ids.get(TOOL_CALL_OPEN)) if t is not None]
    taken: list[int] = []
    while not trial.is_stopped():
        if len(taken) > _MAX_CLOSING_TOKENS:
            return None
        forced = trial.compute_ff_tokens()
        if forced and trial.consume_tokens(forced):
            taken += forced
            for token in forced:
                state = _scan(env.token_bytes(token), *state)
            continue
        in_string, escaped = state
        order = _ESCAPED if escaped else _IN_STRING if in_string else _OUTSIDE
        candidates = ([] if in_string else env.end_ids + specials) + [env.byte_tokens[b] for b in order]
        chosen = next((t for t in candidates if trial.try_consume_tokens([t]) == 1), None)
        if chosen is None:
            chosen = next((t for t in env.byte_tokens if trial.try_consume_tokens([t]) == 1), None)
        if chosen is None:
            return None
        taken.append(chosen)
        if chosen in env.end_ids:
            break
        state = _scan(env.token_bytes(chosen), *state)
    shorter = _retokenized(taken, env, specials)
    if len(shorter) < len(taken):
        check = matcher.deep_copy()
        if check.try_consume_tokens(shorter) == len(shorter) and check.is_stopped():
            return shorter
    return taken


def _same_way(matcher: Any, path: list[int]) -> list[int] | None:
    """``path`` if it still ends the reply from ``matcher``'s state (as after a word inside a string), else None:
    the cheap check, before looking for a way of its own."""
    trial = matcher.deep_copy()
    return path if trial.try_consume_tokens(path) == len(path) and trial.is_stopped() else None


def _retokenized(tokens: list[int], env: _Environment, specials: list[int]) -> list[int]:
    """``tokens`` written again by the tokenizer, special tokens kept where they are."""
    out: list[int] = []
    run = b""
    for token in tokens:
        if token in env.end_ids or token in specials:
            out += env.tokenizer.tokenize_bytes(run) if run else []
            run = b""
            out.append(token)
        else:
            run += env.tokenizer.decode_bytes([token])
    return out + (env.tokenizer.tokenize_bytes(run) if run else [])
