"""A planner prefix paid once and kept on disk: the system prompt and tool schemas' KV state, computed once,
read back by a runtime that starts empty, and never used for another prompt, tool set or model."""

from __future__ import annotations

import pytest
from documents import draw_bar_chart, draw_invoice
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage

from qwenvl_agent.agent import DocumentAssistant
from qwenvl_agent.agent.graph import SYSTEM_PROMPT
from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm import warm as warm_module
from qwenvl_agent.vlm.testing import scripted_replies
from qwenvl_agent.vlm.warm import prefix_key, weights_fingerprint

QUESTION = "What is the total of the invoice img-1?"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The saved prefixes go to a folder of each test's own."""
    monkeypatch.setattr(warm_module, "prefix_folder", lambda: tmp_path / "prefixes")
    return tmp_path / "prefixes"


def planner_call(llm, tools):
    """The agent's first planner call (greedy, a few tokens): its reply and where its prompt's tokens came from."""
    reply = llm.bind_tools(tools).invoke([SystemMessage(SYSTEM_PROMPT), HumanMessage(QUESTION)])
    timings = reply.response_metadata["timings"]
    return reply.content, reply.usage_metadata["input_tokens"], timings["prefill_tokens"], timings["reused_tokens"]


def test_a_runtime_that_starts_empty_reads_the_saved_prefix_and_prefills_only_the_question(tiny_model, engine, folder):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=8)
    tools = make_tools(llm, ImageStore())
    runtime = llm.runtime
    runtime.prefix_cache.clear()
    cold_reply, length, cold_prefill, cold_reused = planner_call(llm, tools)
    assert cold_reused == 0 and cold_prefill >= length - 1  # (the torch engine reads the last token while decoding)

    # The cold call's prompt began with the prefix: it is held, and saved for the next process.
    held = llm.warm_prefix([SystemMessage(SYSTEM_PROMPT)], tools)
    assert held.source == "memory" and 0 < held.tokens < length
    assert len(list(folder.glob("*.safetensors"))) == 1

    runtime.prefix_cache.clear()
    computed = llm.warm_prefix([SystemMessage(SYSTEM_PROMPT + " Be brief.")], tools)
    assert computed.source == "computed" and computed.path.parent == folder and computed.path.is_file()

    runtime.prefix_cache.clear()  # as in a new process: nothing in memory, the file on disk
    loaded = llm.warm_prefix([SystemMessage(SYSTEM_PROMPT)], tools)
    assert (loaded.source, loaded.tokens) == ("disk", held.tokens)
    reply, warm_length, prefill, reused = planner_call(llm, tools)
    assert warm_length == length and reused == held.tokens and prefill == cold_prefill - held.tokens
    assert reply == cold_reply  # greedy: the same reply as from a prompt read from nothing


def test_a_changed_prompt_tool_set_or_model_misses_the_saved_prefix(tiny_model, folder, tmp_path):
    llm = ChatQwenVL(model=tiny_model, engine="torch")
    tools = make_tools(llm, ImageStore())
    runtime = llm.runtime

    def warmed(prompt, offered):
        runtime.prefix_cache.clear()
        return llm.warm_prefix([SystemMessage(prompt)], offered).source

    assert warmed(SYSTEM_PROMPT, tools) in ("computed", "disk")
    assert warmed(SYSTEM_PROMPT, tools) == "disk"
    assert warmed(SYSTEM_PROMPT + " Be brief.", tools) == "computed"
    assert warmed(SYSTEM_PROMPT, tools[:-1]) == "computed"
    assert warmed(SYSTEM_PROMPT, tools) == "disk"
    # Another model, engine or precision with the same tokens: another key.
    tokens = [1, 2, 3]
    keys = {prefix_key(runtime, tokens)}
    for name, value in (("model_id", "another/model"), ("revision", "v2"), ("engine_name", "openvino"), ("dtype", "int4")):
        keys.add(prefix_key(_Like(runtime, **{name: value}), tokens))
    assert len(keys) == 5
    # New weights at the same path are another model.
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"one")
    before = weights_fingerprint(weights.parent)
    weights.write_bytes(b"other weights")
    assert weights_fingerprint(weights.parent) != before


def test_a_planner_with_prefix_reuse_off_keeps_no_prefix(tiny_model, folder):
    llm = ChatQwenVL(model=tiny_model, engine="torch", reuse_prefix=False)
    assert llm.warm_prefix([SystemMessage(SYSTEM_PROMPT)], make_tools(llm, ImageStore())) is None
    assert not folder.exists()


