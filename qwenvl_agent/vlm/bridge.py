"""One bridge from a worker thread to the code that consumes its results, sync or async.

Generation, agent runs and the page's answers all produce their results in a worker thread (a CPU-bound
loop must not run on an event loop or in Streamlit's script thread). ``WorkerRun`` runs such a producer
and keeps what it yields, in order, so that:

- a synchronous consumer iterates it (``iterate``), optionally waking up every ``tick`` seconds with
  ``TICK`` when nothing new came (a page redraws its clock);
- an asyncio consumer iterates it without blocking the loop (``aiterate``);
- a later consumer can attach from any position (a page rerun redraws a running answer and follows it);
- one cancellation story: ``cancel()`` sets the run's event, which every generation under it watches
  (``cancel.cancel_scope``), and the producer's iterator is closed. A consumer that leaves early cancels
  the run unless it was told the run outlives it (``cancel_on_exit=False``).

An exception raised by the producer reaches each consumer after the items yielded before it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .cancel import scoped_context

T = TypeVar("T")

TICK: Any = type("Tick", (), {"__repr__": lambda self: "TICK"})()
"""Yielded by ``iterate(tick=…)`` when no new item came within ``tick`` seconds."""

# A producer told to stop ends within a token or two; this bounds how long a consumer waits for it.
JOIN_SECONDS = 10.0


class WorkerRun(Generic[T]):
    """``produce()`` running in a daemon thread, under a cancel scope, with its items kept for consumers."""

    def __init__(self, produce: Callable[[], Iterable[T]], *, cancel: threading.Event | None = None, name: str = "qwenvl-worker"):
        self.cancel_event = cancel or threading.Event()
        self._items: list[T] = []
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._changed = threading.Condition()
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        # The producer and every thread it copies its context to see the run's cancel event.
        context = scoped_context(self.cancel_event)
        self._thread = threading.Thread(target=context.run, args=(self._pump, produce), name=name, daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        """True once the producer has ended (finished, failed or stopped)."""
        return self._done.is_set()

    @property
    def items(self) -> list[T]:
        """What the producer has yielded so far (a copy)."""
        with self._changed:
            return list(self._items)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def cancel(self, wait: float | None = 0.0) -> bool:
        """Stop the producer; wait up to ``wait`` seconds (None: ``JOIN_SECONDS``) for it to end. True if it has."""
        self.cancel_event.set()
        return self.wait(JOIN_SECONDS if wait is None else wait)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the producer has ended; True if it has."""
        return self._done.wait(timeout)

    def iterate(self, start: int = 0, *, tick: float | None = None, cancel_on_exit: bool = True) -> Iterator[T]:
        """The items from position ``start`` on, as they come; with ``tick``, ``TICK`` whenever none came for that
        long. Leaving early (closing the iterator) cancels the run unless ``cancel_on_exit`` is False."""
        index, finished = start, False
        try:
            while True:
                with self._changed:
                    if index >= len(self._items) and not self._done.is_set():
                        self._changed.wait(tick)
                    fresh = self._items[index:]
                    ended = self._done.is_set()
                if fresh:
                    index += len(fresh)
                    yield from fresh
                elif ended:
                    break
                elif tick is not None:
                    yield TICK
            finished = True
            if self._error is not None:
                raise self._error
        finally:
            if not finished and cancel_on_exit:
                self.cancel(wait=None)

    async def aiterate(self, start: int = 0, *, cancel_on_exit: bool = True) -> AsyncIterator[T]:
        """``iterate`` for asyncio: awaiting new items never blocks the event loop. Cancelling the awaiting task
        (or closing the iterator) cancels the run unless ``cancel_on_exit`` is False."""
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        waiter = (loop, arrived)
        with self._changed:
            self._async_waiters.add(waiter)
        index, finished = start, False
        try:
            while True:
                arrived.clear()
                with self._changed:
                    fresh = self._items[index:]
                    ended = self._done.is_set()
                if fresh:
                    index += len(fresh)
                    for item in fresh:
                        yield item
                elif ended:
                    break
                else:
                    await arrived.wait()
            finished = True
            if self._error is not None:
                raise self._error
        finally:
            with self._changed:
                self._async_waiters.discard(waiter)
            if not finished and cancel_on_exit:
                self.cancel_event.set()  # the producer ends on its own; the loop must not wait for it

    def _pump(self, produce: Callable[[], Iterable[T]]) -> None:
        iterator: Any = None
        try:
            iterator = iter(produce())
            for item in iterator:
                self._publish(item)
                if self.cancel_event.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to every consumer
            self._error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - a failure while stopping is still the run's failure
                    self._error = self._error or exc
            self._done.set()
            self._publish(None, item_too=False)

    def _publish(self, item: Any, item_too: bool = True) -> None:
        with self._changed:
            if item_too:
                self._items.append(item)
            self._changed.notify_all()
            waiters = list(self._async_waiters)
        for loop, arrived in waiters:
            try:
                loop.call_soon_threadsafe(arrived.set)
            except RuntimeError:  # that consumer's loop has closed
                pass
