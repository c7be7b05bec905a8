"""The image tools, invoked directly and in an LCEL chain, over the tiny checkpoint's real vision path."""

from __future__ import annotations

import json

import pytest
from documents import draw_bar_chart, draw_invoice
from given import given_calls, given_prompts
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda

from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies

CHART_REPLY = (
    'Here is the chart:\n```json\n{"chart_type": "bar", "title": "Quarterly sales (M)", "x_axis": "Quarter", '
    '"y_axis": "Sales", "categories": ["Q1", "Q2", "Q3", "Q4"], "series": [{"name": "sales", '
    '"values": [0.8, 0.9, 1.2, 1.0]}], "answer": "Q3 is highest"}\n```\nDone.'
)


@pytest.fixture
def store():
    store = ImageStore()
    store.add(draw_invoice(), name="invoice.png")
    store.add(draw_bar_chart(), name="chart.png")
    return store


@pytest.fixture
def tools(tiny_model, store):
    """The tools with the vision model reading pages (the offline OCR engine has tests of its own)."""
    return {t.name: t for t in make_tools(ChatQwenVL(model=tiny_model), store, ocr_engine="vlm")}


def run(tool, **args) -> ToolMessage:
    """Invoke a tool the way the agent does (a tool call), returning the ToolMessage."""
    return tool.invoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})


def test_make_tools_gives_seven_tools_with_schemas(tools):
    assert set(tools) == {"ocr_image", "read_chart", "describe_image", "zoom_image", "locate_in_image", "search_document", "read_page_text"}
    assert set(tools["ocr_image"].args) == {"image_id", "region"}
    assert set(tools["zoom_image"].args) == {"image_id", "box"}
    for tool in tools.values():
        assert 40 < len(tool.description) < 300  # a prompt a 2B model reads: short and concrete


def test_ocr_returns_the_models_text_and_records_the_image(tiny_runtime, tools):
    with scripted_replies(tiny_runtime, ["INVOICE No. 12345678\nTotal: 1,500.00\n"]):
        message = run(tools["ocr_image"], image_id="img-1")
    assert message.status == "success"
    assert message.content == "INVOICE No. 12345678\nTotal: 1,500.00"
    assert message.artifact["image_ids"] == ["img-1"] and message.artifact["seconds"] >= 0


def test_ocr_uses_a_larger_image_budget_than_describe(tiny_runtime, tools, store):
    big = store.add(draw_invoice().resize((2000, 2800)))
    input_tokens = {}
    for name in ("ocr_image", "describe_image"):
        with scripted_replies(tiny_runtime, ["x"]), get_usage_metadata_callback() as usage:
            run(tools[name], image_id=big)
        input_tokens[name] = sum(u["input_tokens"] for u in usage.usage_metadata.values())
    assert input_tokens["ocr_image"] > 2 * input_tokens["describe_image"]
    assert input_tokens["ocr_image"] <= tools["ocr_image"].max_image_tokens + 200
    assert tools["ocr_image"].vlm.runtime is tools["describe_image"].vlm.runtime  # one copy of the weights


def test_ocr_region_reads_a_crop(tiny_runtime, tools, store):
    with scripted_replies(tiny_runtime, ["Total: 1,500.00"]):
        message = run(tools["ocr_image"], image_id="img-1", region=[0, 500, 1000, 1000])
    assert message.artifact["image_ids"] == ["img-1", "img-1/region-1"]
    assert store.get("img-1/region-1").size[1] == pytest.approx(store.get("img-1").size[1] / 2, abs=2)


def test_read_chart_returns_a_table_and_structured_data(tiny_runtime, tools):
    with scripted_replies(tiny_runtime, [CHART_REPLY]):
        message = run(tools["read_chart"], image_id="img-2", question="Which quarter is highest?")
    assert message.status == "success"
    assert "| Q3 | 1.2 |" in message.content.replace("  ", " ")
    assert "Q3 is highest" in message.content
    chart = message.artifact["data"]["chart"]
    assert chart["categories"] == ["Q1", "Q2", "Q3", "Q4"] and chart["series"][0]["values"][2] == 1.2
    assert message.artifact["data"]["rows"][2] == {"category": "Q3", "sales": 1.2}


def test_read_chart_gives_its_format_as_a_system_message_the_same_for_every_chart(tiny_runtime, tools, monkeypatch):
    """The reply format opens the prompt, before the image: every chart's prompt shares that opening, which a
    model keeping prefixes reads once."""
    from qwenvl_agent.tools.chart_data import CHART_INSTRUCTIONS

    chart = tools["read_chart"]
    prompts = given_prompts(monkeypatch, chart.vlm)
    with scripted_replies(tiny_runtime, [CHART_REPLY, CHART_REPLY]):
        run(chart, image_id="img-2", question="Which quarter is highest?")
        run(chart, image_id="img-1")
    first, second = (prompt.messages for prompt in prompts)
    assert first[0] == second[0] == {"role": "system", "content": [{"type": "text", "text": "You read charts. " + CHART_INSTRUCTIONS}]}
    assert [part["type"] for part in first[1]["content"]] == ["image", "text"]
    assert first[1]["content"][1]["text"] == "Read this chart.\nQuestion: Which quarter is highest?"
    assert second[1]["content"][1]["text"] == "Read this chart."


