"""One generation at a time per model, a bounded queue behind it, and ``BusyError`` beyond that.

A CPU runs one generation at full speed; two at once only split the cores and double the memory. So
callers queue, and the queue is short: past ``max_waiting`` callers the next is refused at once instead
of piling up requests (and memory) that would time out anyway.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .errors import BusyError


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
    def hold(self) -> Iterator[None]:
        """Run the block alone: wait in the queue if there is room, else raise ``BusyError`` at once."""
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
                        self._condition.wait()
                finally:
                    self._waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify()
