"""The generation gate: one generation at a time, callers served first come first served, a bounded queue
whose length is told exactly, and ``BusyError`` at once beyond it."""

from __future__ import annotations

import threading
import time

import pytest

from qwenvl_agent.vlm.errors import BusyError, GenerationCancelled, GenerationTimeout
from qwenvl_agent.vlm.gate import GenerationGate


def wait_for(condition, seconds: float = 5.0) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "timed out"
        time.sleep(0.005)


class Queue:
    """Callers started one after another behind a held gate; each records its name when it gets the gate."""

    def __init__(self, gate: GenerationGate):
        self.gate = gate
        self.served: list[str] = []
        self.errors: dict[str, BaseException] = {}
        self.threads: list[threading.Thread] = []

    def join(self, name: str, cancel: threading.Event | None = None) -> None:
        before = self.gate.waiting

        def caller():
            try:
                with self.gate.hold(cancel=cancel):
                    self.served.append(name)
                    time.sleep(0.02)  # long enough for a newcomer to try to jump in
            except BaseException as exc:  # noqa: BLE001 - checked by the test
                self.errors[name] = exc

        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        self.threads.append(thread)
        wait_for(lambda: self.gate.waiting == before + 1)  # queued before the next one comes

    def wait(self) -> None:
        for thread in self.threads:
            thread.join(10)


def test_callers_are_served_in_the_order_they_came_and_the_count_is_exact():
    gate = GenerationGate(max_waiting=5)
    queue = Queue(gate)
    release = threading.Event()

    def hold_until_released():
        with gate.hold():
            release.wait(10)

    holder = threading.Thread(target=hold_until_released, daemon=True)
    holder.start()
    wait_for(lambda: gate.busy)
    for number, name in enumerate("abcde", start=1):
        queue.join(name)
        assert gate.waiting == number
    time.sleep(0.3)  # waiters that poll would have woken and re-queued by now
    assert gate.waiting == 5
    release.set()
    queue.wait()
    assert queue.served == list("abcde") and not queue.errors
    assert gate.waiting == 0 and not gate.busy


def test_a_newcomer_cannot_take_the_gate_from_a_waiter():
    gate = GenerationGate(max_waiting=3)
    queue = Queue(gate)
    order = queue.served
    held, release = threading.Event(), threading.Event()

    def holder_then_newcomer():
        with gate.hold():
            held.set()
            release.wait(10)
        # Right after releasing, this thread asks again: the waiter came first and goes first.
        with gate.hold():
            order.append("newcomer")

    thread = threading.Thread(target=holder_then_newcomer, daemon=True)
    thread.start()
    held.wait(5)
    queue.join("waiter")
    release.set()
    thread.join(10)
    queue.wait()
    assert queue.served == ["waiter", "newcomer"]


def test_beyond_the_bound_a_caller_is_refused_at_once():
    gate = GenerationGate(max_waiting=2)
    queue = Queue(gate)
    release = threading.Event()

    def hold_until_released():
        with gate.hold():
            release.wait(10)

    threading.Thread(target=hold_until_released, daemon=True).start()
    wait_for(lambda: gate.busy)
    queue.join("a")
    queue.join("b")
    started = time.monotonic()
    with pytest.raises(BusyError, match="2 are waiting"):
        with gate.hold():
            pass
    assert time.monotonic() - started < 0.05
    release.set()
    queue.wait()
    assert queue.served == ["a", "b"]


def test_a_cancelled_waiter_leaves_the_queue_and_the_others_keep_their_places():
    gate = GenerationGate(max_waiting=3)
    queue = Queue(gate)
    release, cancel_b = threading.Event(), threading.Event()

    def hold_until_released():
        with gate.hold():
            release.wait(10)

    threading.Thread(target=hold_until_released, daemon=True).start()
    wait_for(lambda: gate.busy)
    queue.join("a")
    queue.join("b", cancel=cancel_b)
    queue.join("c")
    cancel_b.set()
    wait_for(lambda: "b" in queue.errors, 2.0)
    assert isinstance(queue.errors["b"], GenerationCancelled)
    assert gate.waiting == 2
    queue.join("d")  # the freed place can be taken, behind those already waiting
    release.set()
    queue.wait()
    assert queue.served == ["a", "c", "d"]
    assert not gate.busy and gate.waiting == 0


def test_a_waiter_that_times_out_leaves_the_queue():
    gate = GenerationGate(max_waiting=3)
    release = threading.Event()

    def hold_until_released():
        with gate.hold():
            release.wait(10)

    threading.Thread(target=hold_until_released, daemon=True).start()
    wait_for(lambda: gate.busy)
    with pytest.raises(GenerationTimeout):
        with gate.hold(deadline=time.monotonic() + 0.2):
            pass
    assert gate.waiting == 0
    release.set()
    wait_for(lambda: not gate.busy)
