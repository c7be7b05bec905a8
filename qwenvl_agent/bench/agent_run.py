"""The realistic agent benchmark: the seed's own question, end to end through the real ``DocumentAssistant``.

An invoice screenshot and a quarterly sales bar chart; "What is the invoice total, and is it more than
the best quarter in the chart?". The planner and the tools run on one ``ChatQwenVL``. The full-size
model has random weights, so each reply is forced, through the real model, to a realistic one of a
realistic length: the planner's two tool calls in one turn about 70 tokens, the OCR reply about 300, the
chart about 120 (its compact form), the answer about 80. Every generation's timings (vision, prefill,
decode, reused tokens) are kept, with the time to the answer's first token. The planner's prefix (system
prompt and tool schemas) is warmed when the assistant is built, as a user's process does after loading.
"""

from __future__ import annotations

import json
import time
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from ..samples import INVOICE_TOTAL, QUARTERS, contract_pdf, invoice_screenshot, sales_chart
from .common import log, peak_rss_gb, shrink_like_the_seed

QUESTION = "What is the invoice total, and is it more than the best quarter in the chart?"

PIPELINES = {
    # The seed's way: no reuse of earlier work, no prompt-lookup drafts, images shrunk as the seed did.
    "naive": {"engine": "torch", "dtype": "float32", "reuse": False, "seed_images": True, "drafts": 0},
    "torch": {"engine": "torch", "dtype": "auto", "reuse": True, "seed_images": False},
    "openvino-int4": {"engine": "openvino", "weights": "int4", "reuse": True, "seed_images": False},
    "openvino-int8": {"engine": "openvino", "weights": "int8", "reuse": True, "seed_images": False},
}


def _call(thought: str, name: str, arguments: dict[str, Any]) -> str:
    return _calls(thought, [(name, arguments)])


