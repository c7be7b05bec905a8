"""Constrained decoding through ChatQwenVL and the agent, on the tiny checkpoint sampled at temperature 1: its
free output is noise, so every call and every JSON document that comes out valid was made valid by the grammar.

Each case runs 200 seeded generations through the public API (``bind_tools``, ``with_structured_output``,
``build_agent``) and checks what the caller gets; the same seeds with ``constrain=False`` give the valid share
without the grammar, printed for the record (``pytest -s``)."""

from __future__ import annotations

from enum import Enum

import pytest
from documents import draw_bar_chart, draw_invoice
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel, Field, ValidationError

from qwenvl_agent.agent.graph import build_agent, ids_by_argument
from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.constrain import ConstraintError
from qwenvl_agent.vlm.testing import scripted_replies

RUNS = 200
FREE_RUNS = 50  # the unconstrained record: noise runs to the end of its budget every time, so fewer of them


@pytest.fixture(scope="module")
def store():
    store = ImageStore(index_pages=False)
    store.add(draw_invoice())
    store.add(draw_bar_chart())
    store.add_crop("img-1", [0, 0, 500, 500])
    return store


@pytest.fixture(scope="module")
def tools(store):
    return {tool.name: tool for tool in make_tools(None, store)}


def sampling(tiny_model: str, **fields) -> ChatQwenVL:
    """The tiny model sampling at temperature 1 on the torch engine (every instance shares one loaded copy)."""
    return ChatQwenVL(**{"model": tiny_model, "engine": "torch", "temperature": 1.0, "max_tokens": 80, **fields})


@pytest.fixture(scope="module")
def sampled(tiny_model):
    return sampling(tiny_model)


def invalid_calls(message: AIMessage, tools, ids: dict[str, list[str]]) -> list[str]:
    """What is wrong with the message as a turn of tool calls (empty: at least one call, each of a known tool,
    with arguments its schema accepts and ids from ``ids``)."""
    problems = [f"unreadable call: {c.get('error') or c.get('args')}" for c in message.invalid_tool_calls]
    if not message.tool_calls:
        problems.append("no call")
    for call in message.tool_calls:
        tool = tools.get(call["name"])
        if tool is None:
            problems.append(f"unknown tool {call['name']!r}")
            continue
        try:
            tool.args_schema.model_validate(call["args"])
        except ValidationError as exc:
            problems.append(f"{call['name']}: {exc.errors()[0]['msg']}")
        for field, allowed in ids.items():
            value = call["args"].get(field)
            if value is not None and value not in allowed:
                problems.append(f"{call['name']}: {field} {value!r} does not exist")
    return problems


