"""The agent with a planner that writes what a real 2B model writes: lenient tool-call parsing, broken calls
sent back as errors, several calls in one turn, the chat template's rules, Thinking checkpoints, and a
repetition guard. The planner here is ChatQwenVL itself with forced replies (the real parsing path)."""

from __future__ import annotations

import pytest
from documents import draw_invoice
from langchain_core.messages import ChatMessage, HumanMessage, SystemMessage

from qwenvl_agent.agent import DocumentAssistant, ToolCall
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.generation import repeats_a_cycle
from qwenvl_agent.vlm.messages import to_qwen_messages
from qwenvl_agent.vlm.testing import make_tiny_checkpoint, scripted_replies, tool_call_text

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

# Replies in the format the published Qwen3-VL-2B-Instruct template asks for, and as small models break it.
VERBATIM = {
    "as the template asks": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    "single quotes": "<tool_call>\n{'name': 'get_weather', 'arguments': {'city': 'Oslo'}}\n</tool_call>",
    "trailing commas": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo",},}\n</tool_call>',
    "missing closing tag": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    "missing brace": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}\n</tool_call>',
    "arguments as a JSON string": '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n</tool_call>',
    "bare JSON without tags": '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    "fenced bare JSON": '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```',
    "text before the call": 'Let me check the weather.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
}


@pytest.fixture
def llm(tiny_model):
    return ChatQwenVL(model=tiny_model, engine="torch", max_tokens=80)


@pytest.mark.parametrize("shape", list(VERBATIM))
def test_tool_calls_as_small_models_write_them(llm, shape):
    bound = llm.bind_tools([WEATHER])
    with scripted_replies(llm.runtime, [VERBATIM[shape]]):
        message = bound.invoke("What is the weather in Oslo?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Oslo"})], shape
    assert message.invalid_tool_calls == []


def test_several_calls_and_chinese_text(llm):
    reply = "我来查一下两个城市的天气。\n" + tool_call_text("get_weather", {"city": "杭州"}) + "\n" + tool_call_text("get_weather", {"city": "北京"})
    with scripted_replies(llm.runtime, [reply]):
        message = llm.bind_tools([WEATHER]).invoke("杭州和北京的天气？", max_tokens=400)
    assert [c["args"]["city"] for c in message.tool_calls] == ["杭州", "北京"]
    assert message.content == "我来查一下两个城市的天气。"


def test_bare_json_is_only_a_call_when_tools_are_bound_and_named(llm):
    with scripted_replies(llm.runtime, ['{"name": "get_weather", "arguments": {"city": "Oslo"}}', '{"name": "other", "arguments": {}}']):
        plain = llm.invoke("Reply with JSON.")
        unknown = llm.bind_tools([WEATHER]).invoke("Reply with JSON.")
    assert plain.tool_calls == [] and plain.content.startswith("{")
    assert unknown.tool_calls == []


@pytest.mark.parametrize(
    "reply, content",
    [
        ('{"name": "get_weather", "arguments": {"city": "Oslo"}}\n{"name": "get_weather", "arguments": {"city": "Bergen"}}', ""),
        ('[{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_weather", "arguments": {"city": "Bergen"}}]', ""),
        ("I will check both.\n```json\n{'name': 'get_weather', 'arguments': {'city': 'Oslo'},}\n"
         "{'name': 'get_weather', 'arguments': {'city': 'Bergen'}}\n```", "I will check both."),
    ],
)
def test_several_bare_calls_and_text_before_them(llm, reply, content):
    with scripted_replies(llm.runtime, [reply, reply]):
        whole = llm.bind_tools([WEATHER]).invoke("Weather in Oslo and Bergen?", max_tokens=400)
        streamed = list(llm.bind_tools([WEATHER]).stream("Weather in Oslo and Bergen?", max_tokens=400))
    assert [c["args"]["city"] for c in whole.tool_calls] == ["Oslo", "Bergen"] and whole.content == content
    merged = streamed[0]
    for chunk in streamed[1:]:
        merged += chunk
    assert [c["args"]["city"] for c in merged.tool_calls] == ["Oslo", "Bergen"]


def test_json_that_is_not_only_calls_stays_the_answer(llm):
    replies = ['{"name": "get_weather", "arguments": {"city": "Oslo"}} is what I would call.', 'Here is JSON:\n{"name": "John"}']
    with scripted_replies(llm.runtime, replies):
        first, second = (llm.bind_tools([WEATHER]).invoke("?") for _ in range(2))
    assert first.tool_calls == [] and first.content == replies[0]
    assert second.tool_calls == [] and second.content == replies[1]


def planner_run(llm, replies, question="What is the invoice total?"):
    """A run of the agent whose planner is ``llm`` with forced replies; OCR by RapidOCR (no model call)."""
    assistant = DocumentAssistant(llm, max_steps=6, ocr_engine="rapidocr")
    with scripted_replies(llm.runtime, replies) as left:
        events = list(assistant.stream(question, images=[draw_invoice()]))
    return events, left


def test_a_single_quoted_call_takes_a_step_instead_of_ending_the_run(llm):
    events, left = planner_run(llm, ["<tool_call>\n{'name': 'ocr_image', 'arguments': {'image_id': 'img-1'}}\n</tool_call>", "The total is 1,500.00."])
    answer = events[-1]
    assert left == [] and [s.tool for s in answer.steps] == ["ocr_image"]
    assert "12345678" in answer.steps[0].output and answer.text == "The total is 1,500.00."


