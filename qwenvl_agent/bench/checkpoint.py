"""A full-size Qwen3-VL-2B-shaped checkpoint with random weights: the real model's compute, built offline.

The config has the published model's shapes (about 2.13 B parameters: vision tower 0.41 B, language
model 1.72 B) in the published file's style, so every transformers version and the OpenVINO exporter
read it. The processor is the tiny test checkpoint's, with Qwen's own tokenizer where one is at hand
(see ``tokenizer.py``). Built once into the cache (about 4.3 GB) and reused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from qwenvl_agent.vlm.openvino_export import cache_root

from .tokenizer import find_tiktoken_file, tokenizer_from_tiktoken

DONE_FILE = "qwenvl-bench-checkpoint.json"


def published_config(ids: dict[str, int]) -> dict:
    """Qwen3-VL-2B-Instruct's config.json, with the special-token ids of the tokenizer in use."""
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "rope_theta": 5000000,
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
            "attention_bias": False,
            "tie_word_embeddings": True,
            "use_cache": True,
            "initializer_range": 0.02,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "dtype": "bfloat16",
        },
        "vision_config": {
            "model_type": "qwen3_vl",
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 2048,
            "num_position_embeddings": 2304,
            "hidden_act": "gelu_pytorch_tanh",
            "deepstack_visual_indexes": [5, 11, 17],
            "initializer_range": 0.02,
        },
    }


def tokenizer_kind() -> str:
    return "qwen" if find_tiktoken_file() is not None else "tiny"


def random_checkpoint(folder: Path | None = None) -> Path:
    """The folder of the full-size random checkpoint, building it first if the cache does not hold it."""
    kind = tokenizer_kind()
    folder = folder or cache_root() / "bench" / f"qwen3-vl-2b-random-{kind}-tokenizer"
    if (folder / DONE_FILE).is_file():
        return folder
    from tqdm.auto import tqdm

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    try:
        with tqdm(total=3, desc="Random 2B checkpoint", unit="step") as bar:
            bar.set_description("Random 2B checkpoint: processor")
            ids = _write_processor(partial, kind)
            bar.update()
            bar.set_description("Random 2B checkpoint: 2.13 B random weights")
            model = _build_model(partial, ids)
            bar.update()
            bar.set_description("Random 2B checkpoint: writing 4.3 GB")
            model.save_pretrained(partial)
            del model
            # Our own file, in the published style, whatever style this transformers version writes.
            (partial / "config.json").write_text(json.dumps(published_config(ids), indent=2))
            bar.update()
        (partial / DONE_FILE).write_text(json.dumps({"tokenizer": kind, "built": time.strftime("%Y-%m-%d")}) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        partial.chmod(0o755)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _write_processor(folder: Path, kind: str) -> dict[str, int]:
    """The tiny checkpoint's processor (template, image processor), with Qwen's tokenizer if there is one."""
    from transformers import AutoProcessor

    from qwenvl_agent.vlm.testing import _build_processor, _build_tokenizer

    tokenizer = tokenizer_from_tiktoken(find_tiktoken_file()) if kind == "qwen" else _build_tokenizer(640)
    _build_processor(tokenizer).save_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    names = ["<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    return {name: processor.tokenizer.convert_tokens_to_ids(name) for name in names}


def _build_model(folder: Path, ids: dict[str, int]):
    import torch
    from transformers import AutoConfig, Qwen3VLForConditionalGeneration

    (folder / "config.json").write_text(json.dumps(published_config(ids), indent=2))
    config = AutoConfig.from_pretrained(folder)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: half the memory and time of fp32
    try:
        torch.manual_seed(0)
        model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model.eval()
