"""Loading: dtype choice, one copy of the weights, lazy construction, and clear errors when unavailable."""

from __future__ import annotations

import threading
import time

import pytest

from qwenvl_agent.vlm import ChatQwenVL, ModelNotAvailableError, load_runtime, resolve_dtype
from qwenvl_agent.vlm import runtime as runtime_module


def test_auto_dtype_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(runtime_module, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(runtime_module, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(runtime_module, "_cpu_flags", lambda: {"avx2", "fma"})
    assert resolve_dtype("auto") == "float32"
    assert resolve_dtype("float32") == "float32" and resolve_dtype("bf16") == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float8")


def test_runtime_is_loaded_once_and_shared(tiny_model):
    first, second = ChatQwenVL(model=tiny_model, engine="torch"), ChatQwenVL(model=tiny_model, engine="torch", temperature=0.5)
    assert first.runtime is second.runtime
    assert first.runtime is load_runtime(tiny_model, engine="torch")
    assert first.runtime.dtype == resolve_dtype("auto")
    assert str(first.runtime.model.dtype) == f"torch.{first.runtime.dtype}"
    assert first.runtime.model.config._attn_implementation == "sdpa"


def test_forced_float32_is_a_separate_runtime(tiny_model):
    fp32 = ChatQwenVL(model=tiny_model, engine="torch", dtype="float32", max_tokens=3)
    assert str(fp32.runtime.model.dtype) == "torch.float32"
    assert fp32.runtime is not load_runtime(tiny_model, dtype="bfloat16", engine="torch")
    assert fp32.invoke("hi").usage_metadata["output_tokens"] <= 3


def test_concurrent_first_use_loads_one_copy(tiny_model, tmp_path):
    from qwenvl_agent.vlm.testing import make_tiny_checkpoint

    path = str(make_tiny_checkpoint(tmp_path / "copy"))
    found = []
    threads = [threading.Thread(target=lambda: found.append(load_runtime(path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in found}) == 1


def test_construction_never_loads_weights(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("weights loaded at construction")

    monkeypatch.setattr(runtime_module, "_load", fail)
    start = time.perf_counter()
    for _ in range(20):
        ChatQwenVL(model="Qwen/Qwen3-VL-2B-Instruct", temperature=0, max_tokens=100, timeout=60)
    assert time.perf_counter() - start < 1.0


def test_unknown_hub_id_offline_names_the_model_cache_and_command():
    llm = ChatQwenVL(model="qwenvl-agent-tests/no-such-model")
    with pytest.raises(ModelNotAvailableError) as info:
        llm.invoke("hello")
    message = str(info.value)
    assert "qwenvl-agent-tests/no-such-model" in message
    assert "qwenvl download qwenvl-agent-tests/no-such-model" in message
    assert "HF_HUB_OFFLINE" in message
    from huggingface_hub import constants

    assert constants.HF_HUB_CACHE in message


def test_missing_folder_and_folder_without_checkpoint(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="No model folder"):
        load_runtime(str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        load_runtime(str(tmp_path))


def test_a_runtime_says_what_its_weights_are_stored_as_and_what_it_computes_in(tiny_model):
    runtime = load_runtime(tiny_model, engine="torch", dtype="float32")
    assert runtime.precision == "float32" and str(runtime.model.dtype) == "torch.float32"
    assert runtime.weights == "float32" and runtime.dtype == "float32"  # torch keeps the weights as it computes