class _Timings(BaseCallbackHandler):
    def __init__(self):
        self.calls = []

    def on_llm_end(self, response, **kwargs):
        self.calls.append(response.generations[0][0].message.response_metadata["timings"])


def test_the_assistant_warms_its_planner_when_built_and_a_question_prefills_only_itself(tiny_model, folder):
    timings = _Timings()
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=40, callbacks=[timings])
    llm.runtime.prefix_cache.clear()
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")  # the model is loaded: warmed now
    warmed = assistant.warm()
    # Computed and saved when built: the planner's prefix, and the chart tool's reply format.
    assert warmed.source == "memory" and len(list(folder.glob("*.safetensors"))) == 2
    with scripted_replies(llm.runtime, ["The total is 1,500.00."]) as left:
        answer = assistant.ask("What is the total?", [draw_invoice()])
    assert left == [] and answer.answer == "The total is 1,500.00."
    (first,) = timings.calls
    assert first["reused_tokens"] == warmed.tokens and first["prefill_tokens"] > 0


def test_the_assistant_warms_the_chart_format_so_the_first_chart_reads_only_its_image_and_question(tiny_model, folder):
    timings = _Timings()
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=40, callbacks=[timings])
    llm.runtime.prefix_cache.clear()
    DocumentAssistant(llm, ocr_engine="rapidocr")  # the model is loaded: warmed now
    store = ImageStore()
    store.add(draw_bar_chart())
    chart = {tool.name: tool for tool in make_tools(llm, store)}["read_chart"]
    held = llm.warm_prefix([SystemMessage(chart.system_prompt)])
    assert held.source == "memory" and held.tokens > 150  # the format rules: the most of a chart's prompt text
    with scripted_replies(llm.runtime, ["type: bar\ntitle: Sales\nx: Quarter\ny: Sales\nQuarter | Sales\nQ1 | 1\nanswer: none"]):
        message = chart.invoke({"name": "read_chart", "args": {"image_id": "img-1"}, "id": "call-1", "type": "tool_call"})
    assert message.status == "success" and "| Q1 | 1 |" in message.content.replace("  ", " ")
    (call,) = timings.calls
    assert call["reused_tokens"] == held.tokens


def test_under_a_remote_planner_the_assistant_still_warms_the_chart_format_on_its_local_tools_model(tiny_model, folder):
    pytest.importorskip("langchain_openai")
    timings = _Timings()
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=40, callbacks=[timings])
    llm.runtime.prefix_cache.clear()
    # The planner is a server this test never reaches: warming must not call it, only the local tools' model.
    assistant = DocumentAssistant("remote-planner", backend="openai", base_url="http://127.0.0.1:9/v1", vlm=llm)
    assert assistant.warm() is None  # a remote planner keeps no prefix
    assert len(list(folder.glob("*.safetensors"))) == 1  # the chart's format, saved for the next process
    store = ImageStore()
    store.add(draw_bar_chart())
    chart = {tool.name: tool for tool in make_tools(llm, store)}["read_chart"]
    with scripted_replies(llm.runtime, ["type: bar\ntitle: Sales\nx: Quarter\ny: Sales\nQuarter | Sales\nQ1 | 1\nanswer: none"]):
        message = chart.invoke({"name": "read_chart", "args": {"image_id": "img-1"}, "id": "call-1", "type": "tool_call"})
    assert message.status == "success"
    (call,) = timings.calls
    # The first chart call read the format from what the warm-up held: only its image and question were new.
    assert call["reused_tokens"] == llm.warm_prefix([SystemMessage(chart.system_prompt)]).tokens > 150


class _Like:
    """A runtime with some of its identity changed."""

    def __init__(self, runtime, **changed):
        self._runtime, self._changed = runtime, changed

    def __getattr__(self, name):
        return self._changed.get(name, getattr(self._runtime, name))


def test_warming_a_constraining_planner_builds_the_grammar_view_of_the_tokenizer_before_the_first_call(tiny_model, folder):
    from qwenvl_agent.vlm import grammar_match

    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=40)
    store = ImageStore()
    store.add(draw_invoice())
    tools = make_tools(llm, store)
    tokenizer = llm.runtime.tokenizer
    grammar_match._ENVIRONMENTS.pop(tokenizer, None)  # as in a new process
    ChatQwenVL(model=tiny_model, engine="torch", constrain=False).warm_prefix([SystemMessage(SYSTEM_PROMPT)], tools)
    assert tokenizer not in grammar_match._ENVIRONMENTS  # a planner that does not constrain does not pay for it
    llm.warm_prefix([SystemMessage(SYSTEM_PROMPT)], tools)
    assert tokenizer in grammar_match._ENVIRONMENTS
    built = grammar_match._ENVIRONMENTS[tokenizer]
    with scripted_replies(llm.runtime, ['<tool_call>\n{"name": "ocr_image", "arguments": {"image_id": "img-1"}}\n</tool_call>']):
        reply = llm.bind_tools(tools, tool_choice="any").invoke([SystemMessage(SYSTEM_PROMPT), HumanMessage(QUESTION)])
    assert reply.tool_calls[0]["args"] == {"image_id": "img-1"}
    assert grammar_match._ENVIRONMENTS[tokenizer] is built  # the call used the one built when warming


