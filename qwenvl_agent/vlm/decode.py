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


def decode(
    step: Callable[..., Any],
    ids,
    logits,
    kwargs: dict[str, Any],
    times,
    end_ids: Sequence[int],
    rollback: Callable[[int], None] | None = None,
):
    """Decode after the prompt ``ids`` from its last ``logits``; return the prompt and reply token ids.

    ``step(tokens, count=1)`` runs the model over new tokens and returns the logits of their last ``count``
    positions (``[count, vocabulary]``); ``rollback(count)``, where the engine can, drops the last ``count``
    tokens from its cache, which lets greedy decoding check drafts by prompt lookup.

    ``kwargs`` holds ``generate``-style settings: ``max_new_tokens``, ``do_sample``, ``temperature``,
    ``top_k``, ``top_p``, ``repetition_penalty``, ``logits_processor`` (the caller's processors),
    ``streamer``, ``stopping_criteria``, ``constraint`` (a ``constrain.Constraint``) with ``jump_forward``,
    ``prompt_lookup_num_tokens`` (drafts per pass; 0 or sampling: none) and ``draft_ids`` (the tokens of a text
    to draft from first: ``PromptLookup``'s reference). ``times`` gets ``decode_steps``, ``forced_tokens``,
    ``draft_tokens``, ``accepted_draft_tokens`` and ``ended``.
    """
    import torch

    max_new = int(kwargs.get("max_new_tokens", 512))
    hooks = list(kwargs.get("logits_processor") or [])
    guide = _Guide(kwargs.get("constraint"), hooks, set(end_ids), bool(kwargs.get("jump_forward", True)))
    processors = _pipeline(kwargs, guide, hooks)
    sampling = bool(kwargs.get("do_sample"))
    drafts = int(kwargs.get("prompt_lookup_num_tokens") or 0)
    usable = drafts > 0 and rollback is not None and not sampling
    lookup = PromptLookup(drafts, reference=kwargs.get("draft_ids") or ()) if usable else None
    streamer, stopping = kwargs.get("streamer"), kwargs.get("stopping_criteria") or []
    ends = set(end_ids)
    sequence, prompt_length = ids, int(ids.shape[1])
    # Drafts the model has read past the accepted reply, and the logits after each (``after[j]`` follows
    # ``pending[j]``): where the reply goes on as a draft said, the next logits are already there.
    pending: list[int] = []
    after = None
    drafted = taken = 0  # the last draft's length, and how much of it the reply has taken so far
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
            feed = new
            if pending:
                same = _agreeing(new, pending)
                times.accepted_draft_tokens += same
                taken += same
                if same == len(new):  # all read already: the logits after the last of them are known
                    logits, pending, after, feed = after[same - 1 : same], pending[same:], after[same:], []
                    if not pending:
                        lookup.checked(drafted, taken)
                else:  # the model's cache holds drafts the reply left: take them back, read the rest
                    rollback(len(pending) - same)
                    lookup.checked(drafted, taken)
                    pending, after, feed = [], None, new[same:]
            if new[-1] in ends or guide.done:
                times.ended = True
                break
            if any(bool(criterion(sequence, scores).any()) for criterion in stopping):
                break
            left = max_new - (sequence.shape[1] - prompt_length)
            if left <= 0:
                break
            if feed:
                proposed = guide.plausible(lookup.propose(sequence[0], left - 1)) if lookup is not None else []
                tokens = torch.tensor([feed + proposed], dtype=sequence.dtype, device=sequence.device)
                out = step(tokens, len(proposed) + 1) if proposed else step(tokens)
                times.decode_steps += 1
                times.draft_tokens += len(proposed)
                logits, pending, after = out[:1], proposed, out[1:]
                drafted, taken = len(proposed), 0
        if pending:
            rollback(len(pending))  # the engine's cache ends where the reply does
    finally:
        if streamer is not None:
            streamer.end()
    return sequence


class PromptLookup:
    """Drafts by prompt lookup: where the last few tokens of the sequence (prompt and reply so far) appeared
    before, the tokens that followed them there. A reply that quotes its input (figures from a tool result,
    a corrected OCR line) is drafted many tokens at a time; the model checks a draft in the same pass as the
    token before it, so a greedy reply is the same with and without drafts.

    ``reference``: tokens of a text the reply is likely to repeat without it being in the prompt (another OCR
    engine's reading of the image being read). It is looked in first, and read forward: the first place the
    last tokens occur that ends at or after where the last draft from it began (the reply goes through it in
    order), else the latest.

    A draft costs a little even when the reply leaves it (on two cores a pass over 2 tokens takes 1.25 times
    one over 1, over 11 tokens 2 times; docs/PERFORMANCE.md), so its length follows how the last one went: two
    longer after a draft taken whole, one longer than what was taken otherwise (at least ``least``)."""

    def __init__(
        self, most: int, least: int = 2, longest_match: int = 3, shortest_match: int = 1, reference: Sequence[int] = ()
    ):
        import numpy as np

        self.most = most
        self.least = min(least, most)
        self.size = most
        self.longest_match = longest_match
        self.shortest_match = shortest_match
        self.reference = np.asarray(list(reference), dtype=np.int64)
        self._read = 0  # where the last draft from the reference began

    def propose(self, sequence, budget: int) -> list[int]:
        """Up to ``min(size, budget)`` tokens that followed the sequence's last n tokens (the longest n that
        occurred) in the reference, else at their latest earlier occurrence in the sequence; or none."""
        import numpy as np

        count = min(self.size, budget)
        if count <= 0:
            return []
        tokens = np.asarray(sequence.cpu() if hasattr(sequence, "cpu") else sequence)
        length = tokens.shape[0]
        for n in range(self.longest_match, self.shortest_match - 1, -1):
            if length < n:
                continue
            tail = tokens[length - n :]
            found = _occurrences(self.reference, tail)
            if found.size:
                onward = found[found + n >= self._read]
                start = int(onward[0] if onward.size else found[-1]) + n
                self._read = start
                return self.reference[start : start + count].tolist()
            found = _occurrences(tokens[: length - 1], tail)
            if found.size:
                start = int(found[-1]) + n
                return tokens[start : start + count].tolist()
        return []

    def checked(self, proposed: int, taken: int) -> None:
        """How the last draft went: ``taken`` of its ``proposed`` tokens were the reply's."""
        if taken >= proposed:
            self.size = min(self.most, self.size + 2)
        else:
            self.size = max(self.least, taken + 1)


def _occurrences(tokens, tail):
    """Where ``tail`` begins in ``tokens`` (an array of indices, maybe empty)."""
    import numpy as np

    n = tail.shape[0]
    if tokens.shape[0] < n:
        return np.empty(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(tokens, n)
    return np.flatnonzero((windows == tail).all(axis=1))


def _agreeing(new: list[int], drafts: list[int]) -> int:
    """How many tokens ``new`` and ``drafts`` have in common from the start."""
    same = 0
    for token, draft in zip(new, drafts):
        if token != draft:
            break
        same += 1
    return same


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

    def plausible(self, draft: list[int]) -> list[int]:
        """``draft`` up to the first token the grammar would refuse (a forcing hook may still differ)."""
        constraint = self.constraint
        if constraint is None or not draft:
            return draft
        return draft[: constraint.valid_prefix(draft)]

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
