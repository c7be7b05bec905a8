"""The OpenVINO language model with paged attention: its KV cache in blocks this code owns.

The exported language model is stateful: OpenVINO keeps its KV cache inside the infer request, and the CPU
plugin reads new tokens after a kept state 2.5-2.7 times slower per token than a prompt from the start
(docs/PERFORMANCE.md). OpenVINO's own ``paged_attention_transformation`` (what OpenVINO GenAI's pipelines
apply) turns the model's attention into paged attention: the cache becomes ``key_cache.N`` / ``value_cache.N``
inputs of blocks of tokens, and a call says which blocks hold its sequence and how many tokens are already in
them. Continuing a prompt is then as fast as reading one, and putting a kept prefix back is a copy into the
blocks.

``PagedRequest`` stands in for the stateful model's infer request, so optimum-intel's ``forward`` (text
embeddings, images, positions) drives it unchanged: it turns each call's inputs into the paged model's (one
sequence, its blocks in order, the tokens already held taken from the attention mask's length) and grows the
blocks as a prompt needs them. ``read`` and ``restore`` move a prefix between the blocks and the engine's
prefix cache, in the stateful layout (``[1, heads, tokens, head size]`` per cache input).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

# Blocks allocated at first: room for this many tokens (about 0.45 GB for Qwen3-VL-2B); doubled as needed.
INITIAL_TOKENS = 4096
# The paged model's input saying for how many of the last positions it computes the logits.
LOGITS_COUNT = "logits_count"


def available() -> bool:
    """Whether this OpenVINO has the paged-attention transformation."""
    try:
        from openvino._offline_transformations import paged_attention_transformation  # noqa: F401
    except ImportError:
        return False
    return True


def to_paged(model: Any) -> None:
    """Turn the stateful language model (an ``ov.Model``) into the paged one, in place, computing the
    vocabulary's logits for the last ``logits_count`` positions only (a new input: 1 while reading a prompt,
    more while checking a speculative draft; the paged model lays tokens along the first axis)."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino._offline_transformations import paged_attention_transformation

    paged_attention_transformation(model)
    head = model.output("logits").get_node().input_value(0).get_node()
    if head.get_type_name() != "MatMul":
        return
    count = ops.parameter([1], ov.Type.i64, name=LOGITS_COUNT)
    count.output(0).get_tensor().set_names({LOGITS_COUNT})
    big = np.iinfo(np.int64).max
    last = ops.slice(head.input_value(0), ops.negative(count), np.array([big], np.int64),
                     np.array([1], np.int64), np.array([0], np.int64))
    head.input(0).replace_source_output(last.output(0))
    model.add_parameters([count])
    model.validate_nodes_and_infer_types()


