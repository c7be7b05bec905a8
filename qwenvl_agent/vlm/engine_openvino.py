"""The OpenVINO engine: optimum-intel's ``OVModelForVisualCausalLM`` over an IR with int8 or int4 weights.

It keeps transformers' ``generate`` interface, so the processor, chat template, gate, streaming, stop
sequences, logits processors and tool-call forcing are the same as on the torch engine. Images go
through the vision cache one at a time. Prompt-prefix reuse is not available here: optimum-intel's
language model keeps its KV cache inside OpenVINO's stateful model and resets it at the start of every
``generate`` (docs/PERFORMANCE.md says what reusing it would take).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import EngineError
from .openvino_export import cache_root, require_openvino
from .reuse import ImageSpan, VisionCache

log = logging.getLogger(__name__)


class OpenVINOEngine:
    """Runs generation on a compiled OpenVINO model."""

    name = "openvino"

    def __init__(self, model: Any, vision_cache: VisionCache, weights: str):
        self.model = model
        self.vision_cache = vision_cache
        self.weights = weights
        self._call: tuple[list[ImageSpan], Any, Any] | None = None
        self._encode = model.get_vision_embeddings
        # The model asks its own get_image_features for the images of a prompt; answer from the cache.
        model.get_image_features = self._image_features

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def precision(self) -> str:
        return self.weights

    def generate(self, inputs, spans: list[ImageSpan], settings, kwargs: dict[str, Any], times, should_stop=lambda: False) -> Any:
        from .generation import Stopped

        if should_stop():  # the prefill cannot be interrupted here once it starts
            raise Stopped
        self._call = (spans, settings, times)
        try:
            return self.model.generate(**inputs, **kwargs)
        finally:
            self._call = None

    def _image_features(self, pixel_values, image_grid_thw):
        """Per-image merged features and the deepstack features of all images, as optimum-intel expects
        them, encoding each image alone (the vision tower's attention never crosses images)."""
        import time

        import torch

        spans, settings, times = self._call or ([], None, None)
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


def load_openvino_model(ir_path: Path, precision: str, num_threads: int | None) -> Any:
    """Compile the IR in ``ir_path`` for the CPU, with OpenVINO's compiled-model cache beside it."""
    require_openvino()
    from optimum.intel import OVModelForVisualCausalLM

    check_model_type(ir_path)
    ov_config: dict[str, str] = {
        "PERFORMANCE_HINT": "LATENCY",
        "CACHE_DIR": str(_compile_cache(ir_path)),
        # Activations are quantised to int8 on the fly for the int8/int4 matrix products, in groups along
        # the input channels. Groups of 128 (the int4 weights' own group) prefill 1.3-1.8x faster on a
        # 2-core Zen 4 than the default 32 (docs/PERFORMANCE.md), at the same decode speed.
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": "128",
    }
    if num_threads:
        ov_config["INFERENCE_NUM_THREADS"] = str(num_threads)
    if precision in ("bfloat16", "float32"):
        ov_config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bfloat16" else "f32"
    try:
        model = OVModelForVisualCausalLM.from_pretrained(ir_path, device="CPU", ov_config=ov_config, compile=False)
        keep_last_logits(model.language_model.model)
        model.compile()
        return model
    except Exception as exc:  # a damaged or incompatible IR: name the folder and the way out
        raise EngineError(
            f"Could not load the OpenVINO IR in {ir_path}: {type(exc).__name__}: {str(exc)[:300]}. Delete that folder "
            "to export it again, or use engine='torch'."
        ) from exc


def keep_last_logits(language_model) -> None:
    """Compute the vocabulary's logits for the last position only. The exported model multiplies every
    prompt position by the 151,936 x 2048 output matrix, and ``generate`` reads the last row alone: for a
    1,000-token prompt that is a quarter of the prefill and 600 MB of logits thrown away."""
    import numpy as np
    import openvino.opset13 as ops

    result = language_model.output("logits").get_node()
    head = result.input_value(0).get_node()
    if head.get_type_name() != "MatMul":
        log.info("The IR's logits do not come straight from a MatMul; computing them for every position.")
        return
    hidden = head.input_value(0)
    last = ops.slice(
        hidden,
        np.array([-1], np.int64),
        np.array([np.iinfo(np.int64).max], np.int64),
        np.array([1], np.int64),
        np.array([1], np.int64),
    )
    head.input(0).replace_source_output(last.output(0))
    language_model.validate_nodes_and_infer_types()


def check_model_type(ir_path: Path) -> None:
    """``EngineError`` unless the IR in ``ir_path`` is of a Qwen3-VL model."""
    import json

    try:
        model_type = json.loads((ir_path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise EngineError(f"{ir_path} holds an OpenVINO IR without a readable config.json ({exc}).") from exc
    if model_type != "qwen3_vl":
        raise EngineError(
            f"{ir_path} holds an OpenVINO IR of a {model_type!r} model, not Qwen3-VL (model_type 'qwen3_vl'). "
            "Pass a Qwen3-VL checkpoint or IR, for example Qwen/Qwen3-VL-2B-Instruct."
        )


def _compile_cache(ir_path: Path) -> Path:
    """OpenVINO's compiled-model cache: beside the IR, or in our cache where that folder is read-only."""
    folder = ir_path / "compiled"
    try:
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    fallback = cache_root() / "openvino-compiled" / ir_path.resolve().name
    fallback.mkdir(parents=True, exist_ok=True)
    log.info("%s is read-only; OpenVINO's compiled-model cache goes to %s", ir_path, fallback)
    return fallback
