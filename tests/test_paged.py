"""The OpenVINO engine's language model with paged attention: its KV cache is blocks the engine owns, a kept
prefix goes back into them (or is still there), and they grow as prompts need, all without changing a reply."""

from __future__ import annotations

import threading

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.openvino_export import openvino_available

pytestmark = pytest.mark.skipif(not openvino_available(), reason="the OpenVINO engine needs qwenvl-agent[openvino]")

SYSTEM = SystemMessage("You read invoices and answer in one sentence. " * 12)
FIRST = [SYSTEM, HumanMessage("What is the total of the invoice? It lists screws, hinges and a drill.")]
SECOND = FIRST + [AIMessage("The total is 1,234.56 dollars."), HumanMessage("And when is it due? Say the day.")]
OTHER = [HumanMessage("Something else entirely: name three colours of the rainbow, then count to ten.")]


@pytest.fixture
def llm(tiny_model):
    model = ChatQwenVL(model=tiny_model, engine="openvino", max_tokens=12)
    if not model.runtime.engine.kv_format.startswith("paged"):
        pytest.skip("this OpenVINO has no paged attention")
    return model


def reply(llm, messages, **switches):
    message = llm.invoke(messages, **switches)
    return message.content, {**message.response_metadata["timings"], "input_tokens": message.usage_metadata["input_tokens"]}


def test_a_continued_prompt_reads_only_its_new_tokens_and_replies_as_a_fresh_one(llm):
    llm.runtime.prefix_cache.clear()
    fresh, _ = reply(llm, SECOND, reuse_prefix=False)
    reply(llm, FIRST)
    continued, timings = reply(llm, SECOND)
    assert timings["reused_tokens"] > 0 and timings["prefill_tokens"] < timings["input_tokens"] - timings["reused_tokens"] + 2
    assert continued == fresh


def test_a_kept_prefix_goes_back_into_blocks_another_prompt_has_overwritten(llm):
    llm.runtime.prefix_cache.clear()
    fresh, _ = reply(llm, SECOND, reuse_prefix=False)
    reply(llm, FIRST)
    reply(llm, OTHER)  # writes its own tokens over the first prompt's blocks
    restored, timings = reply(llm, SECOND)
    assert timings["reused_tokens"] > 0
    assert restored == fresh


def test_the_blocks_grow_and_keep_what_they_hold(llm):
    request = llm.runtime.engine._paged
    llm.runtime.prefix_cache.clear()
    reply(llm, FIRST)
    expected, _ = reply(llm, SECOND)
    llm.runtime.prefix_cache.clear()
    reply(llm, FIRST)
    before = request._blocks
    request._grow(before * 2)  # as a longer prompt would: new tensors, the old blocks copied over
    grown, timings = reply(llm, SECOND)
    assert request._blocks == before * 2 and timings["reused_tokens"] > 0
    assert grown == expected


def test_a_prefix_saved_by_the_stateful_model_is_not_put_back_into_paged_blocks(llm):
    from qwenvl_agent.vlm.warm import prefix_key

    tokens = [1, 2, 3]
    engine = llm.runtime.engine
    paged = prefix_key(llm.runtime, tokens)
    engine._paged, saved = None, engine._paged
    try:
        stateful = prefix_key(llm.runtime, tokens)
    finally:
        engine._paged = saved
    assert paged != stateful


def test_a_kept_prefix_is_copied_out_of_the_blocks_only_when_a_call_writes_over_it_and_whole(llm, monkeypatch):
    import time

    import numpy as np

    engine, request = llm.runtime.engine, llm.runtime.engine._paged
    llm.runtime.prefix_cache.clear()
    fresh, _ = reply(llm, SECOND, reuse_prefix=False)
    copy_out = request._copy_out
    copies = []

    def slow(*args):
        copies.append(threading.current_thread().name)
        time.sleep(0.5)  # still copying when the next call would start writing the blocks
        copy_out(*args)

    monkeypatch.setattr(request, "_copy_out", slow)
    reply(llm, FIRST)
    kept = engine._live
    assert copies == [] and request._pending is not None  # the reply came back with no copy made
    reply(llm, OTHER, reuse_prefix=False)  # writes its tokens over the first prompt's blocks, after the copy
    assert copies == ["kv-read"]  # made in the background, beside the call's start
    monkeypatch.setattr(request, "_copy_out", copy_out)
    llm.runtime.prefix_cache.clear()
    reply(llm, FIRST)
    engine.settle()
    again = engine._live
    assert len(again.tokens) == len(kept.tokens)
    assert all(np.array_equal(a, b) for a, b in zip(kept.kv, again.kv))  # what the blocks held after the first prompt
    llm.runtime.prefix_cache.clear()
    llm.runtime.prefix_cache.add(kept)
    restored, timings = reply(llm, SECOND)
    assert timings["reused_tokens"] > 0 and restored == fresh


def test_the_next_prompt_continuing_all_the_last_one_held_needs_no_copy_of_it(llm, monkeypatch):
    from qwenvl_agent.vlm.testing import scripted_replies

    engine, request = llm.runtime.engine, llm.runtime.engine._paged
    llm.runtime.prefix_cache.clear()
    fresh, _ = reply(llm, SECOND, reuse_prefix=False)
    again, _ = reply(llm, SECOND + [AIMessage(fresh), HumanMessage("Thanks.")], reuse_prefix=False)
    copy_out = request._copy_out
    copied = []
    monkeypatch.setattr(request, "_copy_out", lambda *args: (copied.append(args[2]), copy_out(*args)))
    with scripted_replies(llm.runtime, [SECOND[2].content]):
        reply(llm, FIRST)  # the reply SECOND quotes: SECOND continues every token the blocks hold
    first = engine._live
    continued, timings = reply(llm, SECOND)
    assert timings["reused_tokens"] == len(first.tokens) and continued == fresh
    assert copied == []  # the first prompt's state was never copied out ...
    assert all(kept is not first for _, kept in llm.runtime.prefix_cache._lru.items())  # ... nor is it kept
    reply(llm, OTHER, reuse_prefix=False)  # over the blocks: the second prompt's state is copied out first
    assert copied == [len(engine._uncopied.tokens)]
    third, timings = reply(llm, SECOND + [AIMessage(fresh), HumanMessage("Thanks.")])
    assert timings["reused_tokens"] > len(first.tokens) and third == again
