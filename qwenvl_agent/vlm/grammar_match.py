"""What grammar-constrained decoding stands on: the tokenizer as the matcher (llguidance) sees it, compiling a
Lark grammar for it, and the shortest way from a matcher's state to the end of a reply (budget closing).
Used by ``constrain`` (the grammars) and ``constraint`` (one generation under a grammar)."""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import QwenVLError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
THINK_END = "</think>"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")
_MAX_CLOSING_TOKENS = 4096


class ConstraintError(QwenVLError, ValueError):
    """A grammar cannot be built (a schema the matcher does not support, no tool left to call), or a token
    the grammar does not allow was fed to a constraint."""


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


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


def prepare_environment(hf_tokenizer: Any, vocab_size: int | None = None, end_token_ids: Sequence[int] | None = None) -> None:
    """Build (and keep) the matcher's view of ``hf_tokenizer`` ahead of the first grammar that needs it."""
    _environment(hf_tokenizer, vocab_size, end_token_ids)


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


# The order in which closing tries bytes: end what is open before starting anything new. In a string: its
# closing quote, then plain letters (an enum or a key name still to finish); elsewhere: closing brackets,
# a separator (before a digit: a number in progress ends rather than grows), the shortest values. Every
# other byte follows, so a path is found wherever one exists.
_IN_STRING = b'"abcdefghijklmnopqrstuvwxyz0123456789'
_ESCAPED = b'n"\\'
_OUTSIDE = b'}]",0ntf-: \n[{'


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