class PagedRequest:
    """The paged language model's infer request, called as the stateful one is (see the module's text)."""

    def __init__(self, request: Any):
        self._request = request
        compiled = request.get_compiled_model()
        self._caches = [port for port in compiled.inputs if "cache." in port.get_any_name()]
        self.block = self._caches[0].get_partial_shape()[2].get_length()
        self._blocks = 0
        self._inputs: dict[str, Any] = {}
        # Logits for this many of the call's last positions (an engine checking a draft sets it for one call).
        self.logits_count = 1
        self._counted = any(LOGITS_COUNT in port.get_names() for port in compiled.inputs)
        self._pending: tuple | None = None  # a ``read`` whose copy is not made yet: (blocks, arrays, tokens)
        self._copying: threading.Thread | None = None  # that copy, running
        self._copy_failed: Exception | None = None
        self._grow(math.ceil(INITIAL_TOKENS / self.block))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    # What optimum-intel and the engine call on a stateful request.
    def reset_state(self) -> None:
        """Nothing to reset: each call says how many tokens of the blocks it continues."""

    def query_state(self) -> list:
        return []

    def start_async(self, inputs: Any = None, userdata: Any = None, share_inputs: bool = False) -> None:
        # Held until the next call: with shared inputs the inference reads these arrays while it runs.
        self._inputs = self._paged_inputs(inputs)
        self._settle_before_writing(int(self._inputs["past_lens"][0]))
        self._request.start_async(self._inputs, userdata, share_inputs=share_inputs)

    def infer(self, inputs: Any = None, share_inputs: bool = False) -> Any:
        self._inputs = self._paged_inputs(inputs)
        self._settle_before_writing(int(self._inputs["past_lens"][0]))
        return self._request.infer(self._inputs, share_inputs=share_inputs)

    @property
    def kv_format(self) -> str:
        """How ``read`` lays out what it returns: kept prefixes of another format are not put back here."""
        return f"paged-{self._caches[0].get_element_type().get_type_name()}"

    # Prefixes in and out.
    def read(self, length: int, later: bool = False) -> list[np.ndarray]:
        """A copy of the first ``length`` tokens' keys and values, per cache input ``[1, heads, length, size]``.

        ``later``: the arrays come back at once, to be filled from the blocks only when needed (0.23 GB at 2,000
        tokens, a few tenths of a second on two cores): in a background thread once a call is about to write over
        those tokens (``start_copy``), before any call or ``restore`` writes there, or at ``settle``. A
        conversation's next prompt continues all the blocks hold, so its turn needs no copy at all
        (``drop_pending``)."""
        self.settle()
        blocks = [self._request.get_tensor(port.get_any_name()).data for port in self._caches]
        states = [np.empty((1, b.shape[1], length, b.shape[3]), dtype=b.dtype) for b in blocks]
        if later:
            self._pending = (blocks, states, length)
        else:
            self._copy_out(blocks, states, length)
        return states

    def start_copy(self, start: int) -> None:
        """A call will write the blocks from token ``start`` on: start a pending copy of tokens it would write
        over, in a background thread (it runs while the images are read); the writing waits for it."""
        if self._pending is not None and self._copying is None and start < self._pending[2]:
            self._copying = threading.Thread(target=self._copy_out, args=self._pending, daemon=True, name="kv-read")
            self._copying.start()

    def drop_pending(self) -> bool:
        """Forget a copy not started (nothing wrote over its tokens: the next kept prefix holds them too); True if
        there was one, whose arrays stay unfilled."""
        if self._pending is None or self._copying is not None:
            return False
        self._pending = None
        return True

    def settle(self) -> None:
        """Have the pending copy made: waited for where it runs, else made now. Raises what went wrong in it."""
        pending, copying = self._pending, self._copying
        self._pending = self._copying = None
        if copying is not None:
            copying.join()
        elif pending is not None:
            self._copy_out(*pending)
        failed, self._copy_failed = self._copy_failed, None
        if failed is not None:
            raise RuntimeError(f"Copying a prefix out of the KV blocks failed: {failed}") from failed

    def _settle_before_writing(self, start: int) -> None:
        if self._pending is not None and start < self._pending[2]:
            self.settle()

    def _copy_out(self, blocks: list[np.ndarray], states: list[np.ndarray], length: int) -> None:
        full, rest = divmod(length, self.block)
        try:
            for source, state in zip(blocks, states):  # source: [blocks, heads, block, size]
                _by_block(state[0], full, self.block)[...] = source[:full].transpose(1, 0, 2, 3)
                if rest:
                    state[0, :, full * self.block :] = source[full, :, :rest]
        except Exception as exc:  # noqa: BLE001 - raised again by ``settle``, in the caller's thread
            self._copy_failed = exc

    def restore(self, states: list[np.ndarray], length: int) -> None:
        """Put the first ``length`` tokens of ``states`` (from ``read``) back into the blocks."""
        self.settle()
        full, rest = divmod(length, self.block)
        self._ensure(length)
        for port, state in zip(self._caches, states):
            blocks = self._request.get_tensor(port.get_any_name()).data
            blocks[:full] = _by_block(state[0], full, self.block).transpose(1, 0, 2, 3)
            if rest:
                blocks[full, :, :rest] = state[0, :, full * self.block : length]

    # Inside.
    def _paged_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        embeds = _numpy(inputs["inputs_embeds"])
        count = embeds.shape[1]
        total = int(_numpy(inputs["attention_mask"]).shape[1])
        self._ensure(total)
        used = math.ceil(total / self.block)
        positions = _numpy(inputs["position_ids"])
        paged = {
            "inputs_embeds": embeds.reshape(count, embeds.shape[2]),
            "position_ids": positions.reshape(positions.shape[0], count),
            "max_context_len": np.array(total, dtype=np.int32),
            "past_lens": np.array([total - count], dtype=np.int32),
            "subsequence_begins": np.array([0, count], dtype=np.int32),
            "block_indices_begins": np.array([0, used], dtype=np.int32),
            "block_indices": np.arange(used, dtype=np.int32),
        }
        if self._counted:
            paged[LOGITS_COUNT] = np.array([min(self.logits_count, count)], dtype=np.int64)
        for name in ("visual_pos_masks", "deepstack_visual_embeds"):
            if name in inputs:
                paged[name] = _numpy(inputs[name])
        return paged

    def _ensure(self, tokens: int) -> None:
        needed = math.ceil(tokens / self.block)
        if needed > self._blocks:
            self._grow(max(needed, 2 * self._blocks))

    def _grow(self, blocks: int) -> None:
        """Room for ``blocks`` blocks, keeping what the blocks held."""
        import openvino as ov

        self.settle()
        for port in self._caches:
            name = port.get_any_name()
            shape = [blocks] + [d.get_length() for d in list(port.get_partial_shape())[1:]]
            tensor = ov.Tensor(port.get_element_type(), shape)
            if self._blocks:
                tensor.data[: self._blocks] = self._request.get_tensor(name).data[: self._blocks]
            self._request.set_tensor(name, tensor)
        self._blocks = blocks


def _by_block(tokens: np.ndarray, full: int, block: int) -> np.ndarray:
    """The first ``full`` blocks of ``tokens`` (``[heads, tokens, size]``) as ``[heads, full, block, size]``: a view
    of the same memory, so that writing into it writes ``tokens``."""
    return tokens[:, : full * block].reshape(tokens.shape[0], full, block, tokens.shape[2])


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
