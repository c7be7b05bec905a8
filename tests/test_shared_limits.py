"""Settings that belong to the shared loaded model (cache sizes, queue length, threads): applied once, when
they change, never flipped back and forth by callers that disagree; a disagreement is reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from langchain_core.messages import HumanMessage
from PIL import Image

from qwenvl_agent.vlm import ChatQwenVL, load_runtime
from qwenvl_agent.vlm.openvino_export import openvino_available
from qwenvl_agent.vlm.testing import make_tiny_checkpoint


def noise(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))


def ask(llm: ChatQwenVL, seed: int) -> None:
    llm.invoke([HumanMessage(content=[{"type": "image", "image": noise(seed)}, {"type": "text", "text": "What?"}])])


@pytest.fixture(scope="module")
def own_model(tmp_path_factory) -> str:
    """A checkpoint of this module's own, so the limits set here reach no other test's runtime."""
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("limits-model")))


def test_two_chat_models_with_different_limits_do_not_flip_the_shared_copy(own_model):
    probe = ChatQwenVL(model=own_model, engine="torch", max_tokens=1)
    runtime = probe.runtime
    ask(probe, 0)
    one_image = runtime.vision_cache.bytes  # the features of one 96x96 picture
    assert one_image > 0
    shared = {"model": own_model, "engine": "torch", "max_tokens": 1}
    small = ChatQwenVL(**shared, max_waiting=1, vision_cache_mb=1.5 * one_image / 2**20)
    large = ChatQwenVL(**shared, max_waiting=2, vision_cache_mb=8 * one_image / 2**20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ask(small, 1)
        assert len(runtime.vision_cache) == 1  # the smaller bound applied: the probe's picture made room
        ask(large, 2)  # disagrees with small: the last given applies, and the disagreement is told
        bound = runtime.vision_cache.max_bytes
        assert bound == int(8 * one_image) and runtime.gate.max_waiting == 2
        for seed in range(3, 9):
            ask(small if seed % 2 else large, seed)
            assert runtime.vision_cache.max_bytes == bound and runtime.gate.max_waiting == 2
    assert len(runtime.vision_cache) == 8, "alternating callers must not re-bound (and evict from) the cache"
    messages = [str(w.message) for w in caught]
    conflicts = [m for m in messages if "vision_cache_mb" in m]
    assert len(conflicts) == 1, messages
    assert f"{1.5 * one_image / 2**20:g}" in conflicts[0] and f"{8 * one_image / 2**20:g}" in conflicts[0]
    assert len([m for m in messages if "max_waiting" in m and "1" in m and "2" in m]) == 1, messages


def test_a_chat_model_applies_its_limits_again_when_they_change(own_model):
    llm = ChatQwenVL(model=own_model, engine="torch", max_tokens=1, max_waiting=2)
    runtime = llm.runtime
    assert runtime.gate.max_waiting == 2
    llm.max_waiting = 4
    llm.invoke("hi")
    assert runtime.gate.max_waiting == 4


def test_num_threads_other_than_the_loaded_models_is_refused_by_name(own_model):
    runtime = load_runtime(own_model, engine="torch")
    loaded = torch.get_num_threads()
    other = loaded + 1
    with pytest.raises(ValueError) as info:
        ChatQwenVL(model=own_model, engine="torch", num_threads=other, max_tokens=1).invoke("hi")
    message = str(info.value)
    assert f"num_threads={other}" in message and f"{loaded} threads" in message
    assert torch.get_num_threads() == loaded
    same = ChatQwenVL(model=own_model, engine="torch", num_threads=loaded, max_tokens=1)
    assert same.runtime is runtime and same.invoke("hi").usage_metadata["output_tokens"] <= 1


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
def test_openvino_threads_are_those_of_the_compiled_model_and_fixed(tiny_model):
    runtime = load_runtime(tiny_model, engine="openvino")
    compiled = runtime.model.language_model.request.get_compiled_model()
    assert runtime.num_threads == int(compiled.get_property("INFERENCE_NUM_THREADS")) > 0
    with pytest.raises(ValueError, match=f"num_threads={runtime.num_threads + 1} cannot apply"):
        load_runtime(tiny_model, engine="openvino", num_threads=runtime.num_threads + 1)
    assert load_runtime(tiny_model, engine="openvino", num_threads=runtime.num_threads) is runtime
