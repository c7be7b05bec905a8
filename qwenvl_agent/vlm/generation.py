"""The one path from a prompt to the engine's ``generate``: build inputs, generate in a worker thread, stream text.

Everything that touches generation goes through ``stream``, so the gate, stop sequences, the time limit,
cancellation and the caches behave the same for every caller and on every engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import GenerationError, ImageInputError
from .images import pixel_budget
from .reuse import find_image_spans, image_key

DEFAULT_MAX_IMAGE_TOKENS = 1024


@dataclass
class Prompt:
    """What to send: chat-template messages with ``{"type": "image"}`` placeholders, and the images."""

    messages: list[dict]
    images: list[Any] = field(default_factory=list)
    tools: list[dict] | None = None
    # Text the reply is made to start with (part of the prompt); used to force a tool call.
    assistant_prefix: str = ""


@dataclass
class GenerationSettings:
    """How to generate. ``temperature`` None or 0 means greedy decoding."""

    max_new_tokens: int = 512
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    time_limit: float | None = None
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    min_image_tokens: int | None = None
    # Reuse of earlier work (see reuse.py): the vision tower's output per image, the KV cache of a shared prefix.
    cache_images: bool = True
    reuse_prefix: bool = True


@dataclass
class StepTimes:
    """Where one generation's time went, filled in by the engine."""

    vision_seconds: float = 0.0
    prefill_seconds: float = 0.0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    images_encoded: int = 0
    images_cached: int = 0
    first_token_seconds: float | None = None


@dataclass
class GenerationStats:
    """What a finished generation reports after its last piece of text."""

    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" (end token or stop sequence), "length", or "timeout"
    seconds: float
    times: StepTimes = field(default_factory=StepTimes)


def stream(runtime, prompt: Prompt, settings: GenerationSettings) -> Iterator[str | GenerationStats]:
    """Yield the reply's text as it is generated, then one ``GenerationStats``.

    Waits for the runtime's gate (``BusyError`` when the queue is full). Closing the iterator early
    stops the generation and frees the gate.
    """
    with runtime.gate.hold():
        started = time.monotonic()
        inputs, spans = build_inputs(runtime, prompt, settings)
        prompt_length = int(inputs["input_ids"].shape[1])
        run = _Run(runtime, inputs, spans, settings, prompt_length, started)
        run.start()
        try:
            yield from _until_stop(run, settings.stop)
        finally:
            run.cancel.set()
            run.thread.join()
        if run.error is not None:
            raise GenerationError(f"Generation failed: {type(run.error).__name__}: {run.error}") from run.error
        yield GenerationStats(
            input_tokens=prompt_length,
            output_tokens=run.output_tokens,
            finish_reason=run.finish_reason(settings),
            seconds=time.monotonic() - started,
            times=run.times,
        )


def build_inputs(runtime, prompt: Prompt, settings: GenerationSettings):
    """Render the chat template and run the processor (text + images, within the pixel budget); return the
    model inputs and where each image sits in them, with the key that identifies it to the caches."""
    processor = runtime.processor
    text = processor.apply_chat_template(
        prompt.messages, tools=prompt.tools or None, tokenize=False, add_generation_prompt=True
    )
    text += prompt.assistant_prefix
    kwargs: dict[str, Any] = {}
    keys: list[Any] = []
    if prompt.images:
        budget = pixel_budget(settings.max_image_tokens, settings.min_image_tokens)
        kwargs = {"images": prompt.images, **_budget_arguments(budget)}
        keys = [(image_key(image), budget["min_pixels"], budget["max_pixels"]) for image in prompt.images]
    try:
        inputs = processor(text=[text], return_tensors="pt", **kwargs)
    except ValueError as exc:
        raise ImageInputError(f"The images could not be prepared for the model: {exc}") from exc
    for unused in ("token_type_ids", "mm_token_type_ids"):
        inputs.pop(unused, None)
    image_token_id = runtime.model.config.image_token_id
    spans = find_image_spans(inputs["input_ids"][0].tolist(), image_token_id, keys)
    return inputs.to(runtime.engine.device), spans


