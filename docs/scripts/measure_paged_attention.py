"""Continued prefill on OpenVINO: the OpenVINO engine's stateful language model (``QWENVL_PAGED=0``) against the
same IR turned into a paged-attention model (OpenVINO's own ``paged_attention_transformation``, as OpenVINO GenAI's pipelines use it)
and driven from Python with one sequence's block table.

Run alone (it is a timing), in the OpenVINO environment: ``python docs/scripts/measure_paged_attention.py``.
Uses the benchmark's full-size random-weight checkpoint exported to int4 (``qwenvl bench`` builds both); text
only, random embeddings (the compute of a prompt does not depend on its words). For each model: a fresh prompt of
3,000 and of 1,700 tokens, 1,300 tokens continued after 1,700 kept, the planner's answer call of the bench (485
after 1,558), and decoding at 3,000 tokens of context. Both compute the vocabulary's logits for the last position
only, with the engine's compile options.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from qwenvl_agent.bench.checkpoint import random_checkpoint
from qwenvl_agent.bench.machine import machine_facts
from qwenvl_agent.vlm.runtime import load_runtime

CASES = [("fresh", 3000, 0), ("fresh", 1700, 0), ("continue", 1300, 1700), ("continue", 485, 1558)]
HIDDEN = 2048


def stateful(runtime):
    """A forward over ``new`` tokens after ``past`` held ones on the engine's own stateful model."""
    engine = runtime.engine
    engine.model.rope_deltas = torch.tensor([[0]])
    rng = torch.Generator().manual_seed(0)

    def run(new: int, past: int) -> float:
        if past == 0:
            engine._restore(None, 0)
        ids = torch.randint(1000, 150000, (1, new), generator=rng)
        positions = torch.arange(past, past + new).view(1, 1, -1).expand(3, 1, -1)
        started = time.perf_counter()
        engine._forward(ids, past + new, positions, past > 0, {}, [], None, None)
        return time.perf_counter() - started

    return run


def paged(ir_xml: str, config: dict[str, str]):
    """The same, on the IR with paged attention: the KV cache is blocks in tensors this code owns, so a kept
    prefix is continued by saying how long it is (``past_lens``)."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino._offline_transformations import paged_attention_transformation

    core = ov.Core()
    model = core.read_model(ir_xml)
    paged_attention_transformation(model)
    head = model.output("logits").get_node().input_value(0).get_node()  # the MatMul with the vocabulary
    last = ops.slice(head.input_value(0), np.array([-1], np.int64), np.array([np.iinfo(np.int64).max], np.int64),
                     np.array([1], np.int64), np.array([0], np.int64))  # tokens are the first axis here
    head.input(0).replace_source_output(last.output(0))
    model.validate_nodes_and_infer_types()
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    caches = [port.get_any_name() for port in compiled.inputs if "cache." in port.get_any_name()]
    block = compiled.input("key_cache.0").get_partial_shape()[2].get_length()
    blocks = math.ceil(8192 / block)
    for name in caches:
        port = compiled.input(name)
        shape = [blocks] + [d.get_length() for d in list(port.get_partial_shape())[1:]]
        request.set_tensor(name, ov.Tensor(port.get_element_type(), shape))
    print(f"paged: {len(caches) // 2} layers, blocks of {block} tokens, cache {compiled.input('key_cache.0').get_element_type()}")
    rng = np.random.default_rng(0)

    def run(new: int, past: int) -> float:
        total = past + new
        used = math.ceil(total / block)
        inputs = {
            "inputs_embeds": (rng.standard_normal((new, HIDDEN)) * 0.02).astype(np.float32),
            "position_ids": np.tile(np.arange(past, total, dtype=np.int64), (3, 1)),
            "visual_pos_masks": np.zeros((1, new), dtype=bool),
            "deepstack_visual_embeds": np.zeros((3, new, HIDDEN), dtype=np.float32),
            "max_context_len": np.array(total, dtype=np.int32),
            "past_lens": np.array([past], dtype=np.int32),
            "subsequence_begins": np.array([0, new], dtype=np.int32),
            "block_indices_begins": np.array([0, used], dtype=np.int32),
            "block_indices": np.arange(used, dtype=np.int32),
        }
        started = time.perf_counter()
        request.infer(inputs)
        return time.perf_counter() - started

    return run


def measure(name: str, run) -> None:
    run(200, 0)  # the first inference sets up its kernels
    for kind, new, past in CASES:
        if past:
            run(past, 0)  # the kept prefix
        seconds = run(new, past)
        print(f"{name:9s} {kind:8s} {new:5d} after {past:5d}: {seconds:6.2f} s = {new / seconds:6.1f} tok/s", flush=True)
    run(3000, 0)
    started = time.perf_counter()
    for k in range(16):
        run(1, 3000 + k)
    print(f"{name:9s} decode at 3,000 tokens of context: {16 / (time.perf_counter() - started):.1f} tok/s", flush=True)


def main() -> None:
    print(machine_facts())
    from qwenvl_agent.vlm import ov_load

    ov_load.PAGED = False  # the engine's stateful model, as before paged attention (QWENVL_PAGED=0)
    runtime = load_runtime(random_checkpoint(), engine="openvino", weights="int4")
    measure("stateful", stateful(runtime))
    folder = runtime.path  # the int4 IR
    config = {"PERFORMANCE_HINT": "LATENCY", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "128", "KV_CACHE_PRECISION": "f16",
              "INFERENCE_PRECISION_HINT": "bf16"}
    del runtime
    measure("paged", paged(f"{folder}/openvino_language_model.xml", config))


if __name__ == "__main__":
    main()