def _calls(thought: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """A planner reply: a thought, then one ``<tool_call>`` block per call."""
    blocks = [f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>" for name, arguments in calls]
    return "\n".join([thought, *blocks])


def scripted_texts(ocr_engine: str = "vlm") -> list[str]:
    """The replies of the run, in the order the model is called: four when the vision model reads the invoice
    (``ocr_engine="vlm"``), three when an OCR engine does (its text comes from the engine, not the model)."""
    ocr_lines = [
        "INVOICE", "Invoice code: 044031900111", "Invoice No.: 12345678", "Date: 2026-03-14", "Due: 2026-04-13",
        "Buyer: ACME Trading Ltd., 88 Harbour Road, Shenzhen",
        "Seller: Northwind Components Co., 12 Lake Street, Hangzhou", "",
        "| Item | Qty | Unit price | Tax rate | Amount |", "| --- | --- | --- | --- | --- |",
        "| Industrial sensor kit | 40 | 12,500.00 | 13% | 500,000.00 |",
        "| Control board v2 | 120 | 3,200.00 | 13% | 384,000.00 |",
        "| Cable assembly, 5 m | 300 | 420.00 | 13% | 126,000.00 |",
        "| Installation service | 1 | 82,584.07 | 6% | 82,584.07 |", "",
        "Subtotal: 1,092,584.07", "Tax: 141,975.93", f"Total (CNY): {INVOICE_TOTAL}", "",
        "Payment: bank transfer within 30 days. Thank you for your business.",
    ]
    # The chart reply in the compact form the chart prompt asks for (key lines and a table).
    chart = "\n".join([
        "type: bar", "title: Quarterly sales 2025 (million CNY)", "x: Quarter", "y: Sales (million CNY)",
        "Quarter | Sales 2025", *(f"{quarter} | {value}" for quarter, value in QUARTERS.items()),
        "answer: Q3 is the best quarter with 1.2 million CNY, up from 0.9 million in Q2 (+33.3%); Q1 is the lowest "
        "with 0.8 million; Q4 is 1.0 million.",
    ])
    answer = (
        f"The invoice total is {INVOICE_TOTAL} CNY (ocr_image on img-1). The best quarter is Q3 with 1.2 million "
        "CNY (read_chart on img-2). 1,234,560.00 > 1,200,000.00, so yes, the total is higher."
    )
    # The planner reads both images in one turn (two calls), then answers: two planner calls, not three.
    both = _calls(
        "I will read the invoice for its total and the chart for its best quarter.",
        [("ocr_image", {"image_id": "img-1"}), ("read_chart", {"image_id": "img-2", "question": "Which quarter is highest?"})],
    )
    if ocr_engine != "vlm":
        return [both, chart, answer]
    return [both, "\n".join(ocr_lines), chart, answer]


def step_names(ocr_engine: str = "vlm") -> list[str]:
    names = ["planner: call ocr_image and read_chart", "ocr_image", "read_chart", "planner: answer"]
    return names if ocr_engine == "vlm" else [names[0], *names[2:]]


FOLLOW_UP = "And what is the invoice date?"
# About 40 tokens, answered from what the conversation already holds (the OCR result of the first question).
FOLLOW_UP_ANSWER = (
    "The invoice is dated 2026-03-14 (Date: 2026-03-14 in the ocr_image result for img-1); payment is due "
    "on 2026-04-13, thirty days later."
)


class _Timings(BaseCallbackHandler):
    """Collects the timings ChatQwenVL reports for each generation."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def on_llm_end(self, response, **kwargs: Any) -> None:
        message = response.generations[0][0].message
        timings = dict(message.response_metadata.get("timings", {}))
        usage = message.usage_metadata or {}
        total = message.response_metadata.get("generation_seconds", 0.0)
        first = timings.get("first_token_seconds") or total
        timings.update(
            seconds=total,
            decode_seconds=max(0.0, total - first),
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
        )
        self.calls.append(timings)


def run_agent_scenario(pipeline: str, checkpoint: str, ocr_engine: str = "vlm") -> dict[str, Any]:
    """The seed's two-document question, then a follow-up in the same conversation. ``ocr_engine``: "vlm"
    (the vision model reads the invoice: the heaviest step) or "rapidocr" (the product's default)."""
    from qwenvl_agent.agent import DocumentAssistant
    from qwenvl_agent.vlm import ChatQwenVL
    from qwenvl_agent.vlm.testing import scripted_replies

    options = PIPELINES[pipeline]
    timings = _Timings()
    started = time.perf_counter()
    llm = ChatQwenVL(
        model=checkpoint,
        engine=options["engine"],
        weights=options.get("weights", "int8"),
        dtype=options.get("dtype", "auto"),
        cache_images=options["reuse"],
        reuse_prefix=options["reuse"],
        prompt_lookup_num_tokens=options.get("drafts", 10),
        callbacks=[timings],
    )
    runtime = llm.runtime
    load_s = time.perf_counter() - started
    log(f"[agent {pipeline}] loaded in {load_s:.1f}s ({runtime.label})")
    images = [invoice_screenshot(), sales_chart()]
    if options["seed_images"]:
        images = [shrink_like_the_seed(image) for image in images]
    started = time.perf_counter()
    assistant = DocumentAssistant(llm, ocr_engine=ocr_engine)  # the model is loaded: its planner prefix is warmed now
    warm = assistant.warm()  # what building it did (kept in memory by now)
    warm_s = time.perf_counter() - started
    texts = scripted_texts(ocr_engine)
    started = time.perf_counter()
    with scripted_replies(runtime, texts) as left:
        result = assistant.ask(QUESTION, images=images)
    seconds = time.perf_counter() - started
    for name, call in zip(step_names(ocr_engine), timings.calls):
        call["step"] = name
    log(f"[agent {pipeline} {ocr_engine}] {seconds:.1f}s end to end, {len(result.steps)} tool steps, replies left {len(left)}")
    asked = len(timings.calls)
    started = time.perf_counter()
    with scripted_replies(runtime, [FOLLOW_UP_ANSWER]):
        follow = assistant.ask(FOLLOW_UP, thread_id=result.thread_id)
    follow_s = time.perf_counter() - started
    for call in timings.calls[asked:]:
        call["step"] = "follow-up: answer"
    log(f"[agent {pipeline} {ocr_engine}] follow-up {follow_s:.1f}s")
    return {
        "ocr_engine": ocr_engine,
        "follow_up_s": follow_s,
        "follow_up_answer": follow.answer,
        "peak_rss_gb": peak_rss_gb(),  # the whole process's, model and caches included
        "load_s": load_s,
        "warm_s": warm_s,
        "warm_tokens": warm.tokens if warm else 0,
        "agent_s": seconds,
        "first_answer_token_s": result.first_token_seconds,
        "steps": [{"tool": s.tool, "seconds": s.seconds, "is_error": s.is_error} for s in result.steps],
        "generations": timings.calls,
        "answer": result.answer,
        "label": runtime.label,
    }


LONG_QUESTION = "How long is the notice period for terminating the agreement?"


def long_document_texts(answer_page: int = 13) -> list[str]:
    """The planner's replies for a long PDF: search, read the page found, answer with the page cited."""
    page = f"doc-1/page-{answer_page}"
    return [
        _call("The contract is long; I will search it first.", "search_document", {"query": "termination notice period"}),
        _call("The best match is page 13; I will read it.", "read_page_text", {"page_id": page}),
        f"The agreement can be terminated with a written notice of ninety (90) days ({page}, clause 13.8). "
        "Either party may give that notice.",
    ]


def run_long_document(pipeline: str, checkpoint: str, scanned: bool) -> dict[str, Any]:
    """A question about a 20-page contract (with a text layer, or scanned), end to end through the agent."""
    from qwenvl_agent.agent import DocumentAssistant
    from qwenvl_agent.vlm import ChatQwenVL
    from qwenvl_agent.vlm.testing import scripted_replies

    options = PIPELINES[pipeline]
    timings = _Timings()
    llm = ChatQwenVL(model=checkpoint, engine=options["engine"], weights=options.get("weights", "int8"),
                     dtype=options.get("dtype", "auto"), prompt_lookup_num_tokens=options.get("drafts", 10),
                     callbacks=[timings])
    runtime = llm.runtime
    pdf = contract_pdf(scanned)
    assistant = DocumentAssistant(llm)
    started = time.perf_counter()
    with scripted_replies(runtime, long_document_texts()) as left:
        result = assistant.ask(LONG_QUESTION, images=[pdf])
    seconds = time.perf_counter() - started
    store = result.store
    log(f"[long {'scanned' if scanned else 'text'} {pipeline}] {seconds:.1f}s, steps {[s.tool for s in result.steps]}, left {len(left)}")
    return {
        "agent_s": seconds,
        "first_answer_token_s": result.first_token_seconds,
        "variant": "scanned" if scanned else "text layer",
        "steps": [{"tool": s.tool, "seconds": s.seconds, "is_error": s.is_error, "output": s.output[:300]} for s in result.steps],
        "generations": timings.calls,
        "answer": result.answer,
        "found_page": bool(result.steps) and result.steps[0].image_ids[:1] == ["doc-1/page-13"],
        "indexed": store.index.progress(),
        "label": runtime.label,
    }
