"""Parsing of Qwen3-VL's <tool_call> blocks, on replies written the way the model writes them."""

from __future__ import annotations

from qwenvl_agent.vlm.tool_calls import ToolCallSplitter, parse_tool_calls

ONE = '<tool_call>\n{"name": "ocr_image", "arguments": {"image_id": "img-1"}}\n</tool_call>'
TWO = (
    '<tool_call>\n{"name": "ocr_image", "arguments": {"image_id": "img-1"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "read_chart", "arguments": {"image_id": "img-2", "question": "Which quarter is highest?"}}\n</tool_call>'
)


def test_one_call():
    reply = parse_tool_calls(ONE)
    assert reply.content == ""
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("ocr_image", {"image_id": "img-1"})]
    assert reply.tool_calls[0]["id"].startswith("call_")
    assert reply.invalid_tool_calls == []


def test_two_calls_keep_their_order_and_distinct_ids():
    reply = parse_tool_calls(TWO)
    assert [c["name"] for c in reply.tool_calls] == ["ocr_image", "read_chart"]
    assert reply.tool_calls[1]["args"]["question"] == "Which quarter is highest?"
    assert reply.tool_calls[0]["id"] != reply.tool_calls[1]["id"]


def test_text_before_a_call_is_kept_as_content():
    reply = parse_tool_calls("I will read the invoice first.\n" + ONE)
    assert reply.content == "I will read the invoice first."
    assert len(reply.tool_calls) == 1


def test_json_as_small_models_write_it_is_repaired():
    for block in ('{"name": "ocr_image", "arguments": {"image_id": img-1}}', "{'name': 'ocr_image', 'arguments': {'image_id': 'img-1',},}",
                  '{"name": "ocr_image", "arguments": {"image_id": "img-1"}'):
        reply = parse_tool_calls(f"<tool_call>\n{block}\n</tool_call>")
        assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("ocr_image", {"image_id": "img-1"})], block


def test_what_is_not_a_call_at_all_becomes_an_invalid_tool_call():
    reply = parse_tool_calls("<tool_call>\nplease run ocr_image on img-1\n</tool_call>")
    assert reply.tool_calls == []
    (bad,) = reply.invalid_tool_calls
    assert "not a JSON object" in bad["error"] and "img-1" in bad["args"]


def test_missing_name_and_non_object_arguments_are_invalid():
    assert parse_tool_calls('<tool_call>\n{"arguments": {}}\n</tool_call>').invalid_tool_calls[0]["error"]
    bad = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": [1, 2]}\n</tool_call>').invalid_tool_calls
    assert "must be a JSON object" in bad[0]["error"]


def test_nested_arguments_and_arguments_as_a_json_string():
    nested = '<tool_call>\n{"name": "zoom_image", "arguments": {"image_id": "doc-1/page-2", "box": [10, 20, 500, 600], "opts": {"a": {"b": null}}}}\n</tool_call>'
    call = parse_tool_calls(nested).tool_calls[0]
    assert call["args"] == {"image_id": "doc-1/page-2", "box": [10, 20, 500, 600], "opts": {"a": {"b": None}}}
    as_string = '<tool_call>\n{"name": "f", "arguments": "{\\"x\\": 1}"}\n</tool_call>'
    assert parse_tool_calls(as_string).tool_calls[0]["args"] == {"x": 1}


def test_chinese_text_and_arguments():
    reply = parse_tool_calls(
        '我先识别发票。\n<tool_call>\n{"name": "ocr_image", "arguments": {"image_id": "img-1", "region": "右上角"}}\n</tool_call>'
    )
    assert reply.content == "我先识别发票。"
    assert reply.tool_calls[0]["args"]["region"] == "右上角"


def test_an_unclosed_block_at_the_end_is_still_parsed():
    reply = parse_tool_calls('<tool_call>\n{"name": "describe_image", "arguments": {"image_id": "img-1"}}')
    assert reply.tool_calls[0]["name"] == "describe_image"


def test_plain_text_passes_through_untouched():
    assert parse_tool_calls("  The total is 1,500.00.\n").content == "  The total is 1,500.00.\n"


def test_streaming_splitter_never_leaks_a_partial_marker():
    splitter = ToolCallSplitter()
    parts = []
    text = "Checking.\n" + TWO + "\nDone."
    for i in range(0, len(text), 3):
        parts += splitter.feed(text[i : i + 3])
    parts += splitter.finish()
    texts = "".join(p for p in parts if isinstance(p, str))
    assert "<" not in texts and "tool_call" not in texts
    assert texts.startswith("Checking.") and texts.endswith("Done.")
    assert [p.name for p in parts if not isinstance(p, str)] == ["ocr_image", "read_chart"]
