"""Grammar-constrained decoding on the tiny checkpoint's tokenizer: random logits are the noisiest model there
is, so whatever comes out under the constraint must still be a valid call (or a valid JSON document).

Each generation samples at temperature 1 from seeded random logits, the constraint applied as a decode loop
applies it: budget first, forced tokens fed at once, the mask on the logits, the token accepted.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest
import torch
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import TypedDict

from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.vlm.constrain import ConstraintError, JsonSchemaGrammar, ToolCallGrammar
from qwenvl_agent.vlm.tool_calls import ReplySplitter, parse_tool_calls

RUNS = 200
IMAGE_IDS = ["img-1", "doc-1/page-1", "doc-1/page-2", "发票-3"]
DOC_IDS = ["doc-1"]
IDS = {"image_id": IMAGE_IDS, "page_id": IMAGE_IDS, "doc_id": DOC_IDS}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def tools():
    return {t.name: t for t in make_tools(None, ImageStore())}


def sample(constraint, rng, tokenizer, budget: int, *, prefix: list[int] = (), constrained: bool = True) -> list[int]:
    """One reply: ``prefix`` as the model's first tokens, then sampling from random logits (temperature 1)."""
    vocab = len(tokenizer)
    end = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    out: list[int] = []
    if constrained:
        for token in prefix:
            constraint.accept(token)
    out += list(prefix)
    while len(out) < budget and not (out and out[-1] in end) and not (constrained and constraint.done):
        logits = rng.standard_normal(vocab).astype(np.float32)
        if constrained:
            constraint.close_within(budget - len(out))
            forced = constraint.forced_tokens()
            if forced:
                constraint.accept(forced)
                out += forced
                continue
            constraint.apply(logits)
        probs = np.exp(logits - logits.max())
        token = int(rng.choice(vocab, p=probs / probs.sum()))
        if constrained:
            constraint.accept(token)
        out.append(token)
    return out


def text_of(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=False).replace("<|im_end|>", "").replace("<|endoftext|>", "")


def valid_calls(reply: str, tools, ids=IDS) -> list[dict] | None:
    """The reply's calls if there is at least one and each is a valid call of a tool on existing ids, else None."""
    parsed = parse_tool_calls(reply)
    if not parsed.calls or parsed.invalid_tool_calls:
        return None
    for call in parsed.tool_calls:
        tool = tools.get(call["name"])
        if tool is None:
            return None
        try:
            tool.args_schema.model_validate(call["args"])
        except ValidationError:
            return None
        for field, allowed in ids.items():
            if field in call["args"] and call["args"][field] is not None and call["args"][field] not in allowed:
                return None
    return parsed.tool_calls


