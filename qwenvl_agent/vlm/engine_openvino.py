"""The OpenVINO engine: optimum-intel's ``OVModelForVisualCausalLM`` over an IR with int8 or int4 weights.

The processor, chat template, gate, streaming, stop sequences, logits processors and tool-call forcing are
the same as on the torch engine. Images go through the vision cache one at a time.

The language model runs with paged attention (``paged.py``): its KV cache is blocks of tokens the engine
owns, and a call says how many tokens of them it continues. (Where OpenVINO lacks the transformation, or
with ``QWENVL_PAGED=0``, it stays stateful: the cache lives inside the infer request.) To reuse a prompt's
prefix the engine drives the model itself: the blocks still hold the last prompt, or the state of a recent
prompt is put back cut to the shared prefix (a copy kept after each call); it prefills only what follows
through the model's own ``forward`` (positions computed for the whole prompt), then decodes in the shared
decode loop (``decode.py``): one pass per token, and several tokens in one pass where a grammar forces them
(jump-forward), as the prefill of a continued prefix does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .decode import decode
from .paged import PagedRequest
from .positions import mrope_positions
from .reuse import ImageSpan, PrefixCache, PrefixEntry, VisionCache

log = logging.getLogger(__name__)

# OpenVINO's CPU plugin reads prompt tokens after a kept KV cache about 2.2 times slower per token than a
# prompt from the start (measured on the 2B model: 12 ms against 5.3 ms a token on two Zen 4 cores), so a
# kept prefix is worth restoring only when it covers more than this share of the prompt.
CONTINUE_SHARE = 0.55
# While the images and the prompt are read, how often (in milliseconds) a running inference looks at the
# stop signal: a vision pass or a prefill of a long prompt takes seconds to minutes on a CPU.
STOP_POLL_MS = 50
_STOPPABLE_PARTS = ("language_model", "vision_embeddings", "vision_embeddings_merger", "vision_embeddings_pos")


class OpenVINOEngine:
    """Runs generation on a compiled OpenVINO model."""

    name = "openvino"

    def __init__(self, model: Any, vision_cache: VisionCache, prefix_cache: PrefixCache, weights: str):
        self.model = model
        self.vision_cache = vision_cache
        self.prefix_cache = prefix_cache
        self.weights = weights
        self.merge = model.config.vision_config.spatial_merge_size
        self._images: tuple[list[ImageSpan], Any, Any] | None = None
        self._live: PrefixEntry | None = None  # the kept entry whose tokens the paged blocks still hold
        self._uncopied: PrefixEntry | None = None  # the last entry kept, its copy out of the blocks maybe not made
        self._encode = model.get_vision_embeddings
        request = model.language_model.request
        self._paged = request if isinstance(request, PagedRequest) else None
        # Paged attention continues a kept prefix as fast as it reads a prompt: any shared prefix pays.
        self._continue_share = 0.0 if self._paged is not None else CONTINUE_SHARE
        # The model asks its own get_image_features for the images of a prompt; answer from the cache.
        model.get_image_features = self._image_features
        # While the prompt is read, every inference of these parts can be stopped (see _StoppableRequest).
        self._should_stop: Any = _never
        for name in _STOPPABLE_PARTS:
            part = getattr(model, name, None)
            if part is not None and getattr(part, "request", None) is not None:
                part.request = _StoppableRequest(part.request, lambda: self._should_stop())

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def precision(self) -> str:
        return self.weights

    @property
    def kv_format(self) -> str:
        """The layout and precision of the KV states this engine keeps (a saved prefix is for one format)."""
        return self._paged.kv_format if self._paged is not None else "states-f16"

    def generate(self, inputs, spans: list[ImageSpan], settings, kwargs: dict[str, Any], times, should_stop=lambda: False) -> Any:
        """Prefill (after the longest reusable prefix) and decode; returns the prompt and reply token ids."""
        import torch

        from .stopping import Stopped

        ids = inputs["input_ids"]
        length = int(ids.shape[1])
        tokens = ids[0].tolist()
        entry, reused = (None, 0)
        if settings.reuse_prefix:
            entry, reused = self.prefix_cache.match(tokens, spans, limit=length - 1)
            if reused < self._continue_share * length:
                entry, reused = None, 0  # cheaper to read the whole prompt afresh
        if should_stop():
            raise Stopped
        if self._paged is not None:  # the last kept prefix, copied beside the images if this call writes over it
            self._paged.start_copy(reused if entry is not None and entry is self._live else 0)
        self._restore(entry, reused)
        self._live = None  # from here the blocks hold this prompt
        times.reused_tokens = reused
        positions, delta = mrope_positions(length, spans, inputs.get("image_grid_thw"), self.merge)
        self.model.rope_deltas = torch.tensor([[delta]])
        new = [(index, span) for index, span in enumerate(spans) if span.start >= reused]
        started = time.perf_counter()
        vision_before = times.vision_seconds
        self._should_stop = should_stop
        try:
            logits = self._forward(
                ids[:, reused:], length, positions[:, None, reused:], reused > 0, inputs, new, settings, times
            )
        finally:
            self._should_stop = _never
        times.prefill_seconds += time.perf_counter() - started - (times.vision_seconds - vision_before)
        times.prefill_tokens += length - reused
        held = [length]

        def step(tokens, count: int = 1):
            logits = self._step(tokens, held[0], delta, count)
            held[0] += tokens.shape[1]
            return logits

        def rollback(count: int) -> None:  # the blocks past the tokens held are written over by the next call
            held[0] -= count
            self.model.language_model._past_length -= count

        # Only paged attention takes back tokens for free (a stateful model would copy its whole state out and in).
        output = decode(step, ids, logits, kwargs, times, self._end_ids(), rollback if self._paged is not None else None)
        if settings.reuse_prefix:
            self._remember(output, spans)
        return output

    def hold(self, tokens: list[int]) -> None:
        """Put the kept KV state that begins with ``tokens`` (no images) into the paged blocks now, so that a prompt
        starting with them goes on from the blocks instead of copying them in first (0.3-0.5 s for a planner's
        1,400 tokens). Called with the model free."""
        if self._paged is None:
            return
        entry, length = self.prefix_cache.match(tokens, (), limit=len(tokens))
        if entry is None or entry is self._live or length < len(tokens):
            return
        self._restore(entry, len(entry.tokens))  # a copy the blocks' last prefix still wants is made first (settle)
        self._live = entry

    def settle(self) -> None:
        """Have the KV state the last call kept copied out of the paged blocks (made only when needed)."""
        if self._paged is not None:
            self._paged.settle()

    def _restore(self, entry, length: int) -> None:
        """The language model's KV state: empty, or a kept one cut to its first ``length`` positions."""
        import numpy as np
        import openvino as ov

        language = self.model.language_model
        language.request.reset_state()
        language.next_beam_idx = np.arange(1, dtype=int)
        language._past_length = 0
        if entry is None or not length:
            return
        if self._paged is not None:
            if entry is not self._live:  # the blocks hold the entry last remembered: nothing to copy
                self._paged.restore(entry.kv, length)
            language._past_length = length
            return
        for state, kept in zip(language.request.query_state(), entry.kv):
            state.state = ov.Tensor(np.ascontiguousarray(kept[:, :, :length]))  # half precision, as kept
        language._past_length = length

    def _forward(self, new_ids, length: int, positions, continuing: bool, inputs, new_images, settings, times):
        """One pass of the model over ``new_ids`` (the images among them included); the last logits."""
        import torch

        pixels, grids, rows = None, None, inputs.get("image_grid_thw")
        if new_images:
            counts = rows.prod(-1).tolist()
            starts = [sum(counts[:index]) for index in range(len(counts))]
            pixels = torch.cat([inputs["pixel_values"][starts[i] : starts[i] + counts[i]] for i, _ in new_images])
            grids = rows[[i for i, _ in new_images]]
        self._images = ([span for _, span in new_images], settings, times)
        try:
            output = self.model.forward(
                input_ids=new_ids,
                pixel_values=pixels,
                image_grid_thw=grids,
                attention_mask=torch.ones((1, length), dtype=torch.long),
                position_ids=positions,
                past_key_values=((),) if continuing else None,
            )
        finally:
            self._images = None
        return output.logits[:, -1, :]

    def _step(self, tokens, length: int, delta: int, logits: int = 1):
        """One pass of the language model over ``tokens`` (text, after the ``length`` tokens the state holds,
        the images among them); the logits of the last ``logits`` positions, ``[logits, vocabulary]`` (more
        than one on the paged model only)."""
        import torch

        count = tokens.shape[1]
        position = (torch.arange(length, length + count, dtype=torch.long) + delta).view(1, 1, count).expand(3, 1, count)
        if self._paged is not None:
            self._paged.logits_count = logits
        try:
            output = self.model.forward(
                input_ids=tokens,
                attention_mask=torch.ones((1, length + count), dtype=torch.long),
                position_ids=position,
                past_key_values=((),),
            )
        finally:
            if self._paged is not None:
                self._paged.logits_count = 1
        rows = output.logits.reshape(-1, output.logits.shape[-1])
        return rows[-logits:]

    def _end_ids(self) -> list[int]:
        end = self.model.generation_config.eos_token_id
        return end if isinstance(end, list) else [] if end is None else [end]

    def _remember(self, output, spans: list[ImageSpan]) -> None:
        """Keep a copy of the KV state and what it holds, for later prompts that share its prefix."""
        import numpy as np

        language = self.model.language_model
        held = language._past_length
        if self._paged is not None:
            # The blocks' own 16-bit values, copied only once a call is to write over them (paged.read). Where the
            # last kept prefix was never copied, this call continued all of it: it is of no more use.
            if self._paged.drop_pending() and self._uncopied is not None:
                self.prefix_cache.discard(self._uncopied)
            kv = self._paged.read(held, later=True)
        else:
            # Kept in half precision, as the model holds it (the state reads out as float32).
            kv = [state.state.data.astype(np.float16) for state in language.request.query_state()]
        self._live = self.prefix_cache.add(PrefixEntry(output[0, :held].tolist(), tuple(spans), kv))
        self._uncopied = self._live if self._paged is not None else None

    def _image_features(self, pixel_values, image_grid_thw):
        """Per-image merged features and the deepstack features of all images, as optimum-intel expects
        them, encoding each image alone (the vision tower's attention never crosses images)."""
        import torch

        spans, settings, times = self._images or ([], None, None)
        rows = image_grid_thw.prod(-1).tolist()
        merged, deepstack, first = [], [], 0
        for index, count in enumerate(rows):
            key = spans[index].key if index < len(spans) else None
            use_cache = key is not None and settings is not None and settings.cache_images
            features = self.vision_cache.lookup(key) if use_cache else None
            if features is None:
                started = time.perf_counter()
                pixels = pixel_values[first : first + count]
                embeds, deep = self._encode(pixels, image_grid_thw[index : index + 1])
                features = (torch.from_numpy(embeds), torch.from_numpy(deep))
                if times is not None:
                    times.vision_seconds += time.perf_counter() - started
                    times.images_encoded += 1
                if use_cache:
                    self.vision_cache.put(key, features)
            elif times is not None:
                times.images_cached += 1
            merged.append(features[0])
            deepstack.append(features[1])
            first += count
        # A tensor, not the nested Python list optimum-intel builds: the language model takes either, and
        # the list costs seconds for a large image.
        return tuple(merged), torch.cat(deepstack, dim=1)


