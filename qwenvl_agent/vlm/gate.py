"""One generation at a time per model, a bounded queue behind it, and ``BusyError`` beyond that.

A CPU runs one generation at full speed; two at once only split the cores and double the memory. So
callers queue, and the queue is short: past ``max_waiting`` callers the next is refused at once instead
of piling up requests (and memory) that would time out anyway.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from .errors import BusyError, GenerationCancelled, GenerationTimeout


class GenerationGate:
    """A lock with a bounded number of waiters."""

    def __init__(self, max_waiting: int = 3):
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}")
        self.max_waiting = max_waiting
        self._condition = threading.Condition()
        self._busy = False
        self._waiting = 0

    @property
    def busy(self) -> bool:
        """True while a generation runs."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Callers queued behind the running generation."""
        return self._waiting

    @contextlib.contextmanager
    def hold(self, deadline: float | None = None, cancel: threading.Event | None = None) -> Iterator[None]:
        """Run the block alone: wait in the queue if there is room, else raise ``BusyError`` at once. The wait
        ends early with ``GenerationTimeout`` at ``deadline`` (a ``time.monotonic()`` value) and with
        ``GenerationCancelled`` once ``cancel`` is set."""
        with self._condition:
            if self._busy:
                if self._waiting >= self.max_waiting:
                    raise BusyError(
                        f"The model is busy: one request is running and {self._waiting} are waiting "
                        f"(the limit is {self.max_waiting}). Try again in a moment."
                    )
                self._waiting += 1
                try:
                    while self._busy:
                        if cancel is not None and cancel.is_set():
                            raise GenerationCancelled("The request was cancelled while it waited for the model.")
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise GenerationTimeout(
                                "The time limit ran out while waiting for the model: another request was running."
                            )
                        self._condition.wait(min(left, 0.1) if left is not None else 0.1)
                finally:
                    self._waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify()
