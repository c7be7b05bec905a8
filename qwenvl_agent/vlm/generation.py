"""The one path from a prompt to the engine: build inputs, generate in a worker thread, stream text.

Everything that touches generation goes through ``stream``, so the gate, stop sequences, the time limit,
cancellation, the grammar and the caches behave the same for every caller and on every engine. The parts
live in modules of their own and are importable from here too: ``settings`` (what a generation is given
and reports), ``inputs`` (the processor), ``run`` (the worker thread), ``stopping`` (stop sequences and the
repetition guard), ``decode`` (the decode loop both engines run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from . import bridge, cancel
from .constrain import ConstraintError
from .errors import GenerationError
from .inputs import MAX_ASPECT, MAX_PROMPT_TOKENS, MIN_SIDE, _budget_arguments, build_inputs, fit_for_model
from .run import GenerationRun, start_constraint
from .settings import DEFAULT_MAX_IMAGE_TOKENS, GenerationSettings, GenerationStats, Prompt, StepTimes
from .stopping import (
    MAX_CYCLE,
    MIN_REPEATED_TOKENS,
    REPEAT_WINDOW,
    Stopped,
    repeats_a_cycle,
    until_stop,
)

__all__ = [
    "DEFAULT_MAX_IMAGE_TOKENS", "MAX_ASPECT", "MAX_CYCLE", "MAX_PROMPT_TOKENS", "MIN_REPEATED_TOKENS", "MIN_SIDE",
    "REPEAT_WINDOW", "GenerationSettings", "GenerationStats", "Prompt", "StepTimes", "Stopped", "_budget_arguments",
    "build_inputs", "fit_for_model", "repeats_a_cycle", "stream",
]

log = logging.getLogger(__name__)


def stream(runtime, prompt: Prompt, settings: GenerationSettings) -> Iterator[str | GenerationStats]:
    """Yield the reply's text as it is generated, then one ``GenerationStats``.

    Waits for the runtime's gate (``BusyError`` when the queue is full). Closing the iterator early, or
    setting the request's cancel signal (``cancel.cancel_scope``), stops the generation and frees the
    gate; the time limit covers the wait, the image preparation, the prefill and the decoding. With
    ``settings.grammar`` every token follows it (``ConstraintError`` at once when ``max_new_tokens`` is too
    small for any complete reply).
    """
    deadline = settings.deadline
    if deadline is None and settings.time_limit:
        deadline = time.monotonic() + settings.time_limit
    outside = cancel.current()
    gate = runtime.gate
    gate.enter(deadline, outside)
    try:
        started = time.monotonic()
        constraint = start_constraint(runtime, prompt, settings)
        inputs, spans = build_inputs(runtime, prompt, settings)
        prompt_length = int(inputs["input_ids"].shape[1])
        run = GenerationRun(runtime, inputs, spans, settings, prompt_length, started, deadline, outside, constraint)
    except BaseException:
        gate.leave()
        raise
    # The worker leaves the gate when it ends: a worker that is slow to stop keeps the model busy, rather
    # than running beside the next caller's generation.
    run.start(on_end=gate.leave)
    try:
        yield from until_stop(run, settings.stop)
    finally:
        run.cancel.set()
        run.thread.join(bridge.JOIN_SECONDS)
        if run.thread.is_alive():
            log.warning(
                "The generation did not stop within %.0f s of being asked; the model stays busy until it does.",
                bridge.JOIN_SECONDS,
            )
    if isinstance(run.error, ConstraintError):
        raise run.error
    if run.error is not None:
        raise GenerationError(f"Generation failed: {type(run.error).__name__}: {run.error}") from run.error
    yield GenerationStats(
        input_tokens=prompt_length,
        output_tokens=run.output_tokens,
        finish_reason=run.finish_reason(settings),
        seconds=time.monotonic() - started,
        times=run.times,
        decode_steps=run.times.decode_steps,
        forced_tokens=run.times.forced_tokens,
    )
