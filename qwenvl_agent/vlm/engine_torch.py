"""The torch engine: ``Qwen3VLForConditionalGeneration`` with the vision cache and prompt-prefix reuse.

The prompt is prefilled here rather than inside ``generate``: images are encoded one at a time, each
through the vision cache; only the tokens after the longest reusable prefix go through the language
model; and the multimodal rotary positions are computed for the whole sequence, since an image shifts
the positions of everything after it. ``generate`` then continues from the filled KV cache with the
prompt's last token, so sampling, logits processors, stopping criteria and the streamer work as usual.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from .decode import decode
from .positions import mrope_positions
from .reuse import ImageSpan, PrefixCache, PrefixEntry, VisionCache

# Prompt tokens per language-model call while prefilling: between two chunks a cancelled or timed-out
# request is noticed, instead of after the whole prompt (a 2,000-token prompt takes tens of seconds).
PREFILL_CHUNK = 512


class TorchEngine:
    """Runs generation on a loaded transformers model."""

    name = "torch"

    def __init__(self, model: Any, vision_cache: VisionCache, prefix_cache: PrefixCache):
        self.model = model
        self.vision_cache = vision_cache
        self.prefix_cache = prefix_cache
        config = model.config
        self.image_token_id = config.image_token_id
        self.merge = config.vision_config.spatial_merge_size
        # transformers 5 renamed generate's ``past_key_values`` to ``cache``.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @property
    def device(self):
        return self.model.device

    @property
    def precision(self) -> str:
        return str(self.model.dtype).replace("torch.", "")

    def generate(self, inputs, spans: list[ImageSpan], settings, kwargs: dict[str, Any], times, should_stop=lambda: False) -> Any:
        """``model.generate`` over ``inputs`` (the processor's output), reusing what the caches hold.
        ``should_stop`` is asked between images and prefill chunks; when it says so, ``Stopped`` is raised."""
        import torch

        ids = inputs["input_ids"]
        length = int(ids.shape[1])
        tokens = ids[0].tolist()
        kv, reused = None, 0
        if settings.reuse_prefix:
            entry, reused = self.prefix_cache.match(tokens, spans, limit=length - 1)
            if entry is not None and reused:
                kv = self._copy_kv(entry.kv, reused)
        if kv is None:
            kv, reused = self._new_kv(), 0
        times.reused_tokens = reused
        positions, delta = mrope_positions(length, spans, inputs.get("image_grid_thw"), self.merge)
        if reused < length - 1:
            self._prefill(inputs, spans, reused, length - 1, positions, kv, settings, times, should_stop)
        logits = self._step(ids[:, -1:], kv, delta)
        output = decode(
            lambda tokens, count=1: self._step(tokens, kv, delta, count),
            ids,
            logits,
            kwargs,
            times,
            self._end_ids(),
            lambda count: kv.crop(-count),  # a negative count: drop that many (either transformers)
        )
        if settings.reuse_prefix:
            kept = kv.get_seq_length()
            self.prefix_cache.add(PrefixEntry(output[0, :kept].tolist(), tuple(spans), kv))
        return output

    def _step(self, tokens, kv, delta: int, count: int = 1):
        """One pass of the language model over ``tokens`` (text, after what ``kv`` holds); the logits of the last
        ``count`` positions, ``[count, vocabulary]``."""
        import torch

        start = kv.get_seq_length()
        text_positions = torch.arange(start, start + tokens.shape[1], device=self.device)[None]
        position_ids = torch.cat([text_positions, (text_positions + delta).expand(3, -1)])[:, None, :]
        output = self.model.model.language_model(
            inputs_embeds=self.model.get_input_embeddings()(tokens),
            position_ids=position_ids,
            use_cache=True,
            **{self._cache_arg: kv},
        )
        return self.model.lm_head(output.last_hidden_state[0, -count:, :]).float()

    def _end_ids(self) -> list[int]:
        end = self.model.generation_config.eos_token_id
        return end if isinstance(end, list) else [] if end is None else [end]

    def _prefill(self, inputs, spans, start: int, end: int, positions, kv, settings, times, should_stop) -> None:
        """Run the language model over tokens ``start:end``, filling ``kv``, a chunk at a time."""
        import torch

        from .stopping import Stopped

        new_ids = inputs["input_ids"][:, start:end]
        embeds = self.model.get_input_embeddings()(new_ids)
        visual_mask, deepstack = new_ids == self.image_token_id, None
        new_images = [(index, span) for index, span in enumerate(spans) if span.start >= start]
        if new_images:
            features = []
            for index, span in new_images:
                if should_stop():
                    raise Stopped
                features.append(self._image_features(inputs, index, span, settings, times))
            embeds = embeds.clone()
            embeds[visual_mask] = torch.cat([merged for merged, _ in features]).to(embeds.dtype)
            layers = len(features[0][1])
            deepstack = [torch.cat([deep[layer] for _, deep in features]).to(embeds.dtype) for layer in range(layers)]
        text_positions = torch.arange(start, end, device=self.device)[None]
        position_ids = torch.cat([text_positions, positions[:, start:end].to(self.device)])[:, None, :]
        visual_before = 0
        for first in range(0, end - start, PREFILL_CHUNK):
            if should_stop():
                raise Stopped
            chunk = slice(first, min(first + PREFILL_CHUNK, end - start))
            mask = visual_mask[:, chunk]
            visual = int(mask.sum())
            started = time.perf_counter()
            self.model.model.language_model(
                inputs_embeds=embeds[:, chunk],
                position_ids=position_ids[:, :, chunk],
                use_cache=True,
                visual_pos_masks=mask if visual else None,
                deepstack_visual_embeds=[d[visual_before : visual_before + visual] for d in deepstack] if visual else None,
                **{self._cache_arg: kv},
            )
            visual_before += visual
            times.prefill_seconds += time.perf_counter() - started
            times.prefill_tokens += chunk.stop - chunk.start

    def _image_features(self, inputs, index: int, span: ImageSpan, settings, times):
        """(merged features, deepstack features) of image ``index``, from the cache or the vision tower."""
        cached = self.vision_cache.lookup(span.key) if settings.cache_images else None
        if cached is not None:
            times.images_cached += 1
            return cached
        grids = inputs["image_grid_thw"]
        rows = grids.prod(-1).tolist()
        first = sum(rows[:index])
        pixels = inputs["pixel_values"][first : first + rows[index]]
        started = time.perf_counter()
        visual = self.model.model.visual
        output = visual(pixels.to(visual.dtype), grid_thw=grids[index : index + 1])
        if isinstance(output, tuple):  # transformers 4.57 returns (merged, deepstack)
            merged, deepstack = output[0], output[1]
        else:
            merged, deepstack = output.pooler_output, output.deepstack_features
        features = (merged, tuple(deepstack))
        times.vision_seconds += time.perf_counter() - started
        times.images_encoded += 1
        if settings.cache_images:
            self.vision_cache.put(span.key, features)
        return features

    def _new_kv(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _copy_kv(self, source, length: int):
        """A new KV cache holding the first ``length`` positions of ``source``. ``source`` stays untouched: a
        dynamic cache grows by concatenation, which copies, and never writes into the tensors it was given."""
        kv = self._new_kv()
        for layer, (keys, values) in enumerate(_kv_tensors(source)):
            kv.update(keys[:, :, :length], values[:, :, :length], layer)
        return kv


def _kv_tensors(kv) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in kv.layers]