@pytest.fixture
def fresh_ocr(monkeypatch):
    """RapidOCR's default reader as in a new process (nothing built, nothing read), its builds recorded."""
    from qwenvl_agent.tools import rapid_ocr

    builds = []
    build = rapid_ocr._build_engine

    def recorded(*args, **kwargs):
        builds.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(rapid_ocr, "_default", None)
    monkeypatch.setattr(rapid_ocr, "_prepared", False)
    monkeypatch.setattr(rapid_ocr, "_build_engine", recorded)
    return builds


def test_the_assistant_has_rapidocr_ready_before_the_question(tiny_model, folder, fresh_ocr):
    from qwenvl_agent.vlm.testing import tool_call_text

    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=60)
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")  # the model is loaded: warmed now, OCR too
    assert len(fresh_ocr) == 1
    script = [tool_call_text("ocr_image", {"image_id": "img-1"}), "The total is 1,500.00."]
    with scripted_replies(llm.runtime, script) as left:
        answer = assistant.ask("What is the total?", [draw_invoice()])
    assert left == [] and answer.answer == "The total is 1,500.00."
    (step,) = answer.steps
    assert step.tool == "ocr_image" and "1,500.00" in step.output
    assert len(fresh_ocr) == 1  # the question's OCR read with the engine built before it
    DocumentAssistant(llm, ocr_engine="rapidocr").warm()
    assert len(fresh_ocr) == 1  # built once per process


def test_an_ocr_engine_that_cannot_be_built_does_not_stop_the_warm_up_and_the_tool_says_why(
    tiny_model, folder, fresh_ocr, monkeypatch
):
    from qwenvl_agent.tools import OcrEngineError, rapid_ocr
    from qwenvl_agent.vlm.testing import tool_call_text

    def missing(*args, **kwargs):
        raise OcrEngineError("The offline OCR engine needs RapidOCR: pip install it, or use ocr_engine='vlm'.")

    monkeypatch.setattr(rapid_ocr, "_build_engine", missing)
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=60)
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")
    assert assistant.warm() is not None  # the planner's prefix is ready all the same
    script = [tool_call_text("ocr_image", {"image_id": "img-1"}), "I could not read the invoice."]
    with scripted_replies(llm.runtime, script) as left:
        answer = assistant.ask("What is the total?", [draw_invoice()])
    assert left == [] and answer.answer == "I could not read the invoice."
    (step,) = answer.steps
    assert step.is_error and "needs RapidOCR" in step.output


def test_a_prefix_read_from_disk_is_put_into_the_openvino_blocks_before_the_first_prompt(tiny_model, folder):
    from qwenvl_agent.vlm.openvino_export import openvino_available

    if not openvino_available():
        pytest.skip("the OpenVINO engine needs qwenvl-agent[openvino]")
    llm = ChatQwenVL(model=tiny_model, engine="openvino", max_tokens=8)
    engine = llm.runtime.engine
    if engine._paged is None:
        pytest.skip("this OpenVINO has no paged attention")
    tools = make_tools(llm, ImageStore())
    llm.runtime.prefix_cache.clear()
    cold_reply, _, _, _ = planner_call(llm, tools)
    llm.warm_prefix([SystemMessage(SYSTEM_PROMPT)], tools)  # saved
    llm.runtime.prefix_cache.clear()
    llm.invoke("Something else, to fill the blocks with another prompt.")
    loaded = llm.warm_prefix([SystemMessage(SYSTEM_PROMPT)], tools)
    assert loaded.source == "disk"
    assert engine._live is not None and len(engine._live.tokens) == loaded.tokens  # the blocks hold it now
    restored = []
    put_back = engine._paged.restore
    engine._paged.restore = lambda *args: (restored.append(args[1]), put_back(*args))
    try:
        reply, _, prefill, reused = planner_call(llm, tools)
    finally:
        engine._paged.restore = put_back
    assert restored == [] and reused == loaded.tokens  # the first prompt went on from the blocks
    assert reply == cold_reply