def _budget_arguments(budget: dict[str, int]) -> dict[str, Any]:
    """The pixel budget as the installed processor takes it: transformers 5 reads a per-call ``size`` (and
    deprecates ``min_pixels``/``max_pixels``), 4.57 reads only ``min_pixels``/``max_pixels``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"images_kwargs": {"size": {"shortest_edge": budget["min_pixels"], "longest_edge": budget["max_pixels"]}}}
    return dict(budget)


class _Run:
    """One ``model.generate`` call in a worker thread, with a streamer and a cancel flag."""

    def __init__(self, runtime, inputs, spans, settings: GenerationSettings, prompt_length: int, started: float):
        from transformers import TextIteratorStreamer

        self.runtime = runtime
        self.inputs = inputs
        self.spans = spans
        self.settings = settings
        self.prompt_length = prompt_length
        self.started = started
        self.times = StepTimes()
        self.cancel = threading.Event()
        self.timed_out = False
        self.output_tokens = 0
        self.error: BaseException | None = None
        self.stopped_by_sequence = False
        self.streamer = TextIteratorStreamer(runtime.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.thread = threading.Thread(target=self._generate, name="qwenvl-generate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish_reason(self, settings: GenerationSettings) -> str:
        if self.timed_out:
            return "timeout"
        if self.stopped_by_sequence:
            return "stop"
        return "length" if self.output_tokens >= settings.max_new_tokens else "stop"

    def _generate(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                output = self.runtime.engine.generate(
                    self.inputs, self.spans, self.settings, self._generate_kwargs(), self.times
                )
            self.output_tokens = int(output.shape[1]) - self.prompt_length
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
            self.streamer.end()

    def _generate_kwargs(self) -> dict[str, Any]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        settings = self.settings
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "streamer": self.streamer,
            "stopping_criteria": StoppingCriteriaList([_StopWhen(self)]),
        }
        if settings.temperature:
            kwargs.update(do_sample=True, temperature=settings.temperature)
            if settings.top_p is not None:
                kwargs["top_p"] = settings.top_p
            if settings.top_k is not None:
                kwargs["top_k"] = settings.top_k
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        hooks = [hook(self.prompt_length) for hook in self.runtime.logits_hooks]
        if any(hooks):
            kwargs["logits_processor"] = LogitsProcessorList([h for h in hooks if h is not None])
        return kwargs


class _StopWhen:
    """Stops generation when the caller cancels or the time limit passes."""

    def __init__(self, run: _Run):
        self.run = run
        limit = run.settings.time_limit
        self.deadline = time.monotonic() + limit if limit else None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.run.times.first_token_seconds is None:
            self.run.times.first_token_seconds = time.monotonic() - self.run.started
        stop = self.run.cancel.is_set()
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.run.timed_out = True
            stop = True
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _until_stop(run: _Run, stop: tuple[str, ...]) -> Iterator[str]:
    """Pass the streamed text through, cutting it before the first stop sequence."""
    stop = tuple(s for s in stop if s)
    if not stop:
        yield from (piece for piece in run.streamer if piece)
        return
    hold = max(len(s) for s in stop) - 1
    buffer = ""
    for piece in run.streamer:
        buffer += piece
        cut = _first_stop(buffer, stop)
        if cut is not None:
            run.stopped_by_sequence = True
            run.cancel.set()
            if buffer[:cut]:
                yield buffer[:cut]
            for _ in run.streamer:  # drain what the worker still produces before it sees the flag
                pass
            return
        if len(buffer) > hold:
            yield buffer[: len(buffer) - hold]
            buffer = buffer[len(buffer) - hold :]
    if buffer:
        yield buffer


def _first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    positions = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(positions) if positions else None
