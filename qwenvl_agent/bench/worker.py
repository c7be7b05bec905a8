"""One pipeline of the benchmark, in a process of its own: ``python -m qwenvl_agent.bench.worker SPEC``.

SPEC is JSON: ``{"pipeline": …, "checkpoint": …, "budgets": [256, 1024], "new_tokens": 24, "runs": 3,
"agent": false}``. The worker loads the pipeline, measures, and prints one line ``RESULT {json}`` last;
its own process makes its peak memory and its first call its own.

Pipelines:
- ``naive``: the seed's way: float32, the image shrunk to 512 px on its long side, plain ``generate``.
- ``torch``: this project on the torch engine (bfloat16 on this kind of CPU).
- ``openvino-int8`` / ``openvino-int4``: this project on the OpenVINO engine.
Replies are forced to exact lengths through the real model (``scripted_replies``; for ``naive``,
``min_new_tokens``), which costs what free generation costs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from PIL import Image

from ..samples import invoice_screenshot
from .common import log, peak_rss_gb, shrink_like_the_seed

QUESTIONS = [
    "What is the invoice number?",
    "Who is the buyer?",
    "What is the total amount?",
]
FILLER = (
    "The invoice lists four items: industrial sensor kits, control boards, cable assemblies and an installation "
    "service, with a subtotal, tax at thirteen and six percent, and a total payable within thirty days. "
)


def reply_of(tokenizer, tokens: int) -> str:
    """A text of about ``tokens`` tokens."""
    ids = tokenizer.encode(FILLER * (tokens // 20 + 2), add_special_tokens=False)[: max(1, tokens - 1)]
    return tokenizer.decode(ids)


class Naive:
    """The seed's pipeline on Qwen3-VL: float32 weights, 512-px images, ``model.generate`` as is."""

    def __init__(self, checkpoint: str):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()

    def ask(self, image: Image.Image, question: str, new_tokens: int, budget: int | None = None) -> dict[str, Any]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        started = time.perf_counter()
        first: list[float] = []

        class FirstToken(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                if not first:
                    first.append(time.perf_counter() - started)
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[shrink_like_the_seed(image)], return_tensors="pt")
        inputs.pop("token_type_ids", None)
        with torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                stopping_criteria=StoppingCriteriaList([FirstToken()]),
            )
        seconds = time.perf_counter() - started
        produced = int(output.shape[1] - inputs["input_ids"].shape[1])
        image_tokens = int(inputs["image_grid_thw"].prod(-1).sum() // 4)
        return _call_result(first[0], seconds, produced, int(inputs["input_ids"].shape[1]), image_tokens)


class Ours:
    """This project's ChatQwenVL on one engine, with or without reuse of earlier work."""

    def __init__(self, checkpoint: str, engine: str, weights: str = "int8"):
        from qwenvl_agent.vlm import ChatQwenVL

        self.llm = ChatQwenVL(model=checkpoint, engine=engine, weights=weights, max_tokens=2048)
        self.runtime = self.llm.runtime

    def ask(self, image: Image.Image, question: str, new_tokens: int, budget: int, reuse: bool = False) -> dict[str, Any]:
        from langchain_core.messages import HumanMessage

        from qwenvl_agent.vlm.testing import scripted_replies

        message = HumanMessage(content=[{"type": "image", "image": image}, {"type": "text", "text": question}])
        started = time.perf_counter()
        # No prompt-lookup drafts: the forced reply repeats one sentence, which drafts would mostly take, and
        # this measures the engine's own decoding (the agent runs measure drafts on realistic replies).
        with scripted_replies(self.runtime, [reply_of(self.runtime.tokenizer, new_tokens)]):
            reply = self.llm.invoke(
                [message], max_image_tokens=budget, min_image_tokens=min(budget, 64), cache_images=reuse,
                reuse_prefix=reuse, prompt_lookup_num_tokens=0,
            )
        seconds = time.perf_counter() - started
        timings = reply.response_metadata["timings"]
        usage = reply.usage_metadata
        image_tokens = budget  # at most; the page is larger than every budget measured
        result = _call_result(
            timings["first_token_seconds"], seconds, usage["output_tokens"], usage["input_tokens"], image_tokens
        )
        result.update(vision_s=timings["vision_seconds"], prefill_s=timings["prefill_seconds"], reused=timings["reused_tokens"])
        return result


def _call_result(first: float, seconds: float, produced: int, input_tokens: int, image_tokens: int) -> dict[str, Any]:
    decode = (produced - 1) / (seconds - first) if produced > 1 and seconds > first else float("nan")
    return {"ttft_s": first, "total_s": seconds, "output_tokens": produced, "input_tokens": input_tokens,
            "image_tokens": image_tokens, "decode_tok_s": decode}


def measure(pipeline: Any, budgets: list[int], new_tokens: int, runs: int, naive: bool) -> dict[str, Any]:
    image = invoice_screenshot((1536, 1536))  # 512 x 512 px (256 tokens) once shrunk the seed's way
    results: dict[str, Any] = {"budgets": {}}
    for budget in budgets:
        calls = [pipeline.ask(image, QUESTIONS[0], new_tokens, budget)]
        for _ in range(runs):
            calls.append(pipeline.ask(image, QUESTIONS[0], new_tokens, budget))
        later = calls[1:]
        results["budgets"][str(budget)] = {
            "first_ttft_s": calls[0]["ttft_s"],
            "ttft_s": statistics.median(c["ttft_s"] for c in later),
            "decode_tok_s": statistics.median(c["decode_tok_s"] for c in later),
            "input_tokens": calls[0]["input_tokens"],
            "calls": calls,
            "peak_rss_gb_so_far": peak_rss_gb(),  # the budgets run smallest first: the peak up to this budget
        }
        log(f"  budget {budget}: ttft {results['budgets'][str(budget)]['ttft_s']:.2f}s "
            f"(first {calls[0]['ttft_s']:.2f}s), decode {results['budgets'][str(budget)]['decode_tok_s']:.2f} tok/s")
        if naive:
            break  # the seed's pipeline has one budget: 512 px
    budget = 256
    other = invoice_screenshot((1600, 1500))  # another page: nothing of it is in any cache yet
    modes = [False] if naive else [False, True]
    for reuse in modes:
        started = time.perf_counter()
        calls = [
            pipeline.ask(other, question, new_tokens, budget) if naive else pipeline.ask(other, question, new_tokens, budget, reuse)
            for question in QUESTIONS
        ]
        key = "three_questions_reuse" if reuse else "three_questions"
        results[key] = {"total_s": time.perf_counter() - started, "calls": calls}
        log(f"  three questions about one image{' with reuse' if reuse else ''}: {results[key]['total_s']:.1f}s")
        other = invoice_screenshot((1600, 1490))
    return results


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    pipeline_name = spec["pipeline"]
    started = time.perf_counter()
    if spec.get("long"):
        from .agent_run import run_long_document

        result = run_long_document(pipeline_name, spec["checkpoint"], scanned=spec["long"] == "scanned")
    elif spec.get("agent"):
        from .agent_run import run_agent_scenario

        result = run_agent_scenario(pipeline_name, spec["checkpoint"], spec.get("ocr", "vlm"))
    else:
        if pipeline_name == "naive":
            pipeline = Naive(spec["checkpoint"])
        elif pipeline_name == "torch":
            pipeline = Ours(spec["checkpoint"], "torch")
        else:
            pipeline = Ours(spec["checkpoint"], "openvino", weights=pipeline_name.split("-")[-1])
        load_s = time.perf_counter() - started
        log(f"[{pipeline_name}] loaded in {load_s:.1f}s")
        if spec.get("load_only"):
            result = {"load_s": load_s}
        else:
            result = {"load_s": load_s, **measure(pipeline, spec["budgets"], spec["new_tokens"], spec["runs"], pipeline_name == "naive")}
    result.update(pipeline=pipeline_name, peak_rss_gb=peak_rss_gb())
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