def test_forced_calls_always_parse_validate_and_name_ids_the_store_holds(sampled, store, tools):
    ids = ids_by_argument([store])
    assert ids["image_id"] == ["img-1", "img-2", "img-1/zoom-1"] and ids["doc_id"] == ["img-1", "img-2"]
    bound = sampled.bind_tools(list(tools.values()), tool_choice="any")
    question = [HumanMessage("What is the total on the invoice img-1? Images: img-1, img-2, img-1/zoom-1.")]
    valid = free_valid = several = 0
    names: set[str] = set()
    # Every fifth reply names its tool (each tool in turn): every tool's schema is exercised whatever the random
    # model's draw prefers under "any".
    named = {name: sampled.bind_tools(list(tools.values()), tool_choice=name) for name in tools}
    for seed in range(RUNS):
        budget = (48, 80)[seed % 2]
        chosen = list(tools)[(seed // 5) % len(tools)] if seed % 5 == 4 else None
        if chosen:
            budget = 80
        reply = (named[chosen] if chosen else bound).invoke(question, seed=seed, max_tokens=budget, allowed_ids=ids)
        if chosen:
            assert [c["name"] for c in reply.tool_calls][:1] == [chosen]
        assert invalid_calls(reply, tools, ids) == [], (seed, reply.tool_calls, reply.invalid_tool_calls)
        assert reply.usage_metadata["output_tokens"] <= budget
        valid += 1
        names |= {c["name"] for c in reply.tool_calls}
        several += len(reply.tool_calls) > 1
        if seed < FREE_RUNS:
            free = bound.invoke(question, seed=seed, max_tokens=budget, constrain=False)
            free_valid += not invalid_calls(free, tools, ids)
    print(f"\nChatQwenVL forced calls: constrained {valid}/{RUNS} valid, unconstrained {free_valid}/{FREE_RUNS}; "
          f"{several} turns with several calls, tools called: {sorted(names)}")
    assert free_valid == 0  # without the grammar the tiny model writes noise: the test can tell the difference
    # Several calls in one turn depend on the random model's draw; test_constrain.py holds that the grammar
    # allows them whatever the draw.
    assert names == set(tools)


def test_ids_the_store_does_not_hold_are_never_written_and_no_id_at_all_is_a_clear_error(sampled, tools):
    bound = sampled.bind_tools([tools["describe_image"], tools["zoom_image"]], tool_choice="any")
    for seed in range(20):
        reply = bound.invoke("Describe it.", seed=seed, allowed_ids={"image_id": ["img-7"]})
        assert {c["args"]["image_id"] for c in reply.tool_calls} == {"img-7"}, reply.tool_calls
    with pytest.raises(ConstraintError, match="needs an id .*image_id.* Add an image"):
        sampled.bind_tools([tools["describe_image"]], tool_choice="any").invoke("x", allowed_ids={"image_id": []})
    # With "auto" and nothing to call, the model may still answer in words.
    assert isinstance(sampled.bind_tools([tools["describe_image"]]).invoke("x", allowed_ids={"image_id": []},
                                                                            max_tokens=4), AIMessage)


def test_a_named_tool_choice_gets_only_that_tool(sampled, tools, store):
    ids = ids_by_argument([store])
    bound = sampled.bind_tools(list(tools.values()), tool_choice="read_page_text")
    for seed in range(20):
        reply = bound.invoke("Read it.", seed=seed, allowed_ids=ids)
        assert reply.tool_calls and {c["name"] for c in reply.tool_calls} == {"read_page_text"}
        assert invalid_calls(reply, tools, ids) == []


class Currency(str, Enum):
    EUR = "EUR"
    CNY = "人民币"


class Party(BaseModel):
    name: str = Field(description="名称: the company's name")
    city: str


class Line(BaseModel):
    description: str
    quantity: int = Field(ge=1, le=99)
    unit_price: float


class Invoice(BaseModel):
    """Fields read from an invoice."""

    number: str
    seller: Party
    currency: Currency
    lines: list[Line] = Field(min_length=1, max_length=2)
    total: float
    note: str | None = None


def test_structured_output_json_schema_always_validates_nested_pydantic_with_enums_numbers_and_chinese(sampled, tiny_model):
    structured = sampled.with_structured_output(Invoice, method="json_schema")
    question = "读发票: the invoice's fields."
    chinese = free_valid = 0
    currencies: set[Currency] = set()
    for seed in range(RUNS):
        budget = (100, 150)[seed % 2]
        invoice = structured.invoke(question, seed=seed, max_tokens=budget)
        assert isinstance(invoice, Invoice), seed
        written = invoice.model_dump_json(exclude={"currency"})  # the model's own strings, not the enum's
        chinese += any("\u4e00" <= ch <= "\u9fff" for ch in written)
        currencies.add(invoice.currency)
        if seed < FREE_RUNS:
            free = sampling(tiny_model, seed=seed, max_tokens=budget, constrain=False)
            unconstrained = free.with_structured_output(Invoice, method="json_schema", include_raw=True).invoke(question)
            free_valid += unconstrained["parsed"] is not None
    print(f"\nwith_structured_output json_schema: constrained {RUNS}/{RUNS} valid, unconstrained {free_valid}/{FREE_RUNS}; "
          f"{chinese} with Chinese text in the model's strings")
    # Which enum values the random model picks is its draw's choice; that each is one of them is the validity above.
    assert currencies and currencies <= set(Currency)
    assert free_valid == 0 and chinese > 0


def test_include_raw_gives_raw_parsed_and_parsing_error(tiny_model):
    llm = sampling(tiny_model, seed=3, max_tokens=200)
    raw = llm.with_structured_output(Invoice, method="json_schema", include_raw=True).invoke("x")
    assert set(raw) == {"raw", "parsed", "parsing_error"}
    assert isinstance(raw["raw"], AIMessage) and raw["parsing_error"] is None
    assert Invoice.model_validate_json(raw["raw"].content) == raw["parsed"]
    # A reply that does not parse: no exception, the error is handed back with the raw reply.
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=40, constrain=False)
    with scripted_replies(llm.runtime, ['{"number": "A-1"']):
        broken = llm.with_structured_output(Invoice, method="json_schema", include_raw=True).invoke("x")
    assert broken["parsed"] is None and broken["raw"].content == '{"number": "A-1"'
    assert isinstance(broken["parsing_error"], OutputParserException)
    assert str(broken["parsing_error"]).startswith("Failed to parse Invoice from completion")
    with scripted_replies(llm.runtime, ['{"number": "A-1"']), pytest.raises(OutputParserException, match="Failed to parse Invoice"):
        llm.with_structured_output(Invoice, method="json_schema").invoke("x")


def test_typed_dicts_json_schemas_and_json_mode_constrain_the_reply_too(sampled):
    from typing_extensions import TypedDict

    class Point(TypedDict):
        x: int
        label: str

    schema = {"type": "object", "properties": {"颜色": {"enum": ["红", "蓝"]}}, "required": ["颜色"]}
    for seed in range(10):
        point = sampled.with_structured_output(Point, method="json_schema").invoke("x", seed=seed)
        assert set(point) == {"x", "label"} and isinstance(point["x"], int)
        assert sampled.with_structured_output(schema, method="json_schema").invoke("x", seed=seed)["颜色"] in ("红", "蓝")
        assert isinstance(sampled.with_structured_output(None, method="json_mode").invoke("x", seed=seed), dict)
    with pytest.raises(ValueError, match="method must be one of"):
        sampled.with_structured_output(Point, method="xml")


def test_function_calling_structured_output_is_a_constrained_forced_call(sampled):
    structured = sampled.with_structured_output(Invoice)  # the default method: a forced call of a tool "Invoice"
    for seed in range(10):
        assert isinstance(structured.invoke("x", seed=seed, max_tokens=150), Invoice)


def test_response_format_and_tools_in_one_call_is_a_clear_error(sampled, tools):
    with pytest.raises(ValueError, match="response_format and tools cannot be used in one call"):
        sampled.bind_tools([tools["describe_image"]]).invoke("x", response_format={"type": "json_object"})


class PlannerCalls(BaseCallbackHandler):
    """The ids the planner was told at each step, in order."""

    def __init__(self):
        self.allowed: list[dict[str, list[str]]] = []

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.allowed.append(kwargs["invocation_params"]["allowed_ids"])


def test_the_agent_with_the_tiny_model_as_planner_makes_only_valid_calls_on_existing_ids(tiny_model):
    """Every planner step is a valid call of an existing tool on an id the store holds at that step: the ids
    are read again at each step (an image added between two questions is offered at once)."""
    planner_steps = 0
    for seed in range(6):
        store = ImageStore(index_pages=False)
        store.add(draw_invoice())
        store.add(draw_bar_chart())
        seen = PlannerCalls()
        planner = ChatQwenVL(model=tiny_model, engine="torch", temperature=1.0, seed=seed, max_tokens=80, callbacks=[seen])
        vlm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=4)
        graph = build_agent(planner, store=store, vlm=vlm, max_steps=4, tool_choice="any", ocr_engine="vlm", max_tokens=4)
        tools = {tool.name: tool for tool in make_tools(None, store)}
        steps = []
        for question in ("What is the total? Images: img-1, img-2.", "And on the new page img-3?"):
            if steps:
                assert store.add(draw_invoice()) == "img-3"
            state = graph.invoke({"messages": [HumanMessage(question)]})
            steps += [m for m in state["messages"] if isinstance(m, AIMessage) and not m.response_metadata.get("stopped_early")]
        assert len(steps) == len(seen.allowed) == 8
        held = store.ids()
        for number, (step, allowed) in enumerate(zip(steps, seen.allowed)):
            assert allowed["image_id"] == held[: len(allowed["image_id"])] and held[:2] == ["img-1", "img-2"]
            assert ("img-3" in allowed["image_id"]) == (number >= 4)  # offered from the step after it was added
            assert invalid_calls(step, tools, allowed) == [], (seed, step.tool_calls, step.invalid_tool_calls)
            planner_steps += 1
    print(f"\nagent with the tiny planner, tool_choice='any': {planner_steps}/{planner_steps} planner steps are valid "
          "calls on ids the store held")


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory) -> str:
    from qwenvl_agent.vlm.testing import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("thinking"), thinking=True))