def test_forced_calls_of_the_project_tools_always_parse_validate_and_name_existing_ids(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    valid = unconstrained_valid = 0
    names, several, budget_closed = set(), 0, 0
    for seed in range(RUNS):
        budget = (48, 80, 160, 400)[seed % 4]
        constraint = grammar.constraint(tokenizer)
        tokens = sample(constraint, np.random.default_rng(seed), tokenizer, budget)
        assert len(tokens) <= budget
        calls = valid_calls(text_of(tokenizer, tokens), tools)
        assert calls is not None, (seed, text_of(tokenizer, tokens))
        valid += 1
        names |= {c["name"] for c in calls}
        several += len(calls) > 1
        budget_closed += len(tokens) >= budget - 2
        free = sample(None, np.random.default_rng(seed), tokenizer, budget, constrained=False)
        unconstrained_valid += valid_calls(text_of(tokenizer, free), tools) is not None
    print(f"\nforced tool calls: constrained {valid}/{RUNS} valid, unconstrained {unconstrained_valid}/{RUNS}; "
          f"{several} replies with several calls, {budget_closed} closed by the budget")
    assert valid == RUNS
    assert unconstrained_valid == 0
    assert names == set(tools)  # every tool was called at some point
    assert several > 0 and budget_closed > 0  # the cases this test stands for did happen


def test_a_call_opened_after_words_is_constrained_and_the_words_are_not(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS)  # tool_choice="auto"
    words = tokenizer.encode("I will read the invoice first.", add_special_tokens=False)
    open_call = tokenizer.convert_tokens_to_ids("<tool_call>")
    for seed in range(RUNS):
        constraint = grammar.constraint(tokenizer)
        assert constraint.allowed() is None  # words are free
        for token in words:
            constraint.accept(token)
        assert constraint.allowed() is None
        tokens = sample(constraint, np.random.default_rng(seed), tokenizer, 200, prefix=[open_call])
        reply = text_of(tokenizer, words + tokens)
        assert valid_calls(reply, tools) is not None, (seed, reply)
        assert parse_tool_calls(reply).content == "I will read the invoice first."


def test_a_call_written_in_pieces_is_caught_too(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS)
    pieces = tokenizer.encode("Now <tool_", add_special_tokens=False) + tokenizer.encode("call>", add_special_tokens=False)
    constraint = grammar.constraint(tokenizer)
    tokens = sample(constraint, np.random.default_rng(0), tokenizer, 200, prefix=pieces)
    assert valid_calls(text_of(tokenizer, tokens), tools) is not None


def test_thinking_reasoning_is_free_and_the_call_after_think_is_forced(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    reasoning = tokenizer.encode(
        'I could write <tool_call>\n{"name": "nothing"}\n</tool_call> here, it is only thought.\n</think>',
        add_special_tokens=False,
    )
    ends = set(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    for seed in range(RUNS):
        constraint = grammar.constraint(tokenizer, thinking=True)
        for token in reasoning[:-1]:
            logits = constraint.apply(np.zeros(len(tokenizer), dtype=np.float32))
            assert set(np.flatnonzero(~np.isfinite(logits))) == ends  # thought is free, but must end in a call
            constraint.accept(token)
        tokens = sample(constraint, np.random.default_rng(seed), tokenizer, 200, prefix=reasoning[-1:])
        splitter = ReplySplitter(thinking=True, tool_names=list(tools))
        parts = splitter.feed(text_of(tokenizer, reasoning[:-1] + tokens)) + splitter.finish()
        calls = [p for p in parts if hasattr(p, "args")]
        assert calls and all(c.error is None and c.name in tools for c in calls), seed
        assert "only thought" in splitter.reasoning


def test_thinking_that_runs_into_the_budget_still_ends_with_a_valid_call(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="ocr_image")
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    for seed in range(50):
        constraint = grammar.constraint(tokenizer, thinking=True)
        rng = np.random.default_rng(seed)
        tokens: list[int] = []
        budget = 90
        while not constraint.done and len(tokens) < budget:
            constraint.close_within(budget - len(tokens))
            forced = constraint.forced_tokens()
            if forced:
                constraint.accept(forced)
                tokens += forced
                continue
            logits = rng.standard_normal(len(tokenizer)).astype(np.float32)
            logits[think_end] = -np.inf  # a model that would never stop thinking
            constraint.apply(logits)
            token = int(np.argmax(logits))
            constraint.accept(token)
            tokens.append(token)
        reply = text_of(tokenizer, tokens)
        assert think_end in tokens and len(tokens) <= budget
        assert valid_calls(reply.split("</think>", 1)[1], tools) is not None, reply


def test_jump_forward_gives_the_fixed_spans_of_a_call(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools([tools["zoom_image"]], {"image_id": ["img-1"]}, tool_choice="any")
    constraint = grammar.constraint(tokenizer)
    forced = constraint.forced_tokens()
    assert tokenizer.decode(forced) == '<tool_call>\n{"name": "zoom_image", "arguments": {"image_id": "img-1", "box": ['
    constraint.accept(forced)
    assert constraint.forced_tokens() == []  # the box's numbers are the model's to choose

    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    constraint = grammar.constraint(tokenizer)
    forced = constraint.forced_tokens()
    assert tokenizer.decode(forced) == '<tool_call>\n{"name": "'
    constraint.accept(forced)
    constraint.accept(tokenizer.encode("read_page", add_special_tokens=False))
    assert tokenizer.decode(constraint.forced_tokens()) == '_text", "arguments": {"page_id": "'


def test_near_the_budget_every_reply_still_closes_and_parses(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    least = grammar.constraint(tokenizer)._call_cost()
    for budget in (least, least + 1, least + 5, least + 20):
        for seed in range(50):
            constraint = grammar.constraint(tokenizer)
            tokens = sample(constraint, np.random.default_rng(seed), tokenizer, budget)
            assert len(tokens) <= budget
            assert valid_calls(text_of(tokenizer, tokens), tools) is not None, (budget, seed)


def test_a_budget_too_small_for_any_call_is_an_error_that_says_so(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    constraint = grammar.constraint(tokenizer)
    with pytest.raises(ConstraintError, match=r"needs at least \d+ tokens"):
        constraint.close_within(5)


def test_auto_mode_opens_no_call_it_could_not_finish(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS)
    constraint = grammar.constraint(tokenizer)
    open_call = tokenizer.convert_tokens_to_ids("<tool_call>")
    logits = np.zeros(len(tokenizer), dtype=np.float32)
    constraint.close_within(5)
    constraint.apply(logits)
    assert logits[open_call] == -np.inf and np.isfinite(logits).sum() == len(tokenizer) - 1


class Address(BaseModel):
    street: str
    city: str
    country: Literal["DE", "FR", "CN", "US"]


class LineItem(BaseModel):
    description: str
    quantity: int = Field(ge=1, le=1000)
    unit_price: float


class Invoice(BaseModel):
    invoice_number: str
    seller: Address
    buyer: Address
    items: list[LineItem] = Field(min_length=1, max_length=3)
    total: float
    currency: Literal["EUR", "USD", "人民币"]
    paid: bool
    notes: str | None = None


def test_nested_pydantic_replies_always_validate(tokenizer):
    grammar = JsonSchemaGrammar(Invoice)
    unconstrained = chinese = 0
    for seed in range(RUNS):
        budget = (200, 260, 400)[seed % 3]
        tokens = sample(grammar.constraint(tokenizer), np.random.default_rng(seed), tokenizer, budget)
        reply = text_of(tokenizer, tokens)
        invoice = Invoice.model_validate_json(reply)
        assert "\ufffd" not in reply  # no broken UTF-8
        chinese += any("\u4e00" <= ch <= "\u9fff" for ch in reply)
        assert invoice.currency in ("EUR", "USD", "人民币") and all(1 <= i.quantity <= 1000 for i in invoice.items)
        free = text_of(tokenizer, sample(None, np.random.default_rng(seed), tokenizer, budget, constrained=False))
        try:
            Invoice.model_validate_json(free)
            unconstrained += 1
        except ValidationError:
            pass
    print(f"\nnested pydantic: constrained {RUNS}/{RUNS} valid, unconstrained {unconstrained}/{RUNS}")
    assert unconstrained == 0
    assert chinese > 0  # Chinese text was written, and came out whole


class Person(TypedDict):
    name: str
    age: int


def test_typed_dicts_and_json_schemas_constrain_too(tokenizer):
    schema = {"type": "object", "properties": {"kind": {"enum": ["发票", "receipt"]}, "score": {"type": "number"}},
              "required": ["kind", "score"]}
    for source, check in ((Person, lambda v: isinstance(v["name"], str) and isinstance(v["age"], int)),
                          (schema, lambda v: v["kind"] in ("发票", "receipt") and isinstance(v["score"], (int, float)))):
        grammar = JsonSchemaGrammar(source)
        for seed in range(50):
            value = json.loads(text_of(tokenizer, sample(grammar.constraint(tokenizer), np.random.default_rng(seed), tokenizer, 80)))
            assert check(value) and set(value) <= {"name", "age", "kind", "score"}


def test_masks_apply_to_numpy_and_torch_logits_wider_than_the_tokenizer(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    width = len(tokenizer) + 70  # the model's logits are padded past the tokenizer, as Qwen3-VL's are
    constraint = grammar.constraint(tokenizer, vocab_size=width)
    constraint.accept(constraint.forced_tokens())
    as_numpy = constraint.apply(np.zeros(width, dtype=np.float32))
    as_torch = constraint.apply(torch.zeros(1, width))
    allowed = {tokenizer.decode([i]) for i in np.flatnonzero(np.isfinite(as_numpy))}
    assert allowed and all(any(name.startswith(piece) for name in tools) for piece in allowed)
    assert np.array_equal(np.isfinite(as_numpy), torch.isfinite(as_torch[0]).numpy())
    assert not np.isfinite(as_numpy[len(tokenizer):]).any()


def test_a_token_the_grammar_forbids_is_refused_by_name(tokenizer, tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    constraint = grammar.constraint(tokenizer)
    constraint.accept(constraint.forced_tokens())
    with pytest.raises(ConstraintError, match="not allowed"):
        constraint.accept(tokenizer.encode("}", add_special_tokens=False))


def test_ids_become_enums_and_tools_without_ids_are_left_out(tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()), {"image_id": [], "page_id": [], "doc_id": []})
    assert [t["name"] for t in grammar.tools] == ["search_document"]
    assert grammar.tools[0]["parameters"]["properties"]["doc_id"]["type"] == "null"  # no document to name
    grammar = ToolCallGrammar.from_tools([tools["search_document"]], {"doc_id": ["doc-1"]})
    assert grammar.tools[0]["parameters"]["properties"]["doc_id"]["anyOf"] == [{"enum": ["doc-1"]}, {"type": "null"}]
    with pytest.raises(ConstraintError, match=r"No tool can be called: ocr_image needs an id \(image_id\)"):
        ToolCallGrammar.from_tools([tools["ocr_image"]], {"image_id": []})
    with pytest.raises(ConstraintError, match="tool_choice 'crop'"):
        ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="crop")


def test_a_schema_no_value_satisfies_is_refused_by_name_when_first_used(tokenizer):
    with pytest.raises(ConstraintError, match="required property 'a' is unsatisfiable") as error:
        JsonSchemaGrammar({"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]}).constraint(tokenizer)
    assert "%json" not in str(error.value)  # the message, not a listing of the grammar


def test_the_tools_in_the_grammar_are_the_ones_bind_tools_sends(tools):
    grammar = ToolCallGrammar.from_tools(list(tools.values()))
    assert [t["name"] for t in grammar.tools] == [convert_to_openai_tool(t)["function"]["name"] for t in tools.values()]


def test_the_tiny_model_itself_writes_only_valid_calls_through_generate(tiny_runtime, tools):
    """The real model path: ``generate`` of the tiny checkpoint on the engine the runtime loaded (transformers',
    or optimum-intel's over OpenVINO where it is installed), sampling at temperature 1, the constraint as a
    logits processor; the same prompts unconstrained, for the record."""
    from transformers import LogitsProcessorList

    from qwenvl_agent.vlm.constrain import ConstraintLogitsProcessor

    tokenizer = tiny_runtime.processor.tokenizer
    model = tiny_runtime.model
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the total on the invoice img-1?"}],
        tools=[convert_to_openai_tool(t) for t in tools.values()], add_generation_prompt=True, tokenize=False,
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    grammar = ToolCallGrammar.from_tools(list(tools.values()), IDS, tool_choice="any")
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 80}
    valid = unconstrained = 0
    runs = 30
    for seed in range(runs):
        constraint = grammar.constraint(tokenizer, vocab_size=model.config.text_config.vocab_size)
        processor = ConstraintLogitsProcessor(constraint, length, sampling["max_new_tokens"])
        torch.manual_seed(seed)
        out = model.generate(**inputs, **sampling, logits_processor=LogitsProcessorList([processor]))
        reply = text_of(tokenizer, out[0, length:].tolist())
        assert valid_calls(reply, tools) is not None, (seed, reply)
        valid += 1
        torch.manual_seed(seed)
        free = model.generate(**inputs, **sampling)
        unconstrained += valid_calls(text_of(tokenizer, free[0, length:].tolist()), tools) is not None
    print(f"\ntiny model through generate: constrained {valid}/{runs} valid, unconstrained {unconstrained}/{runs}")
    assert unconstrained == 0
