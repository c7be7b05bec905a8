"""One generation at a time per model, a bounded first-come-first-served queue behind it, and ``BusyError``
beyond that.

A CPU runs one generation at full speed; two at once only split the cores and double the memory. So
callers queue, and the queue is short: past ``max_waiting`` callers the next is refused at once instead
of piling up requests (and memory) that would time out anyway. The gate passes straight from the caller
that leaves to the one that waited longest, so nobody who arrives later can take it first, and
``waiting`` is the exact number of callers ahead of a newcomer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator

from .errors import BusyError, GenerationCancelled, GenerationTimeout

# How often a waiter looks at its cancel signal (which may be several events, so it cannot be waited on).
_CANCEL_POLL = 0.05

# Generations running in this process, over every loaded model: background work that needs the cores (OCR for
# the page index) waits for none to run. Two cores shared with a decode loop slow it down twice over.
_running = threading.Condition()
_generations = 0
_idle_since = float("-inf")  # time.monotonic() when the last generation ended (none yet: idle for ever)


def idle_for() -> float:
    """Seconds since the last generation of any model of this process ended; 0 while one runs."""
    with _running:
        return 0.0 if _generations else time.monotonic() - _idle_since


def wait_until_no_generation(timeout: float) -> bool:
    """Wait until no model of this process generates, at most ``timeout`` seconds; True if none does."""
    with _running:
        return _running.wait_for(lambda: _generations == 0, timeout)


def _count(change: int) -> None:
    global _generations, _idle_since
    with _running:
        _generations += change
        if not _generations:
            _idle_since = time.monotonic()
            _running.notify_all()


def busy_error(waiting: int, limit: int) -> BusyError:
    """The one "the model is busy" refusal: ``waiting`` callers queued behind the running one, ``limit`` at most."""
    return BusyError(
        f"The model is busy: one request is running and {waiting} are waiting (the limit is {limit}). "
        "Try again in a moment."
    )


class _Ticket:
    """A waiter's place in the queue; ``granted`` is set when the gate passes to it."""

    __slots__ = ("granted",)

    def __init__(self):
        self.granted = threading.Event()


class GenerationGate:
    """A lock with a bounded first-come-first-served queue of waiters."""

    def __init__(self, max_waiting: int = 3):
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}")
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._busy = False
        self._queue: deque[_Ticket] = deque()

    @property
    def busy(self) -> bool:
        """True while a generation runs."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Callers queued behind the running generation."""
        return len(self._queue)

    @property
    def full(self) -> bool:
        """True when a newcomer would be refused: a generation runs and ``max_waiting`` callers wait."""
        return self._busy and len(self._queue) >= self.max_waiting

    def refuse_when_full(self) -> None:
        """``BusyError`` at once when a newcomer would be refused, so a caller can say so before any work for
        the request (or a streamed response) starts."""
        if self.full:
            raise busy_error(self.waiting, self.max_waiting)

    @contextlib.contextmanager
    def hold(self, deadline: float | None = None, cancel=None) -> Iterator[None]:
        """Run the block alone (see ``enter``)."""
        self.enter(deadline, cancel)
        try:
            yield
        finally:
            self.leave()

    def enter(self, deadline: float | None = None, cancel=None) -> None:
        """Take the gate: at once if it is free and nobody waits, else in turn behind those already waiting if
        there is room, else ``BusyError`` at once. The wait ends early with ``GenerationTimeout`` at
        ``deadline`` (a ``time.monotonic()`` value) and with ``GenerationCancelled`` once ``cancel`` (anything
        with ``is_set()``) is set; the waiter then leaves the queue. Every ``enter`` is paired with one ``leave``."""
        with self._lock:
            if not self._busy:
                self._busy = True
                _count(+1)
                return
            if len(self._queue) >= self.max_waiting:
                raise busy_error(len(self._queue), self.max_waiting)
            ticket = _Ticket()
            self._queue.append(ticket)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = _CANCEL_POLL if left is None else max(0.0, min(left, _CANCEL_POLL))
            if ticket.granted.wait(step):
                return
            if cancel is not None and cancel.is_set():
                self._give_up(ticket)
                raise GenerationCancelled("The request was cancelled while it waited for the model.")
            if left is not None and left <= 0:
                self._give_up(ticket)
                raise GenerationTimeout(
                    "The time limit ran out while waiting for the model: another request was running."
                )

    def leave(self) -> None:
        """Pass the gate to the longest waiter, or free it."""
        with self._lock:
            if self._queue:
                self._queue.popleft().granted.set()  # stays busy: the next caller holds it now
            else:
                self._busy = False
                _count(-1)

    def _give_up(self, ticket: _Ticket) -> None:
        with self._lock:
            if ticket in self._queue:
                self._queue.remove(ticket)
                return
        # The gate passed to this waiter just as it gave up: pass it on.
        self.leave()
