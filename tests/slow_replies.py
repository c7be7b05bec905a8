"""Scripted replies that take their time: answers long and slow enough to act on the page while they stream."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

from qwenvl_agent.vlm.testing import scripted_replies


def story(lines: int, which: str = "") -> str:
    """A reply of numbered sentences ("Line 1 of the first story. …"): no cycle for the repetition guard to
    cut, and easy to check in full."""
    name = f"the {which} story" if which else "the story"
    return " ".join(f"Line {number} of {name}." for number in range(1, lines + 1))


class _Pause:
    """A logits processor that only waits: one token every ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, input_ids, scores):
        time.sleep(self.seconds)
        return scores


@contextlib.contextmanager
def slow_replies(runtime, texts: Sequence[str], seconds_per_token: float) -> Iterator[list[str]]:
    """``scripted_replies``, with every generation of ``runtime`` writing one token per ``seconds_per_token``."""

    def hook(prompt_length: int) -> _Pause:
        return _Pause(seconds_per_token)

    with scripted_replies(runtime, texts) as left:
        runtime.logits_hooks.append(hook)
        try:
            yield left
        finally:
            runtime.logits_hooks.remove(hook)


@contextlib.contextmanager
def another_request(gate, seconds: float) -> Iterator[None]:
    """Another session's generation, holding the model's gate for ``seconds`` from now (in a thread of its own)."""
    holding = threading.Event()

    def hold() -> None:
        with gate.hold():
            holding.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, name="another-request")
    thread.start()
    holding.wait()
    try:
        yield
    finally:
        thread.join()
