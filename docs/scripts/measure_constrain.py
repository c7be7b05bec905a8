"""Measure xgrammar against llguidance on this CPU: grammar compile time, mask time per decode step, and the
cost of applying a mask to numpy and torch logits of Qwen3's size (151,936). Both libraries run the same
grammars in the same process, interleaved (``--only-constrain``: only the project's own module, no xgrammar),
on Qwen's real vocabulary (the benchmark's tokenizer, built from
qwen-agent's ``qwen.tiktoken``; see qwenvl_agent/bench/tokenizer.py).

    python docs/scripts/measure_constrain.py TOKENIZER_FOLDER [--rounds 5] [--generations 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field
from typing import Literal

VOCAB = 151936
IDS = ["img-1", "img-2", "doc-1", "doc-1/page-1", "doc-1/page-2", "doc-1/page-3", "img-2/zoom-1"]


def tool_schemas(count: int) -> list[dict]:
    from qwenvl_agent.tools import ImageStore, make_tools

    tools = [convert_to_openai_tool(t)["function"] for t in make_tools(None, ImageStore())][:count]
    out = []
    for tool in tools:
        params = json.loads(json.dumps(tool["parameters"]))
        for field in ("image_id", "page_id"):
            if field in params["properties"]:
                params["properties"][field] = {"enum": IDS}
        out.append({"type": "object", "properties": {"name": {"const": tool["name"]}, "arguments": params},
                    "required": ["name", "arguments"], "additionalProperties": False})
    return [{"anyOf": out}]


class Address(BaseModel):
    street: str
    city: str
    country: Literal["DE", "FR", "CN", "US"]


class LineItem(BaseModel):
    description: str
    quantity: int = Field(ge=1)
    unit_price: float


class Invoice(BaseModel):
    invoice_number: str
    date: str
    seller: Address
    buyer: Address
    items: list[LineItem] = Field(min_length=1, max_length=5)
    total: float
    currency: Literal["EUR", "USD", "CNY"]
    notes: str | None = None


def llg_setup(tok):
    import llguidance, llguidance.hf

    t0 = time.perf_counter()
    lt = llguidance.hf.from_tokenizer(tok, n_vocab=VOCAB)
    return lt, time.perf_counter() - t0


def xgr_setup(tok):
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=VOCAB)
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    return compiler, time.perf_counter() - t0


def llg_compile(lt, schema, wrap):
    import llguidance

    t0 = time.perf_counter()
    opts = {"x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}
    body = json.dumps({**schema, **opts})
    lark = f'start: "\\n" j "\\n</tool_call>"\nj: %json {body}' if wrap else f"start: j\nj: %json {body}"
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    matcher = llguidance.LLMatcher(lt, grammar)
    assert not matcher.is_error(), matcher.get_error()
    return matcher, time.perf_counter() - t0


def xgr_compile(compiler, schema, wrap):
    import xgrammar as xgr

    t0 = time.perf_counter()
    g = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=(", ", ": "))
    if wrap:
        g = xgr.Grammar.concat(xgr.Grammar.from_ebnf('root ::= "\\n"'), g, xgr.Grammar.from_ebnf('root ::= "\\n</tool_call>"'))
    compiled = compiler.compile_grammar(g)
    matcher = xgr.GrammarMatcher(compiled)
    return matcher, time.perf_counter() - t0


def run_generation(lib, matcher, rng, stats, eos):
    """One sampled generation on random logits (temperature 1) under the grammar, timing each step."""
    import llguidance.numpy as lnp
    import llguidance.torch as ltorch
    import xgrammar as xgr

    if lib == "llg":
        bitmask = lnp.allocate_token_bitmask(1, VOCAB)
        tbitmask = torch.from_numpy(bitmask)
    else:
        tbitmask = xgr.allocate_token_bitmask(1, VOCAB)
        bitmask = tbitmask.numpy()
    steps = 0
    while steps < 200:
        logits = rng.standard_normal(VOCAB, dtype=np.float32)
        tlogits = torch.from_numpy(logits.copy()).unsqueeze(0)
        t0 = time.perf_counter()
        if lib == "llg":
            lnp.fill_next_token_bitmask(matcher, bitmask, 0)
        else:
            matcher.fill_next_token_bitmask(tbitmask)
        t1 = time.perf_counter()
        if lib == "llg":
            lnp.apply_token_bitmask_inplace(logits[None, :], bitmask)
        else:
            allowed = np.unpackbits(bitmask[0].view(np.uint8), bitorder="little")[:VOCAB].astype(bool)
            logits[~allowed] = -np.inf
        t2 = time.perf_counter()
        if lib == "llg":
            ltorch.apply_token_bitmask_inplace(tlogits, tbitmask)
        else:
            xgr.apply_token_bitmask_inplace(tlogits, tbitmask)
        t3 = time.perf_counter()
        stats["mask"].append((t1 - t0) * 1e3)
        stats["apply_np"].append((t2 - t1) * 1e3)
        stats["apply_torch"].append((t3 - t2) * 1e3)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        token = int(rng.choice(VOCAB, p=p))
        t4 = time.perf_counter()
        if lib == "llg":
            matcher.consume_token(token)
            done = matcher.is_stopped()
        else:
            matcher.accept_token(token)
            done = matcher.is_terminated()
        stats["accept"].append((time.perf_counter() - t4) * 1e3)
        steps += 1
        if done or token in eos:
            break
    stats["steps"].append(steps)


def run_constraint(grammar, tok, rng, stats, budget: int) -> None:
    """One generation through qwenvl_agent.vlm.constrain as a decode loop drives it, timing each call."""
    constraint = grammar.constraint(tok, vocab_size=VOCAB)
    produced = forced_total = 0
    while not constraint.done and produced < budget:
        t0 = time.perf_counter()
        constraint.close_within(budget - produced)
        forced = constraint.forced_tokens()
        t1 = time.perf_counter()
        stats["close+forced"].append((t1 - t0) * 1e3)
        if forced:
            constraint.accept(forced)
            produced += len(forced)
            forced_total += len(forced)
            stats["forward_passes"].append(1)
            continue
        logits = rng.standard_normal(VOCAB, dtype=np.float32)
        tlogits = torch.from_numpy(logits.copy()).unsqueeze(0)
        t2 = time.perf_counter()
        constraint.apply(logits)
        t3 = time.perf_counter()
        constraint.apply(tlogits)
        t4 = time.perf_counter()
        stats["apply_np"].append((t3 - t2) * 1e3)
        stats["apply_torch"].append((t4 - t3) * 1e3)
        p = np.exp(logits - logits.max())
        token = int(rng.choice(VOCAB, p=p / p.sum()))
        t5 = time.perf_counter()
        constraint.accept(token)
        stats["accept"].append((time.perf_counter() - t5) * 1e3)
        produced += 1
        stats["forward_passes"].append(1)
    stats["steps"].append(produced)
    stats["forced_share_%"].append(100 * forced_total / max(produced, 1))


REALISTIC_CALLS = [
    '<tool_call>\n{"name": "ocr_image", "arguments": {"image_id": "doc-1/page-2"}}\n</tool_call>',
    '<tool_call>\n{"name": "zoom_image", "arguments": {"image_id": "img-1", "box": [500, 0, 1000, 500]}}\n</tool_call>',
    '<tool_call>\n{"name": "read_chart", "arguments": {"image_id": "img-2", "question": "Which quarter is highest?"}}\n</tool_call>',
    '<tool_call>\n{"name": "search_document", "arguments": {"query": "total amount due"}}\n</tool_call>',
    '<tool_call>\n{"name": "read_page_text", "arguments": {"page_id": "doc-1/page-3"}}\n</tool_call>',
    '<tool_call>\n{"name": "locate_in_image", "arguments": {"image_id": "img-1", "what": "the invoice total"}}\n</tool_call>',
    '<tool_call>\n{"name": "describe_image", "arguments": {"image_id": "img-2/zoom-1"}}\n</tool_call>',
]


def jump_forward(grammar, tok) -> None:
    """Decode steps for calls a planner writes: one per token unconstrained, one per choice or forced span with
    jump-forward (the model is made to write each call; the grammar forces what it can)."""
    total_tokens = total_passes = 0
    for text in REALISTIC_CALLS:
        constraint = grammar.constraint(tok, vocab_size=VOCAB)
        target = text.encode()
        done = b""
        passes = 0
        while not constraint.done:
            forced = constraint.forced_tokens()
            if not forced:
                rest = target[len(done):].decode()
                forced = tok.encode(rest, add_special_tokens=False)[:1] if rest else [tok.convert_tokens_to_ids("<|im_end|>")]
            constraint.accept(forced)
            passes += 1
            done += tok.decode(forced, skip_special_tokens=False).encode().replace(b"<|im_end|>", b"")
        tokens = len(tok.encode(text, add_special_tokens=False)) + 1
        assert done == target, (done, target)
        print(f"  {tokens:3d} tokens, {passes:3d} decode steps with jump-forward: {text[12:72]}…")
        total_tokens += tokens
        total_passes += passes
    print(f"jump-forward: {total_passes} decode steps for {total_tokens} tokens "
          f"({100 * (1 - total_passes / total_tokens):.0f} % fewer)")


def main() -> None:
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--only-constrain", action="store_true")
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    eos = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    if not args.only_constrain:  # the comparison needs xgrammar too (pip install xgrammar)
        lt, llg_tok = llg_setup(tok)
        compiler, xgr_tok = xgr_setup(tok)
        print(json.dumps({"tokenizer_setup_s": {"llguidance": round(llg_tok, 3), "xgrammar": round(xgr_tok, 3)}, "vocab": len(tok)}))
    cases = {
        "tools3": (tool_schemas(3)[0], True),
        "tools7": (tool_schemas(7)[0], True),
        "pydantic": (Invoice.model_json_schema(), False),
    }
    results: dict = {name: {} for name in cases}
    for name, (schema, wrap) in ({} if args.only_constrain else cases).items():
        for rnd in range(args.rounds):
            for lib in ("llg", "xgr"):  # interleaved: both see the same load from the other processes
                res = results[name].setdefault(lib, {"compile": [], "mask": [], "apply_np": [], "apply_torch": [], "accept": [], "steps": []})
                if lib == "llg":
                    _, seconds = llg_compile(lt, schema, wrap)
                else:
                    _, seconds = xgr_compile(compiler, schema, wrap)
                res["compile"].append(seconds * 1e3)
                rng = np.random.default_rng(rnd)
                for _ in range(args.generations):
                    matcher = llg_compile(lt, schema, wrap)[0] if lib == "llg" else xgr_compile(compiler, schema, wrap)[0]
                    run_generation(lib, matcher, rng, res, eos)
    from qwenvl_agent.tools import ImageStore, make_tools
    from qwenvl_agent.vlm.constrain import JsonSchemaGrammar, ToolCallGrammar

    project_tools = make_tools(None, ImageStore())
    ids = {"image_id": IDS, "page_id": IDS, "doc_id": ["doc-1"]}
    grammars = {
        "tools3": ToolCallGrammar.from_tools(project_tools[:3], ids, tool_choice="any"),
        "tools7": ToolCallGrammar.from_tools(project_tools, ids, tool_choice="any"),
        "pydantic": JsonSchemaGrammar(Invoice),
    }
    jump_forward(grammars["tools7"], tok)
    for name, grammar in grammars.items():
        res = results[name]["constrain.py"] = {"close+forced": [], "apply_np": [], "apply_torch": [], "accept": [],
                                                "steps": [], "forward_passes": [], "forced_share_%": []}
        for rnd in range(args.rounds):
            rng = np.random.default_rng(rnd)
            for _ in range(args.generations):
                run_constraint(grammar, tok, rng, res, budget=args.budget)
        res["forward_passes"] = [len(res["forward_passes"]) / (args.rounds * args.generations)]
    print(f"{'case/library':22} {'what':15} {'median':>9} {'p90':>9} {'max':>9} {'mean':>9} {'n':>6}  (ms; steps: count)")
    for name, libs in results.items():
        for lib, res in libs.items():
            for key, vals in res.items():
                print(f"{name + '/' + lib:22} {key:15} {statistics.median(vals):9.4f} {np.percentile(vals, 90):9.4f} "
                      f"{max(vals):9.4f} {statistics.fmean(vals):9.4f} {len(vals):6d}")


if __name__ == "__main__":
    main()
