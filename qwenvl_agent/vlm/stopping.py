"""Why a generation stops before its token budget: stop sequences in the streamed text, a reply that keeps
repeating a short cycle of tokens, and the run's own stop signal (cancel, time limit)."""

from __future__ import annotations

import time
from collections.abc import Iterator

REPEAT_WINDOW = 128
MIN_REPEATED_TOKENS = 48
MAX_CYCLE = 32


class Stopped(Exception):
    """Raised by an engine that noticed, between two pieces of work, that the generation is to stop."""


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


class StopWhen:
    """A stopping criterion (transformers' protocol, asked after each decode step): the run should stop
    (cancel, time limit) or the reply loops. Notes the time of the first token too."""

    def __init__(self, run):
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
                run.repeated = True
                constraint = getattr(run, "constraint", None)
                if constraint is not None and constraint.phase == "grammar" and not constraint.done:
                    constraint.close_within(0)  # inside a constrained value: close it, so the reply still parses
                else:
                    stop = True
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def until_stop(run, stop: tuple[str, ...]) -> Iterator[str]:
    """Pass the run's streamed text through, cutting it before the first stop sequence (and stopping the run)."""
    stop = tuple(s for s in stop if s)
    if not stop:
        yield from (piece for piece in run.streamer if piece)
        return
    hold = max(len(s) for s in stop) - 1
    buffer = ""
    for piece in run.streamer:
        buffer += piece
        cut = first_stop(buffer, stop)
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


def first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    positions = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(positions) if positions else None
