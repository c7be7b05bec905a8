"""Speed of the runtime on a full-size Qwen3-VL-2B-shaped model with random weights (same compute as the
real one): time to first token with one image, decode speed, and peak memory, per dtype.

    python benchmarks/bench_cpu.py --dtype bfloat16 float32 --image-tokens 256 1024 --new-tokens 32

The processor (tokenizer, image processor, chat template) comes from the tiny test checkpoint; the model
has the real 2B shapes, so the vision tower and the language model do the real amount of work.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from qwenvl_agent.vlm.gate import GenerationGate
from qwenvl_agent.vlm.generation import GenerationSettings, Prompt, stream
from qwenvl_agent.vlm.runtime import VLMRuntime, physical_cores
from qwenvl_agent.vlm.testing import make_tiny_checkpoint


def full_size_config(tiny_config) -> Qwen3VLConfig:
    """Qwen3-VL-2B-Instruct's shapes, with the tiny tokenizer's special-token ids."""
    text = dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, rms_norm_eps=1e-6, hidden_act="silu",
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    )
    vision = dict(
        depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16, spatial_merge_size=2,
        temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304, hidden_act="gelu_pytorch_tanh",
        deepstack_visual_indexes=[5, 11, 17],
    )
    return Qwen3VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True,
        image_token_id=tiny_config.image_token_id, video_token_id=tiny_config.video_token_id,
        vision_start_token_id=tiny_config.vision_start_token_id, vision_end_token_id=tiny_config.vision_end_token_id,
    )


def page(size=(1240, 1754)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row in range(40):
        draw.text((60, 60 + row * 40), f"Line {row}: invoice item {row * 7} total {row * 13.5:.2f}", fill="black")
    return image


def run_once(runtime: VLMRuntime, image_tokens: int, new_tokens: int):
    prompt = Prompt(
        messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read it."}]}],
        images=[page()],
    )
    settings = GenerationSettings(max_new_tokens=new_tokens, max_image_tokens=image_tokens, min_image_tokens=image_tokens // 2)
    start = time.perf_counter()
    stats = [item for item in stream(runtime, prompt, settings) if not isinstance(item, str)][-1]
    return time.perf_counter() - start, stats


def measure(runtime: VLMRuntime, image_tokens: int, new_tokens: int) -> dict[str, float]:
    """Time to first token = a one-token generation (image encoding + prefill); decode speed = the extra
    tokens of a longer generation over the extra time they took."""
    ttft, stats = run_once(runtime, image_tokens, 1)
    total, long_stats = run_once(runtime, image_tokens, new_tokens)
    extra = long_stats.output_tokens - 1
    decode = extra / (total - ttft) if extra > 0 and total > ttft else float("nan")
    return {"ttft_s": ttft, "decode_tok_s": decode, "input_tokens": stats.input_tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--image-tokens", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(physical_cores())
    with tempfile.TemporaryDirectory() as folder:
        tiny = make_tiny_checkpoint(folder)
        processor = AutoProcessor.from_pretrained(tiny)
        config = full_size_config(Qwen3VLForConditionalGeneration.from_pretrained(tiny).config)
    print(f"threads={torch.get_num_threads()}")
    for dtype in args.dtype:
        torch.manual_seed(0)
        started = time.perf_counter()
        model = Qwen3VLForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
        model.config._attn_implementation = "sdpa"
        print(f"[{dtype}] built {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters in {time.perf_counter() - started:.0f}s")
        runtime = VLMRuntime(model, processor, "full-size-random", None, dtype, tiny, GenerationGate())
        measure(runtime, 64, 2)  # warm-up
        for tokens in args.image_tokens:
            result = measure(runtime, tokens, args.new_tokens)
            print(f"[{dtype}] image budget {tokens:5d} tokens: input {result['input_tokens']} tokens, "
                  f"time to first token {result['ttft_s']:.2f}s, decode {result['decode_tok_s']:.1f} tokens/s")
        del model, runtime
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