def test_a_thinking_model_reasons_freely_then_calls_or_answers_in_json_under_the_grammar(thinking_model, store, tools):
    ids = ids_by_argument([store])
    llm = sampling(thinking_model, max_tokens=100)
    assert llm.runtime.opens_thinking
    bound = llm.bind_tools(list(tools.values()), tool_choice="any")
    structured = llm.with_structured_output(Line, method="json_schema")
    for seed in range(8):
        reply = bound.invoke("Read img-1.", seed=seed, allowed_ids=ids)
        assert invalid_calls(reply, tools, ids) == [], (seed, reply.tool_calls, reply.invalid_tool_calls)
        assert reply.additional_kwargs.get("reasoning_content")  # it did reason first, unconstrained
        assert isinstance(structured.invoke("The line.", seed=seed), Line)


def test_a_forced_call_reports_the_decode_steps_jump_forward_saved(tiny_model, store, tools):
    """The reply's metadata counts the forward passes and the tokens the grammar fed without one: a forced
    call's JSON scaffolding (name, braces, key names) costs no pass of its own."""
    model = sampling(tiny_model, temperature=0.0, seed=3)
    bound = model.bind_tools([tools["read_page_text"], tools["zoom_image"]], tool_choice="zoom_image")
    reply = bound.invoke([HumanMessage("Zoom into the top left of img-1.")], allowed_ids=ids_by_argument([store]))
    timings = reply.response_metadata["timings"]
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "zoom_image"
    output = reply.usage_metadata["output_tokens"]
    assert timings["forced_tokens"] > 0
    assert timings["decode_steps"] + timings["forced_tokens"] <= output
    assert timings["decode_steps"] < output
