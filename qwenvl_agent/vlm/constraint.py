"""One generation under a grammar (``Constraint``): the mask of each step, the tokens forced from here
(jump-forward), and budget closing; and ``ConstraintLogitsProcessor``, the same as a transformers logits
processor. Started by ``Grammar.constraint`` (``constrain.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .grammar_match import (
    THINK_END,
    TOOL_CALL_OPEN,
    ConstraintError,
    _closing_path,
    _Environment,
    _same_way,
    _scan,
    _unpack,
)

if TYPE_CHECKING:
    from .constrain import Grammar

# Within this many tokens of the end of the budget (or a whole reply's length, if more), each sampled token
# is checked to leave room to close.
CLOSING_WINDOW = 32
_CHECKED_CANDIDATES = 3
_REMEASURE_EVERY = 8


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

    def valid_prefix(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens``, from the first, the grammar would accept next (none consumed): a draft past
        that point cannot be the reply. Free text and reasoning take any; closing takes only its own path."""
        if self.phase != "grammar":
            return len(tokens)
        if self.done or self._closing is not None:
            return 0
        return int(self._matcher.validate_tokens(list(tokens)))

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
