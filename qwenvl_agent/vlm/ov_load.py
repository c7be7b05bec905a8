"""Loading the OpenVINO IR for the engine: the compile settings, the edits to the language model's graph (paged
attention, logits for the last positions only) and to the vision tower's (vision_graph.py), OpenVINO's
compiled-model cache beside the IR."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import EngineError
from .ir import check_model_type
from .openvino_export import cache_root, require_openvino
from .paged import PagedRequest, to_paged
from .paged import available as paged_available
from .vision_graph import simplify_vision_tower

log = logging.getLogger(__name__)

# The language model runs with paged attention (paged.py) where OpenVINO has it: 1.3x faster on a fresh prompt
# and 2.7x on a continued one than the stateful model (docs/PERFORMANCE.md). QWENVL_PAGED=0 keeps it stateful.
PAGED = os.environ.get("QWENVL_PAGED", "1") != "0"

# The language model's precision where none is asked for ("auto"). int8/int4 weights decode faster in float32, where
# OpenVINO quantizes the activations to int8, than in bfloat16 (a 2-core Xeon with AMX: 83 against 109 ms a token
# at 2,600 tokens, 103 against 164 ms for a pass over 4 drafted tokens) at a prefill 1.3x slower; the seed question
# took 30.6 s against 37.7 s (docs/PERFORMANCE.md). The vision tower keeps the CPU's default (bfloat16 with AMX).
LANGUAGE_MODEL_AUTO = "float32"


def load_openvino_model(ir_path: Path, precision: str, num_threads: int | None, language: str = "auto") -> Any:
    """Compile the IR in ``ir_path`` for the CPU, with OpenVINO's compiled-model cache beside it: the language model
    in ``language`` ("auto": ``LANGUAGE_MODEL_AUTO``), the rest in ``precision``."""
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
        # Half precision rather than the default u8: a KV cache kept for prompt-prefix reuse and put back must
        # give the same replies as one computed afresh, which the u8 compression does not.
        "KV_CACHE_PRECISION": "f16",
    }
    if num_threads:
        ov_config["INFERENCE_NUM_THREADS"] = str(num_threads)
    hint = {"bfloat16": "bf16", "float32": "f32"}
    if precision in hint:
        ov_config["INFERENCE_PRECISION_HINT"] = hint[precision]
    try:
        model = OVModelForVisualCausalLM.from_pretrained(ir_path, device="CPU", ov_config=ov_config, compile=False)
        language_hint = hint[LANGUAGE_MODEL_AUTO if language == "auto" else language]
        model.language_model.ov_config["INFERENCE_PRECISION_HINT"] = language_hint
        use_paged = PAGED and paged_available()
        if use_paged:
            to_paged(model.language_model.model)
        else:
            keep_last_logits(model.language_model.model)
        simplify_vision_tower(model)
        model.compile()
        if use_paged:
            model.language_model.request = PagedRequest(model.language_model.request)
        _release_graphs(model)
        return model
    except Exception as exc:  # a damaged or incompatible IR: name the folder and the way out
        raise EngineError(
            f"Could not load the OpenVINO IR in {ir_path}: {type(exc).__name__}: {str(exc)[:300]}. Delete that folder "
            "to export it again, or use engine='torch'."
        ) from exc


def _release_graphs(model) -> None:
    """Drop the uncompiled graphs once every part is compiled. Their weights are mapped from the IR files
    and were read while compiling; kept, they stay in memory beside the compiled model's own copy."""
    import gc

    for component in model.components.values():
        for name in ("model", "text_emb_model"):
            if getattr(component, name, None) is not None and getattr(component, "request", None) is not None:
                setattr(component, name, None)
    gc.collect()


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
