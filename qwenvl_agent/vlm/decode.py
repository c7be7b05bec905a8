"""The decode loop both engines run after the prompt, written once: the logits pipeline (repetition penalty,
the grammar's mask, the runtime's logits hooks such as forced replies, the sampling warpers), sampling, the
streamer, the stopping criteria, the end tokens, and jump-forward.

An engine gives it a ``step``: one forward pass of the model over one or more new tokens, continuing its KV
cache, returning the last position's logits. Where a grammar admits only one continuation, those tokens are
appended at once, together with the token sampled before them, and fed to the model in one pass.

A logits hook that forces a known reply (``vlm.testing.scripted_replies``, the benchmark's replies of set
lengths) can say so by having ``upcoming(step, count) -> list[int]``: the tokens it will force from reply
position ``step`` on. Its tokens always win over the grammar: jump-forward feeds only what both agree on,
and where the grammar refuses a forced token the grammar is released for the rest of the reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .constrain import Constraint, ConstraintError

log = logging.getLogger(__name__)


def decode(step: Callable[[Any], Any], ids, logits, kwargs: dict[str, Any], times, end_ids: Sequence[int]):
    """Decode after the prompt ``ids`` from its last ``logits``; return the prompt and reply token ids.

    ``kwargs`` holds ``generate``-style settings: ``max_new_tokens``, ``do_sample``, ``temperature``,
    ``top_k``, ``top_p``, ``repetition_penalty``, ``logits_processor`` (the caller's processors),
    ``streamer``, ``stopping_criteria``, and ``constraint`` (a ``constrain.Constraint``) with
    ``jump_forward``. ``times`` gets ``decode_steps``, ``forced_tokens`` and ``ended``.
    """
    import torch

    max_new = int(kwargs.get("max_new_tokens", 512))
    hooks = list(kwargs.get("logits_processor") or [])
    guide = _Guide(kwargs.get("constraint"), hooks, set(end_ids), bool(kwargs.get("jump_forward", True)))
    processors = _pipeline(kwargs, guide, hooks)
    sampling = bool(kwargs.get("do_sample"))
    streamer, stopping = kwargs.get("streamer"), kwargs.get("stopping_criteria") or []
    ends = set(end_ids)
    sequence, prompt_length = ids, int(ids.shape[1])
    if streamer is not None:
        streamer.put(ids.cpu())
    try:
        while True:
            produced = sequence.shape[1] - prompt_length
            if produced >= max_new:
                break
            new = guide.jump(produced, max_new)
            scores = logits
            if new:
                times.forced_tokens += len(new)
            else:
                scores = processors(sequence, logits.float())
                if sampling:
                    token = int(torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1))
                else:
                    token = int(scores.argmax(dim=-1))
                guide.accept_chosen(token, produced)
                new = [token]
                if token not in ends and not guide.done:
                    more = guide.jump(produced + 1, max_new)
                    times.forced_tokens += len(more)
                    new += more
            new = _through_end(new, ends)
            added = torch.tensor([new], dtype=sequence.dtype, device=sequence.device)
            sequence = torch.cat([sequence, added], dim=1)
            if streamer is not None:
                streamer.put(added[0].cpu())
            if new[-1] in ends or guide.done:
                times.ended = True
                break
            if any(bool(criterion(sequence, scores).any()) for criterion in stopping):
                break
            if sequence.shape[1] - prompt_length >= max_new:
                break
            logits = step(added)
            times.decode_steps += 1
    finally:
        if streamer is not None:
            streamer.end()
    return sequence


def _through_end(tokens: list[int], ends: set[int]) -> list[int]:
    for index, token in enumerate(tokens):
        if token in ends:
            return tokens[: index + 1]
    return tokens


def _pipeline(kwargs: dict[str, Any], guide: _Guide, hooks: list[Any]):
    """The processors in ``generate``'s order: the penalty, then the caller's (the grammar's mask first, so
    a forcing hook after it has the last word), then temperature, top-k and top-p."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if kwargs.get("repetition_penalty"):
        processors.append(RepetitionPenaltyLogitsProcessor(kwargs["repetition_penalty"]))
    processors.append(guide)
    processors.extend(hooks)
    if kwargs.get("do_sample"):
        processors.append(TemperatureLogitsWarper(kwargs["temperature"]))
        if kwargs.get("top_k"):
            processors.append(TopKLogitsWarper(kwargs["top_k"]))
        if kwargs.get("top_p") is not None and kwargs["top_p"] < 1.0:
            processors.append(TopPLogitsWarper(kwargs["top_p"]))
    return processors


class _Guide:
    """The grammar's part in the loop: the budget, jump-forward, the mask; inert without a constraint."""

    def __init__(self, constraint: Constraint | None, hooks: list[Any], ends: set[int], jump_forward: bool):
        self.constraint = constraint
        self.scripts = [hook for hook in hooks if callable(getattr(hook, "upcoming", None))]
        self.ends = ends
        self.jump_forward = jump_forward
        self._measured_at: int | None = None
        self._queue: list[int] = []  # the rest of a forced run, while jump-forward is off

    @property
    def done(self) -> bool:
        return self.constraint is not None and self.constraint.done

    def jump(self, produced: int, max_new: int) -> list[int]:
        """The tokens to append without asking the model (accepted), or none: what the grammar forces from
        here, as far as every forcing hook agrees with it."""
        if self._queue:  # jump-forward off: a forced run goes one token a pass, through the mask
            return []
        constraint = self._budget(produced, max_new)
        if constraint is None:
            return []
        tokens = constraint.forced_tokens()[: max_new - produced]
        if not self.jump_forward:
            self._queue = tokens
            return []
        for script in self.scripts:
            planned = list(script.upcoming(produced, len(tokens)))
            same = next((i for i, (a, b) in enumerate(zip(tokens, planned)) if a != b), min(len(tokens), len(planned)))
            tokens = tokens[:same]
        if tokens:
            constraint.accept(tokens)
        return tokens

    def accept_chosen(self, token: int, produced: int) -> None:
        """Advance the grammar past the token the pipeline chose. A token the grammar refuses can only come
        from a forcing hook (the mask allows no other): the grammar then steps aside for this reply."""
        constraint = self.constraint
        if constraint is None:
            return
        self._queue = self._queue[1:] if self._queue[:1] == [token] else []
        try:
            constraint.accept(token)
        except ConstraintError:
            if not any(list(script.upcoming(produced, 1))[:1] == [token] for script in self.scripts):
                raise
            log.debug("A forced reply left the grammar at token %d; the rest of the reply is unconstrained.", token)
            constraint.release()

    def __call__(self, input_ids, scores):
        """The grammar's mask, as a logits processor (before the hooks and the warpers)."""
        constraint = self.constraint  # told the budget by ``jump`` at this position
        if constraint is None or constraint.phase == "released":
            return scores
        if constraint.done:
            return _only(scores, constraint.env.end_ids[0])
        forced = self._queue or constraint.forced_tokens()
        if forced:  # jump-forward is off, or a forcing hook disagrees: the grammar's next token, one step
            return _only(scores, forced[0])
        return constraint.apply(scores)

    def _budget(self, produced: int, max_new: int) -> Constraint | None:
        """The constraint, told the tokens left (once per reply position)."""
        constraint = self.constraint
        if constraint is None or constraint.done or constraint.phase == "released":
            return None
        if self._measured_at != produced:
            constraint.close_within(max_new - produced)
            self._measured_at = produced
        return constraint


def _only(scores, token: int):
    kept = scores[..., token].clone()
    scores.fill_(float("-inf"))
    scores[..., token] = kept
    return scores
