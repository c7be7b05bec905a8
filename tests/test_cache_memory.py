"""The caches' bounds bound memory: what the caches account for is every byte their entries keep alive (whole
buffers behind views, KV state copies, the token ids of a kept prompt), so the total never passes the bound."""

from __future__ import annotations

import array
import sys

import numpy as np
import torch
from langchain_core.messages import HumanMessage
from PIL import Image

from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.reuse import ImageSpan, PrefixCache, PrefixEntry, VisionCache
from qwenvl_agent.vlm.testing import make_tiny_checkpoint


def held(value, seen: set | None = None) -> int:
    """Bytes of memory ``value`` keeps alive, measured from the objects themselves: a tensor's whole storage, an
    array's whole base buffer (each once), a list of token ids with its int objects, an array's buffer."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(value, np.ndarray):
        root = value
        while isinstance(root.base, np.ndarray):
            root = root.base
        address = root.__array_interface__["data"][0]
        if address in seen:
            return 0
        seen.add(address)
        return root.nbytes
    if isinstance(value, array.array):
        return value.itemsize * len(value)
    if isinstance(value, PrefixEntry):
        return held(value.tokens, seen) + held(value.kv, seen)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return sys.getsizeof(value) + sum(sys.getsizeof(v) for v in value if not -5 <= v <= 256)
    if isinstance(value, (list, tuple)):
        return sum(held(v, seen) for v in value)
    if hasattr(value, "layers"):  # a transformers KV cache
        return sum(held(layer.keys, seen) + held(layer.values, seen) for layer in value.layers)
    return 0


def noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8))


def test_the_caches_account_for_what_their_entries_hold_and_stay_within_their_bounds(tmp_path, engine):
    model = str(make_tiny_checkpoint(tmp_path / "model"))
    llm = ChatQwenVL(model=model, engine=engine, max_tokens=3, vision_cache_mb=0.04, prefix_cache_mb=0.04)
    runtime = llm.runtime
    vision, prefix = runtime.vision_cache, runtime.prefix_cache
    for call in range(6):
        text = "What is in the picture? " * (call + 1)
        llm.invoke([HumanMessage(content=[{"type": "image", "image": noise(call)}, {"type": "text", "text": text}])])
        vision_held = sum(held(value) for _, value in vision.items())
        prefix_held = sum(held(entry) for _, entry in prefix._lru.items())
        assert vision.bytes == vision_held and prefix.bytes == prefix_held
        assert vision_held <= vision.max_bytes and prefix_held <= prefix.max_bytes
    assert len(vision) >= 1 and len(prefix) >= 1  # the caches were in use, and evicted to stay in bounds


def test_a_view_keeps_its_whole_buffer_so_the_cache_keeps_a_compact_copy():
    cache = VisionCache(max_mb=1)
    merged, deep = torch.zeros(4096, 64), torch.ones(4096, 64)  # 1 MB each
    cache.put("a", (merged[:16], (deep[:16, :],)))
    kept = cache.lookup("a")
    assert cache.bytes == held(kept) == 2 * 16 * 64 * 4
    assert torch.equal(kept[0], merged[:16])
    prefixes = PrefixCache(max_mb=1)
    state = np.zeros((1, 2, 4096, 16), dtype=np.float16)
    prefixes.add(PrefixEntry([1, 2, 3], (ImageSpan(1, 2, "x"),), [state[:, :, :3], state[:, :, :3].copy()]))
    (_, entry), = prefixes._lru.items()
    assert prefixes.bytes == held(entry) == 2 * (2 * 3 * 16 * 2) + 3 * entry.tokens.itemsize
