"""The one bridge from a worker thread to sync and async consumers (``vlm.bridge.WorkerRun``)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from qwenvl_agent.vlm import cancel
from qwenvl_agent.vlm.bridge import TICK, WorkerRun


class Tokens:
    """Permission to yield, one item per ``give()``; ``set()`` gives for every item from now on."""

    def __init__(self):
        self._semaphore = threading.Semaphore(0)
        self._open = threading.Event()

    def give(self, count: int = 1) -> None:
        for _ in range(count):
            self._semaphore.release()

    def set(self) -> None:
        self._open.set()

    def is_set(self) -> bool:
        return self._open.is_set()

    def wait(self, timeout: float) -> bool:
        return self._open.is_set() or self._semaphore.acquire(timeout=timeout)


def gated(items, release: Tokens, seen_cancel: list):
    """A producer that yields ``items`` one by one, each once ``release`` allows it, and records whether the
    run's cancel signal was set when it ended."""

    def produce():
        try:
            for item in items:
                while not release.wait(0.01):
                    signal = cancel.current()
                    if signal is not None and signal.is_set():
                        return
                yield item
        finally:
            signal = cancel.current()
            seen_cancel.append(bool(signal and signal.is_set()))

    return produce


def test_items_arrive_in_order_and_the_run_ends():
    release = Tokens()
    release.set()
    run = WorkerRun(gated([1, 2, 3], release, []))
    assert list(run.iterate()) == [1, 2, 3]
    assert run.wait(1) and run.done and not run.cancelled


def test_a_consumer_that_attaches_later_reads_from_its_position_and_follows_the_run():
    release, seen = Tokens(), []
    run = WorkerRun(gated(["a", "b", "c"], release, seen))
    first = run.iterate(cancel_on_exit=False)
    release.set()
    assert next(first) == "a"
    first.close()  # a page rerun interrupts the drawing: the run goes on
    assert run.wait(2) and not run.cancelled
    assert list(run.iterate(start=1)) == ["b", "c"]
    assert seen == [False]


def test_tick_when_nothing_new_came():
    release = Tokens()
    run = WorkerRun(gated(["x"], release, []))
    events = run.iterate(tick=0.01)
    assert next(events) is TICK
    release.set()
    assert [e for e in events if e is not TICK] == ["x"]


def test_leaving_early_cancels_the_run_and_its_generations_see_it():
    release, seen = Tokens(), []
    run = WorkerRun(gated(["a", "b"], release, seen))
    events = run.iterate()
    release.give()
    assert next(events) == "a"  # the producer now waits inside its work for "b", watching the cancel signal
    events.close()
    assert run.cancelled and run.wait(2)
    assert seen == [True]


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it():
    def produce():
        yield 1
        raise ValueError("broken page")

    run = WorkerRun(produce)
    got = []
    with pytest.raises(ValueError, match="broken page"):
        for item in run.iterate():
            got.append(item)
    assert got == [1]


async def test_async_consumer_keeps_the_loop_free():
    release = Tokens()
    run = WorkerRun(gated(["slow"], release, []))
    ticks = 0

    async def clock():
        nonlocal ticks
        while not release.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def consume():
        return [item async for item in run.aiterate()]

    clock_task = asyncio.create_task(clock())
    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    release.set()
    assert await consumer == ["slow"]
    await clock_task
    assert ticks >= 5  # the loop kept running while the consumer waited


async def test_cancelling_the_async_consumer_cancels_the_run():
    release, seen = Tokens(), []
    run = WorkerRun(gated(["never"], release, seen))

    async def consume():
        return [item async for item in run.aiterate()]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 2
    while not run.done and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert run.cancelled and run.done and seen == [True]
