"""The one path from a prompt to the engine's ``generate``: build inputs, generate in a worker thread, stream text.

Everything that touches generation goes through ``stream``, so the gate, stop sequences, the time limit,
cancellation and the caches behave the same for every caller and on every engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import bridge, cancel
from .errors import GenerationError, ImageInputError, PromptTooLongError
from .images import pixel_budget
from .reuse import find_image_spans, image_key

if TYPE_CHECKING:
    from .constrain import Grammar

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_TOKENS = 1024
# Longest prompt accepted, in tokens: far past any document question, short of minutes of prefill per call.
MAX_PROMPT_TOKENS = 32_768
# Images are padded to at least this side and at most this aspect ratio (the processor refuses above 200:1).
MIN_SIDE = 32
MAX_ASPECT = 150


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
    repetition_penalty: float | None = None
    seed: int | None = None
    # Stop when the reply keeps repeating a short cycle of tokens (small models loop on long OCR output).
    repetition_guard: bool = False
    stop: tuple[str, ...] = ()
    # Seconds for the whole call (waiting for the model, preparing images, prefill, decoding), or an
    # absolute ``time.monotonic()`` deadline set by the caller when its clock started earlier.
    time_limit: float | None = None
    deadline: float | None = None
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    min_image_tokens: int | None = None
    # Reuse of earlier work (see reuse.py): the vision tower's output per image, the KV cache of a shared prefix.
    cache_images: bool = True
    reuse_prefix: bool = True
    # What the reply may be (constrain.py): a ToolCallGrammar or a JsonSchemaGrammar; None: unconstrained.
    grammar: Grammar | None = None


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
    finish_reason: str  # "stop" (end token or stop sequence), "length", "timeout", "repetition" or "cancelled"
    seconds: float
    times: StepTimes = field(default_factory=StepTimes)


def stream(runtime, prompt: Prompt, settings: GenerationSettings) -> Iterator[str | GenerationStats]:
    """Yield the reply's text as it is generated, then one ``GenerationStats``.

    Waits for the runtime's gate (``BusyError`` when the queue is full). Closing the iterator early, or
    setting the request's cancel signal (``cancel.cancel_scope``), stops the generation and frees the
    gate; the time limit covers the wait, the image preparation, the prefill and the decoding.
    """
    deadline = settings.deadline
    if deadline is None and settings.time_limit:
        deadline = time.monotonic() + settings.time_limit
    outside = cancel.current()
    gate = runtime.gate
    gate.enter(deadline, outside)
    try:
        started = time.monotonic()
        constraint = _start_constraint(runtime, prompt, settings)
        inputs, spans = build_inputs(runtime, prompt, settings)
        prompt_length = int(inputs["input_ids"].shape[1])
        run = _Run(runtime, inputs, spans, settings, prompt_length, started, deadline, outside, constraint)
    except BaseException:
        gate.leave()
        raise
    # The worker leaves the gate when it ends: a worker that is slow to stop keeps the model busy, rather
    # than running beside the next caller's generation.
    run.start(on_end=gate.leave)
    try:
        yield from _until_stop(run, settings.stop)
    finally:
        run.cancel.set()
        run.thread.join(bridge.JOIN_SECONDS)
        if run.thread.is_alive():
            log.warning(
                "The generation did not stop within %.0f s of being asked; the model stays busy until it does.",
                bridge.JOIN_SECONDS,
            )
    if run.error is not None:
        raise GenerationError(f"Generation failed: {type(run.error).__name__}: {run.error}") from run.error
    yield GenerationStats(
        input_tokens=prompt_length,
        output_tokens=run.output_tokens,
        finish_reason=run.finish_reason(settings),
        seconds=time.monotonic() - started,
        times=run.times,
    )


def _start_constraint(runtime, prompt: Prompt, settings: GenerationSettings):
    """The constraint of ``settings.grammar`` for this reply, past its forced start (``assistant_prefix``, the
    reply's first text); a grammar that cannot be built or a budget too small is a ``ConstraintError`` here."""
    if settings.grammar is None:
        return None
    config = runtime.model.config
    constraint = settings.grammar.constraint(
        runtime.tokenizer, vocab_size=getattr(config, "text_config", config).vocab_size, thinking=runtime.opens_thinking
    )
    if prompt.assistant_prefix:
        constraint.accept(runtime.tokenizer.encode(prompt.assistant_prefix, add_special_tokens=False))
    constraint.close_within(settings.max_new_tokens - 1)  # the last token is kept for the end token
    return constraint


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
        kwargs = {"images": [fit_for_model(image) for image in prompt.images], **_budget_arguments(budget)}
        keys = [(image_key(image), budget["min_pixels"], budget["max_pixels"]) for image in kwargs["images"]]
    try:
        inputs = processor(text=[text], return_tensors="pt", **kwargs)
    except ValueError as exc:
        raise ImageInputError(f"The images could not be prepared for the model: {exc}") from exc
    for unused in ("token_type_ids", "mm_token_type_ids"):
        inputs.pop(unused, None)
    if inputs["input_ids"].shape[1] > MAX_PROMPT_TOKENS:
        raise PromptTooLongError(
            f"The prompt is {inputs['input_ids'].shape[1]:,} tokens, more than the {MAX_PROMPT_TOKENS:,} this runtime "
            "reads in one call. Send less text, fewer images or a smaller image budget."
        )
    image_token_id = runtime.model.config.image_token_id
    spans = find_image_spans(inputs["input_ids"][0].tolist(), image_token_id, keys)
    return inputs.to(runtime.engine.device), spans


def fit_for_model(image):
    """The image padded (white) to at least ``MIN_SIDE`` pixels a side and at most ``MAX_ASPECT``:1: a 1x1 px
    or a 10000x10 px image is read rather than refused by the processor."""
    from PIL import Image

    width, height = image.size
    new_width = max(width, MIN_SIDE, -(-height // MAX_ASPECT))
    new_height = max(height, MIN_SIDE, -(-width // MAX_ASPECT))
    if (new_width, new_height) == (width, height):
        return image
    padded = Image.new("RGB", (new_width, new_height), "white")
    padded.paste(image, (0, 0))
    return padded


def _budget_arguments(budget: dict[str, int]) -> dict[str, Any]:
    """The pixel budget as the installed processor takes it: transformers 5 reads a per-call ``size`` (and
    deprecates ``min_pixels``/``max_pixels``), 4.57 reads only ``min_pixels``/``max_pixels``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"images_kwargs": {"size": {"shortest_edge": budget["min_pixels"], "longest_edge": budget["max_pixels"]}}}
    return dict(budget)


class Stopped(Exception):
    """Raised by an engine that noticed, between two pieces of work, that the generation is to stop."""


class _Run:
    """One generation in a worker thread, with a streamer and the reasons it may stop early."""

    def __init__(self, runtime, inputs, spans, settings: GenerationSettings, prompt_length: int, started: float,
                 deadline: float | None = None, outside=None, constraint=None):
        from transformers import TextIteratorStreamer

        self.runtime = runtime
        self.inputs = inputs
        self.spans = spans
        self.settings = settings
        self.prompt_length = prompt_length
        self.started = started
        self.deadline = deadline
        self.outside = outside  # the request's cancel signal
        self.times = StepTimes()
        self.cancel = threading.Event()
        self.timed_out = False
        self.repeated = False
        self.output_tokens = 0
        self.error: BaseException | None = None
        self.stopped_by_sequence = False
        self.constraint = constraint  # the grammar's, when the reply is constrained
        self.last_token: int | None = None
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
        if self.constraint is not None and self.last_token in self.constraint.env.end_ids:
            return "stop"  # the grammar completed the reply within its budget: it is whole
        return "length" if self.output_tokens >= settings.max_new_tokens else "stop"

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
            self.last_token = int(output[0, -1]) if self.output_tokens else None
        except Stopped:
            self.streamer.end()
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
            self.streamer.end()
        finally:
            self._on_end()

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
        if settings.repetition_penalty:
            kwargs["repetition_penalty"] = settings.repetition_penalty
        hooks = [hook(self.prompt_length) for hook in self.runtime.logits_hooks]
        if self.constraint is not None and not any(hooks):  # a scripted reply wins over the grammar
            from .constrain import ConstraintLogitsProcessor

            # The last token is kept for the end token, so a reply the grammar completes ends as a whole one.
            hooks = [ConstraintLogitsProcessor(self.constraint, self.prompt_length, settings.max_new_tokens - 1)]
        if any(hooks):
            kwargs["logits_processor"] = LogitsProcessorList([h for h in hooks if h is not None])
        return kwargs


class _StopWhen:
    """Stops generation when the run should stop (cancel, time limit) or the reply loops."""

    def __init__(self, run: _Run):
        self.run = run

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        run = self.run
        if run.times.first_token_seconds is None:
            run.times.first_token_seconds = time.monotonic() - run.started
        stop = run.should_stop()
        if not stop and run.settings.repetition_guard:
            tail = input_ids[0, max(run.prompt_length, input_ids.shape[1] - REPEAT_WINDOW) :].tolist()
            if repeats_a_cycle(tail):
                run.repeated = stop = True
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


REPEAT_WINDOW = 128
MIN_REPEATED_TOKENS = 48
MAX_CYCLE = 32


def repeats_a_cycle(tokens: list[int]) -> bool:
    """Whether ``tokens`` end in the same cycle of at most ``MAX_CYCLE`` tokens, repeated over the last
    ``MIN_REPEATED_TOKENS`` tokens (and at least four times)."""
    for cycle in range(1, MAX_CYCLE + 1):
        span = max(MIN_REPEATED_TOKENS, 4 * cycle)
        if len(tokens) < span:
            break
        window = tokens[-span:]
        if window[cycle:] == window[:-cycle]:
            return True
    return False


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