def _never() -> bool:
    return False


class _StoppableRequest:
    """Stands in for a model part's infer request (the language model) or compiled model (the vision parts):
    each inference runs asynchronously and is waited for in steps of ``STOP_POLL_MS``, and once
    ``should_stop`` says so it is cancelled and ``Stopped`` raised, instead of reading a long prompt or a
    large image to the end. Everything else passes through to the wrapped object."""

    def __init__(self, wrapped: Any, should_stop):
        self._wrapped = wrapped
        self._should_stop = should_stop
        self._request: Any = None  # the compiled model's own infer request, made on first use

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def __call__(self, inputs: Any = None, share_inputs: bool = True, **_: Any):
        """A compiled model called as a function: the outputs, copied out of the request's buffers."""
        from openvino.utils.data_helpers import OVDict

        if self._request is None:
            self._request = self._wrapped.create_infer_request()
        self._start(self._request, inputs, share_inputs)
        self._wait(self._request)
        return OVDict({output: self._request.get_tensor(output).data.copy() for output in self._request.model_outputs})

    def start_async(self, inputs: Any = None, userdata: Any = None, share_inputs: bool = False) -> None:
        self._start(self._wrapped, inputs, share_inputs, userdata)

    def wait(self) -> None:
        self._wait(self._wrapped)

    def _start(self, request, inputs, share_inputs: bool, userdata: Any = None) -> None:
        from .stopping import Stopped

        if self._should_stop():
            raise Stopped
        request.start_async(inputs, userdata, share_inputs=share_inputs)

    def _wait(self, request) -> None:
        from .stopping import Stopped

        while not request.wait_for(STOP_POLL_MS):
            if self._should_stop():
                request.cancel()
                try:
                    request.wait()
                except RuntimeError:  # "Infer Request was canceled"
                    pass
                raise Stopped
