"""`qwenvl extract`'s throughput and overhead, and the grammar's cost per decode step, on the full-size model.

Run alone (it is a timing): ``python docs/scripts/measure_extract.py [N_DOCUMENTS]``. Uses the benchmark's
full-size random-weight checkpoint (``qwenvl bench`` builds it) on the OpenVINO int4 engine; the model's
replies are forced to the invoices' true field values (scripted replies), so the work per document is
real: RapidOCR reads the page, the model prefills the page image and its text, and decodes the JSON under
the schema's grammar.

1. Extraction: N generated one-page invoices (the eval set's generator) written as PNGs, extracted with the
   schema below; documents per minute, and the overhead per document (wall time minus the model's own
   generation time).
2. Grammar overhead: the same 128-token JSON reply forced with and without the schema's grammar, jump-forward
   off so both take the same number of decode passes; the difference per pass against a pass's time.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.callbacks import BaseCallbackHandler

from qwenvl_agent.bench.checkpoint import random_checkpoint
from qwenvl_agent.bench.machine import machine_facts
from qwenvl_agent.extract import extract
from qwenvl_agent.samples.invoices import invoice
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.constrain import JsonSchemaGrammar
from qwenvl_agent.vlm.generation import GenerationSettings, Prompt, stream
from qwenvl_agent.vlm.testing import scripted_replies

FIELDS = "invoice_number, date:date, buyer, seller, total:number"


class Seconds(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def on_llm_end(self, response, **kwargs) -> None:
        message = response.generations[0][0].message
        self.seconds += message.response_metadata.get("generation_seconds", 0.0)
        self.calls += 1


def extraction(model: ChatQwenVL, count: int) -> dict:
    rng = random.Random(7)
    docs = [invoice(rng) for _ in range(count)]
    folder = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    paths = []
    for index, doc in enumerate(docs):
        path = folder / f"invoice-{index:03d}.png"
        doc.image.save(path)
        paths.append(path)
    replies = [json.dumps({"invoice_number": d.facts["number"], "date": d.facts["date"], "buyer": d.facts["buyer"],
                           "seller": d.facts["seller"], "total": d.facts["total"]}) for d in docs]
    seconds = Seconds()
    model = model.model_copy(update={"callbacks": [seconds]})
    started = time.perf_counter()
    rows = []
    with scripted_replies(model.runtime, replies):
        for result in extract(paths, FIELDS, model=model):
            rows.append(result)
            print(f"  {result.document}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    right = sum(1 for r, d in zip(rows, docs) if r.values.get("invoice_number") == d.facts["number"] and not r.error)
    return {"documents": count, "wall_s": wall, "per_minute": count / wall * 60, "model_s": seconds.seconds,
            "model_calls": seconds.calls, "overhead_per_doc_s": (wall - seconds.seconds) / count, "right": right}


def grammar_overhead(model: ChatQwenVL, runs: int = 3) -> dict:
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "quantity": {"type": "integer"}, "amount": {"type": "number"}},
        "required": ["name", "quantity", "amount"]}}}, "required": ["items"]}
    rng = random.Random(3)
    items = [{"name": rng.choice(["Control board v2", "Cable assembly", "Printer toner", "Office chair"]),
              "quantity": rng.randint(1, 60), "amount": round(rng.uniform(10, 9000), 2)} for _ in range(9)]
    text = json.dumps({"items": items})
    runtime = model.runtime
    prompt = Prompt([{"role": "user", "content": "List the invoice's items as JSON. " * 20}])
    out = {}
    for label, grammar in (("free", None), ("grammar", JsonSchemaGrammar(schema))):
        per_pass = []
        for _ in range(runs):
            settings = GenerationSettings(max_new_tokens=400, grammar=grammar, jump_forward=False, reuse_prefix=False)
            with scripted_replies(runtime, [text]):
                first = None
                started = time.perf_counter()
                for piece in stream(runtime, prompt, settings):
                    if first is None and isinstance(piece, str):
                        first = time.perf_counter()
                    stats = piece
                end = time.perf_counter()
            per_pass.append((end - first) / max(stats.decode_steps - 1, 1))
        out[label] = {"ms_per_pass": sorted(per_pass)[len(per_pass) // 2] * 1000, "output_tokens": stats.output_tokens,
                      "decode_steps": stats.decode_steps}
    out["overhead_share"] = out["grammar"]["ms_per_pass"] / out["free"]["ms_per_pass"] - 1
    return out


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    machine = machine_facts()
    print(f"Machine: {machine['cpu']} · {machine['cores']} cores · flags {', '.join(machine['flags'])}", file=sys.stderr)
    model = ChatQwenVL(model=str(random_checkpoint()), engine="openvino", weights="int4", max_tokens=200)
    model.runtime  # load
    result = {"machine": machine, "grammar": grammar_overhead(model), "extract": extraction(model, count)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
