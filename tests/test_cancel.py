"""Stop when asked: a closed stream, a cancelled asyncio task, an agent run stopped or timed out each end the
running generation within moments and free the model for the next caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from documents import draw_invoice

from qwenvl_agent.agent import Answer, DocumentAssistant
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.errors import GenerationTimeout

ENDLESS = 100_000  # tokens: a generation that would run for minutes if nothing stopped it


@pytest.fixture
def llm(tiny_model):
    return ChatQwenVL(model=tiny_model, engine="torch", max_tokens=ENDLESS)


def wait_until_free(gate, seconds: float = 5.0) -> float:
    started = time.monotonic()
    while gate.busy:
        assert time.monotonic() - started < seconds, "the generation kept running"
        time.sleep(0.01)
    return time.monotonic() - started


def test_closing_a_stream_stops_the_generation(llm):
    stream = llm.stream("Write a very long story.")
    next(stream)
    assert llm.runtime.gate.busy
    stream.close()
    wait_until_free(llm.runtime.gate, 2.0)


async def cancel_once_generating(task: asyncio.Future, gate) -> None:
    """Cancel ``task`` a moment after its generation has started, and see it end cancelled."""
    while not gate.busy:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_an_async_call_stops_the_generation(llm):
    task = asyncio.ensure_future(llm.ainvoke("Write a very long story."))
    await cancel_once_generating(task, llm.runtime.gate)
    wait_until_free(llm.runtime.gate, 2.0)
    assert llm.invoke("hi", max_tokens=2).usage_metadata["output_tokens"] <= 2  # the next call runs at once


async def test_the_event_loop_stays_free_during_a_native_async_call(llm):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    clock = asyncio.ensure_future(ticker())
    await llm.ainvoke("Write something.", max_tokens=300)
    clock.cancel()
    assert ticks > 5


def test_the_time_limit_covers_waiting_for_the_model(llm):
    gate = llm.runtime.gate
    held, release = threading.Event(), threading.Event()

    def other_caller():
        with gate.hold():
            held.set()
            release.wait(10)

    threading.Thread(target=other_caller, daemon=True).start()
    held.wait(5)
    started = time.monotonic()
    try:
        with pytest.raises(GenerationTimeout, match="time limit"):
            llm.invoke("hi", timeout=0.5, max_tokens=5)
    finally:
        release.set()
    assert time.monotonic() - started < 2.0


def test_closing_the_agents_event_stream_stops_its_generation(llm):
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")
    events = assistant.stream("Tell me everything.", images=[draw_invoice()])
    for event in events:
        if llm.runtime.gate.busy:
            break
    else:
        pytest.fail("the planner never started")
    events.close()
    wait_until_free(llm.runtime.gate, 3.0)


async def test_cancelling_the_agents_task_stops_its_generation(llm):
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")
    task = asyncio.ensure_future(assistant.aask("Tell me everything.", images=[draw_invoice()]))
    await cancel_once_generating(task, llm.runtime.gate)
    wait_until_free(llm.runtime.gate, 3.0)


def test_a_cancel_event_ends_the_run_from_another_thread(llm):
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    events = list(assistant.stream("Tell me everything.", images=[draw_invoice()], cancel=cancel))
    assert time.monotonic() - started < 5.0
    assert not any(isinstance(e, Answer) and e.text and len(e.text) > 10_000 for e in events)
    wait_until_free(llm.runtime.gate, 2.0)


def test_closing_a_stream_returns_within_the_join_bound_and_the_gate_stays_held_until_the_worker_ends(llm, monkeypatch):
    from qwenvl_agent.vlm import bridge

    runtime = llm.runtime
    real_generate = runtime.engine.generate
    worker_ended = threading.Event()

    def slow_to_notice(inputs, spans, settings, kwargs, times, should_stop=lambda: False):
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Stubborn(StoppingCriteria):  # like a long engine call that cannot be interrupted: a stop is seen 2 s late
            def __call__(self, input_ids, scores, **extra):
                stop = kwargs["stopping_criteria"](input_ids, scores, **extra)
                if bool(stop.any()):
                    time.sleep(2.0)
                return stop

        try:
            return real_generate(inputs, spans, settings, {**kwargs, "stopping_criteria": StoppingCriteriaList([Stubborn()])}, times, should_stop)
        finally:
            worker_ended.set()

    monkeypatch.setattr(bridge, "JOIN_SECONDS", 0.3)
    monkeypatch.setattr(runtime.engine, "generate", slow_to_notice)
    stream = llm.stream("Write a very long story.")
    next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 1.0, "closing waited for the worker thread past the join bound"
    assert runtime.gate.busy and not worker_ended.is_set(), "the next caller must not run beside the late worker"
    wait_until_free(runtime.gate, 5.0)
    assert worker_ended.is_set()
    assert llm.invoke("hi", max_tokens=2).usage_metadata["output_tokens"] <= 2
