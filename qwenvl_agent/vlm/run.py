"""One generation in a worker thread: the engine's ``generate`` with a streamer, the grammar's constraint,
and the reasons it may stop early (cancel, time limit, repetition, a stop sequence seen by the reader)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .constrain import Constraint, ConstraintError
from .settings import GenerationSettings, Prompt, StepTimes
from .stopping import Stopped, StopWhen


def start_constraint(runtime, prompt: Prompt, settings: GenerationSettings) -> Constraint | None:
    """The constraint of ``settings.grammar`` for this reply, past the reply's forced start if there is one;
    a budget too small for any valid reply is a ``ConstraintError`` here, before any work."""
    if settings.grammar is None:
        return None
    constraint = settings.grammar.constraint(runtime.tokenizer, **grammar_widths(runtime), thinking=runtime.opens_thinking)
    if prompt.assistant_prefix:
        try:
            constraint.accept(runtime.tokenizer.encode(prompt.assistant_prefix, add_special_tokens=False))
        except ConstraintError as exc:
            raise ConstraintError(f"The reply's forced start {prompt.assistant_prefix!r} does not fit the grammar: {exc}") from exc
    constraint.close_within(settings.max_new_tokens)
    return constraint


def grammar_widths(runtime) -> dict[str, Any]:
    """What a grammar needs of ``runtime``'s model besides its tokenizer: the logits' width and the end tokens."""
    model = runtime.model
    ends = model.generation_config.eos_token_id
    return {
        "vocab_size": getattr(model.config, "text_config", model.config).vocab_size,
        "end_token_ids": ends if isinstance(ends, list) else None if ends is None else [ends],
    }


class GenerationRun:
    """One generation in a worker thread, with a streamer and the reasons it may stop early."""

    def __init__(self, runtime, inputs, spans, settings: GenerationSettings, prompt_length: int, started: float,
                 deadline: float | None = None, outside=None, constraint: Constraint | None = None):
        from transformers import TextIteratorStreamer

        self.runtime = runtime
        self.inputs = inputs
        self.spans = spans
        self.settings = settings
        self.prompt_length = prompt_length
        self.started = started
        self.deadline = deadline
        self.outside = outside  # the request's cancel signal
        self.constraint = constraint
        self.times = StepTimes()
        self.cancel = threading.Event()
        self.timed_out = False
        self.repeated = False
        self.output_tokens = 0
        self.error: BaseException | None = None
        self.stopped_by_sequence = False
        self.streamer = TextIteratorStreamer(runtime.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.thread = threading.Thread(target=self._generate, name="qwenvl-generate", daemon=True)
        self._on_end: Callable[[], None] = lambda: None

    def start(self, on_end: Callable[[], None]) -> None:
        """Start the worker; ``on_end`` is called in it once the generation has ended, however it ended."""
        self._on_end = on_end
        try:
            self.thread.start()
        except BaseException:
            on_end()
            raise

    def should_stop(self) -> bool:
        """True once the caller cancels, the request's scope is cancelled, or the time limit passes."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
        return self.timed_out or self.cancel.is_set() or (self.outside is not None and self.outside.is_set())

    def finish_reason(self, settings: GenerationSettings) -> str:
        if self.timed_out:
            return "timeout"
        if self.repeated:
            return "repetition"
        if self.stopped_by_sequence:
            return "stop"
        if self.outside is not None and self.outside.is_set():
            return "cancelled"
        return "length" if self.output_tokens >= settings.max_new_tokens and not self.times.ended else "stop"

    def _generate(self) -> None:
        import torch

        try:
            if self.settings.seed is not None:
                torch.manual_seed(self.settings.seed)  # the gate makes this generation the only one running
            with torch.inference_mode():
                output = self.runtime.engine.generate(
                    self.inputs, self.spans, self.settings, self._generate_kwargs(), self.times, self.should_stop
                )
            self.output_tokens = int(output.shape[1]) - self.prompt_length
        except Stopped:
            self.streamer.end()
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
            self.streamer.end()
        finally:
            self._on_end()

    def _generate_kwargs(self) -> dict[str, Any]:
        from transformers import StoppingCriteriaList

        settings = self.settings
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "streamer": self.streamer,
            "stopping_criteria": StoppingCriteriaList([StopWhen(self)]),
            "constraint": self.constraint,
            "jump_forward": settings.jump_forward,
            "prompt_lookup_num_tokens": settings.prompt_lookup_num_tokens,
        }
        if settings.draft_text:  # drafted from only where the decode loop drafts at all
            kwargs["draft_ids"] = self.runtime.tokenizer.encode(settings.draft_text, add_special_tokens=False)
        if settings.temperature:
            # Unset top-p and top-k are the checkpoint's own (generation_config.json), as ``generate`` takes them.
            defaults = getattr(self.runtime.model, "generation_config", None)
            top_p = settings.top_p if settings.top_p is not None else getattr(defaults, "top_p", None)
            top_k = settings.top_k if settings.top_k is not None else getattr(defaults, "top_k", None)
            kwargs.update(do_sample=True, temperature=settings.temperature)
            if top_p is not None:
                kwargs["top_p"] = top_p
            if top_k is not None:
                kwargs["top_k"] = top_k
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.repetition_penalty:
            kwargs["repetition_penalty"] = settings.repetition_penalty
        hooks = [hook(self.prompt_length) for hook in self.runtime.logits_hooks]
        kwargs["logits_processor"] = [h for h in hooks if h is not None]
        return kwargs