@pytest.mark.parametrize(
    "broken, problem",
    [
        ("<tool_call>\nocr_image img-1\n</tool_call>", "not a JSON object"),
        (tool_call_text("read_invoice", {"image_id": "img-1"}), "read_invoice"),
        (tool_call_text("zoom_image", {"image_id": "img-1", "box": [1, 2]}), "box"),
    ],
)
def test_what_cannot_be_used_goes_back_as_an_error_and_the_run_goes_on(llm, broken, problem):
    events, left = planner_run(llm, [broken, tool_call_text("ocr_image", {"image_id": "img-1"}), "Total: 1,500.00."])
    answer = events[-1]
    assert left == [] and answer.text == "Total: 1,500.00."
    assert broken not in answer.text
    assert answer.steps[-1].tool == "ocr_image" and not answer.steps[-1].is_error
    assert any(s.is_error and problem in s.output for s in answer.steps), [s.output for s in answer.steps]


def test_several_calls_in_one_turn_run_one_after_another(llm):
    two = tool_call_text("ocr_image", {"image_id": "img-1"}) + "\n" + tool_call_text("zoom_image", {"image_id": "img-1", "box": [0, 0, 500, 500]})
    events, left = planner_run(llm, [two, "Done."])
    calls = [e for e in events if isinstance(e, ToolCall)]
    answer = events[-1]
    assert left == [] and [c.step for c in calls] == [1, 1]
    assert sorted(s.tool for s in answer.steps) == ["ocr_image", "zoom_image"]
    assert not any(s.is_error for s in answer.steps), [s.output for s in answer.steps]


def test_extra_system_messages_other_roles_and_their_images_are_never_dropped(llm, invoice_image):
    messages = [
        SystemMessage("You read invoices."),
        HumanMessage("Hello"),
        SystemMessage(content=[{"type": "text", "text": "Answer in French."}, {"type": "image", "image": invoice_image}]),
        ChatMessage(role="critic", content="Be brief."),
        ChatMessage(role="developer", content="Never guess."),
    ]
    template, images = to_qwen_messages(messages)
    processor = llm.runtime.processor
    prompt = processor.apply_chat_template(template, tokenize=False, add_generation_prompt=True)
    assert prompt.count("<|im_start|>system") == 1
    for text in ("You read invoices.", "Answer in French.", "[critic]", "Be brief.", "Never guess."):
        assert text in prompt, text
    assert len(images) == 1 and prompt.count("<|image_pad|>") == 1
    # The checkpoint's template follows the published one: given as they are, these would vanish.
    raw = [{"role": "system", "content": "A"}, {"role": "user", "content": "B"}, {"role": "system", "content": "lost"},
           {"role": "critic", "content": "gone"}]
    rendered = processor.apply_chat_template(raw, tokenize=False)
    assert "lost" not in rendered and "gone" not in rendered


@pytest.fixture(scope="module")
def thinking_llm(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("thinking"), thinking=True)
    return ChatQwenVL(model=str(path), engine="torch", max_tokens=80)


def test_a_thinking_models_reasoning_is_kept_apart_and_calls_in_it_are_not_made(thinking_llm):
    assert thinking_llm.runtime.opens_thinking
    reply = "The user wants weather. " + tool_call_text("get_weather", {"city": "Rome"}) + " maybe\n</think>\n\nIt is sunny."
    with scripted_replies(thinking_llm.runtime, [reply, reply]):
        message = thinking_llm.bind_tools([WEATHER]).invoke("Weather?")
        chunks = list(thinking_llm.bind_tools([WEATHER]).stream("Weather?"))
    assert message.content == "It is sunny." and message.tool_calls == []
    assert "The user wants weather." in message.additional_kwargs["reasoning_content"]
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    assert streamed.content == "It is sunny." and "get_weather" in streamed.additional_kwargs["reasoning_content"]


def test_a_forced_call_on_a_thinking_model_comes_after_its_reasoning(thinking_llm):
    bound = thinking_llm.bind_tools([WEATHER], tool_choice="get_weather")
    with scripted_replies(thinking_llm.runtime, ["I need the weather for Oslo.\n</think>", '{"city": "Oslo"}}\n</tool_call>']) as left:
        message = bound.invoke("Weather in Oslo?")
    assert left == []
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert message.additional_kwargs["reasoning_content"].strip() == "I need the weather for Oslo."


def test_the_models_own_sampling_and_a_seed_for_reproducible_replies(llm):
    sampled = {llm.invoke("hi", sampling="model", max_tokens=12).content for _ in range(4)}
    assert len(sampled) > 1
    first = llm.invoke("hi", sampling="model", seed=7, max_tokens=12).content
    assert llm.invoke("hi", sampling="model", seed=7, max_tokens=12).content == first
    with pytest.raises(ValueError, match="sampling must be"):
        llm.invoke("hi", sampling="creative")


def test_a_reply_that_loops_is_stopped_with_finish_reason_repetition(llm):
    loop = "| 12 | 34 |\n" * 60
    with scripted_replies(llm.runtime, [loop, loop]):
        guarded = llm.invoke("Read the table.", repetition_guard=True, max_tokens=400)
        free = llm.invoke("Read the table.", max_tokens=400)
    assert guarded.response_metadata["finish_reason"] == "repetition"
    assert guarded.usage_metadata["output_tokens"] < free.usage_metadata["output_tokens"]
    assert repeats_a_cycle([1, 2, 3] * 20) and not repeats_a_cycle(list(range(60)))