def test_read_chart_drafts_the_printed_title_and_labels_from_rapidocrs_reading(tiny_runtime, tools, monkeypatch):
    from qwenvl_agent.tools import rapid_ocr, to_text

    chart = tools["read_chart"]
    calls = given_calls(monkeypatch, chart.vlm)
    reading = to_text(rapid_ocr.read_pieces(chart.store.get("img-2")))
    with scripted_replies(tiny_runtime, [CHART_REPLY]):
        message = run(chart, image_id="img-2")
    assert message.status == "success"
    ((prompt, settings),) = calls
    assert settings.draft_text == reading and "Q3" in reading  # what is printed on the chart, to draft from
    shown = " ".join(part.get("text", "") for turn in prompt.messages for part in turn["content"])
    assert "Q3" not in shown  # and nothing of it shown to the model


def test_read_chart_reports_unparseable_replies_as_tool_errors(tiny_runtime, tools):
    with scripted_replies(tiny_runtime, ["I cannot see a chart here, sorry."]):
        message = run(tools["read_chart"], image_id="img-2")
    assert message.status == "error"
    assert "Could not read a chart in img-2" in message.content


def test_describe_image_passes_the_focus(tiny_runtime, tools):
    with scripted_replies(tiny_runtime, ["A bar chart with four blue bars."]):
        message = run(tools["describe_image"], image_id="img-2", focus="the colours")
    assert message.content == "A bar chart with four blue bars."


def test_zoom_registers_a_new_id(tools, store):
    message = run(tools["zoom_image"], image_id="img-1", box=[500, 0, 1000, 500])
    assert "img-1/zoom-1" in message.content
    assert "img-1/zoom-1" in store
    assert message.artifact["data"] == {"box": [500.0, 0.0, 1000.0, 500.0], "parent": "img-1"}
    as_text = run(tools["zoom_image"], image_id="img-1", box="[0, 0, 500, 500]")
    assert "img-1/zoom-2" in as_text.content


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("ocr_image", {"image_id": "img-7"}, "No image 'img-7'. Known ids: img-1, img-2"),
        ("zoom_image", {"image_id": "img-1", "box": [600, 600, 100, 100]}, "x1 < x2"),
        ("zoom_image", {"image_id": "img-1", "box": [1, 2]}, "box"),
        ("describe_image", {}, "image_id"),
    ],
)
def test_bad_arguments_come_back_as_tool_errors(tools, tool, args, message):
    result = run(tools[tool], **args)
    assert result.status == "error"
    assert message in result.content


async def test_tools_work_async(tiny_runtime, tools):
    with scripted_replies(tiny_runtime, ["Total: 1,500.00"]):
        message = await tools["ocr_image"].ainvoke(
            {"name": "ocr_image", "args": {"image_id": "img-1"}, "id": "c", "type": "tool_call"}
        )
    assert message.content == "Total: 1,500.00"


def test_tools_in_a_custom_lcel_chain(tiny_runtime, tiny_model, store):
    """OCR an image, then ask the model about the text: the README's custom-chain example."""
    ocr = make_tools(ChatQwenVL(model=tiny_model), store, ocr_engine="vlm")[0]
    llm = ChatQwenVL(model=tiny_model, max_tokens=16)
    chain = (
        RunnableLambda(lambda image_id: {"image_id": image_id})
        | ocr
        | RunnableLambda(lambda text: f"Which number is the invoice total?\n\n{text}")
        | llm
    )
    with scripted_replies(tiny_runtime, ["Total: 1,500.00", "1,500.00"]) as left:
        answer = chain.invoke("img-1")
    assert left == [] and answer.content == "1,500.00"


def test_tools_work_with_any_chat_model_that_takes_images(store):
    """The tools only need a LangChain chat model that accepts image blocks (ChatOllama, ChatOpenAI, …)."""
    reply = AIMessage('{"categories": ["A"], "series": [{"name": "s", "values": [3]}]}')
    other = FakeMessagesListChatModel(responses=[reply])
    seen = []
    other.callbacks = [_Recorder(seen)]
    chart = make_tools(other, store)[1]
    message = run(chart, image_id="img-2")
    assert message.status == "success" and "| A | 3" in message.content.replace("  ", " ")
    assert json.dumps(message.artifact["data"]["rows"]) == '[{"category": "A", "s": 3.0}]'
    (sent,) = seen
    system, user = sent[0]
    assert system.type == "system" and system.content == chart.system_prompt  # the reply format, for any model
    assert [block["type"] for block in user.content_blocks] == ["image", "text"]
    block = user.content_blocks[0]
    assert block.get("base64") and block.get("mime_type") == "image/png"  # PNG, as base64, for other models


def test_chatqwenvl_gets_the_stores_image_itself_and_nothing_is_stored_on_it(tiny_runtime, tools, store):
    """No PNG and base64 round trip for our own model: the store's decoded image goes in as it is. Its cache
    key is computed from its pixels on every call and never kept on the image, where Pillow would copy it
    to every crop and resize (a zoom would then be taken for its parent)."""
    seen = []
    tools["describe_image"].vlm.callbacks = [_Recorder(seen)]
    with scripted_replies(tiny_runtime, ["An invoice.", "An invoice again."]):
        run(tools["describe_image"], image_id="img-1")
        encoded = tiny_runtime.vision_cache.misses
        run(tools["describe_image"], image_id="img-1")
    block = seen[0][0][0].content[0]
    assert block["image"] is store.get("img-1")
    assert store.get("img-1").info == {}
    assert tiny_runtime.vision_cache.misses == encoded, "the same image again is not encoded again"


class _Recorder(BaseCallbackHandler):
    def __init__(self, seen):
        self.seen = seen

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.seen.append(messages)
