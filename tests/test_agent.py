"""The document agent with a scripted planner; the tools under it run the real vision path (tiny checkpoint)."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import threading
import time
import uuid
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
from documents import draw_bar_chart, draw_invoice, draw_text_image
from given import given_prompts
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from planner import ScriptedPlanner, call

from qwenvl_agent.agent import api
from qwenvl_agent.agent import (
    AgentError,
    Answer,
    AnswerToken,
    DocumentAssistant,
    Error,
    StepStarted,
    ToolCall,
    ToolResult,
    build_agent,
)
from qwenvl_agent.tools import ImageStore
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies

OCR_TEXT = "INVOICE No. 12345678\nDate: 2026-03-14\nTotal: 1,500.00"
CHART_JSON = '{"chart_type": "bar", "categories": ["Q1", "Q2", "Q3", "Q4"], "series": [{"name": "sales (M)", "values": [0.8, 0.9, 1.2, 1.0]}], "answer": "Q3"}'
FINAL = "The invoice total is 1,500.00 (ocr_image on img-1). The best quarter is Q3 with 1.2M (read_chart on img-2), so the total is smaller."


@pytest.fixture
def vlm(tiny_model):
    return ChatQwenVL(model=tiny_model, max_tokens=16)


def assistant_with(vlm, script, **kwargs) -> tuple[DocumentAssistant, ScriptedPlanner]:
    planner = ScriptedPlanner(script=script, **{k: kwargs.pop(k) for k in ("loop",) if k in kwargs})
    kwargs.setdefault("ocr_engine", "vlm")  # these runs script the vision model's OCR replies
    return DocumentAssistant(planner, vlm=vlm, **kwargs), planner


def test_invoice_and_chart_question_runs_ocr_then_chart_then_answers(tiny_runtime, vlm):
    assistant, planner = assistant_with(
        vlm,
        [[call("ocr_image", image_id="img-1")], [call("read_chart", image_id="img-2", question="Best quarter?")], FINAL],
    )
    question = "What is the invoice total, and is it more than the best quarter in this chart?"
    with scripted_replies(tiny_runtime, [OCR_TEXT, CHART_JSON]) as left:
        events = list(assistant.stream(question, [draw_invoice(), draw_bar_chart()], thread_id="t1"))
    assert left == []
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["StepStarted", "ToolCall", "ToolResult", "StepStarted", "ToolCall", "ToolResult", "StepStarted", "Answer"]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.args["image_id"], c.step) for c in calls] == [("ocr_image", "img-1", 1), ("read_chart", "img-2", 2)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert results[0].output == OCR_TEXT and results[0].image_ids == ["img-1"] and results[0].seconds > 0
    assert "| Q3 | 1.2 |" in results[1].output.replace("  ", " ") and results[1].data["rows"][2]["category"] == "Q3"
    answer = events[-1]
    assert isinstance(answer, Answer) and answer.text == FINAL
    assert [s.tool for s in answer.steps] == ["ocr_image", "read_chart"]
    # The planner saw ids and labels, never pixels
    first_prompt = planner.seen[0][-1]
    assert isinstance(first_prompt, HumanMessage) and isinstance(first_prompt.content, str)
    assert "img-1" in first_prompt.content and "img-2" in first_prompt.content
    assert set(planner.bound_tools) == {"ocr_image", "read_chart", "describe_image", "zoom_image", "locate_in_image", "search_document", "read_page_text"}


def test_ask_returns_agent_result_with_steps_and_store(tiny_runtime, vlm):
    assistant, _ = assistant_with(vlm, [[call("ocr_image", image_id="img-1")], "Total: 1,500.00"])
    with scripted_replies(tiny_runtime, [OCR_TEXT]):
        result = assistant.ask("What is the total?", [draw_invoice()])
    assert result.answer == "Total: 1,500.00"
    assert [(s.tool, s.args, s.output) for s in result.steps] == [("ocr_image", {"image_id": "img-1"}, OCR_TEXT)]
    assert result.store.ids() == ["img-1"] and result.thread_id and not result.stopped_early


def test_a_tool_error_is_recovered_from(tiny_runtime, vlm):
    assistant, planner = assistant_with(
        vlm, [[call("ocr_image", image_id="img-3")], [call("ocr_image", image_id="img-1")], "Total: 1,500.00"]
    )
    with scripted_replies(tiny_runtime, [OCR_TEXT]):
        result = assistant.ask("What is the total?", [draw_invoice()])
    failed, recovered = result.steps
    assert failed.is_error and "No image 'img-3'" in failed.output and "img-1" in failed.output
    assert not recovered.is_error and recovered.output == OCR_TEXT
    assert "No image 'img-3'" in planner.seen[1][-1].content  # the planner read the error
    assert result.answer == "Total: 1,500.00"


def test_the_step_limit_ends_a_looping_planner_with_a_clear_message(tiny_runtime, vlm):
    assistant, _ = assistant_with(vlm, [[call("zoom_image", image_id="img-1", box=[0, 0, 500, 500])]], loop=True, max_steps=3)
    result = assistant.ask("Look closer, forever.", [draw_invoice()])
    assert result.stopped_early
    assert "stopped after 3 steps" in result.answer and "max_steps" in result.answer
    assert len(result.steps) == 3


def test_a_follow_up_in_the_same_thread_sees_the_earlier_images_and_answer(tiny_runtime, vlm):
    assistant, planner = assistant_with(
        vlm, ["It is an invoice.", [call("read_chart", image_id="img-2")], "Q3 is the best quarter."]
    )
    first = assistant.ask("What is this?", [draw_invoice(), draw_bar_chart()], thread_id="conv")
    assert first.answer == "It is an invoice."
    with scripted_replies(tiny_runtime, [CHART_JSON]):
        second = assistant.ask("And which quarter was best in the chart?", thread_id="conv")
    assert second.answer == "Q3 is the best quarter." and second.steps[0].image_ids == ["img-2"]
    follow_up_prompt = planner.seen[1]
    texts = [m.text for m in follow_up_prompt]
    assert any("What is this?" in t for t in texts) and "It is an invoice." in texts
    assert "img-2" in follow_up_prompt[-1].content
    other = assistant.store("another-thread")
    assert len(other) == 0  # conversations do not share images


def test_a_pdf_goes_in_as_pages(tiny_runtime, vlm, tmp_path):
    pdf = tmp_path / "report.pdf"
    page1 = draw_text_image(["Report", "Page one"], size=(400, 560))
    page1.save(pdf, save_all=True, append_images=[draw_invoice().resize((400, 560))])
    assistant, planner = assistant_with(vlm, [[call("ocr_image", image_id="doc-1/page-2")], "1,500.00"])
    with scripted_replies(tiny_runtime, [OCR_TEXT]):
        result = assistant.ask("What is the total on page 2?", [pdf])
    assert result.store.ids() == ["doc-1/page-1", "doc-1/page-2"]
    assert "report.pdf" in planner.seen[0][-1].content
    assert result.steps[0].image_ids == ["doc-1/page-2"] and result.steps[0].output == OCR_TEXT


def test_zoom_then_read_the_crop(tiny_runtime, vlm):
    assistant, _ = assistant_with(
        vlm,
        [[call("zoom_image", image_id="img-1", box=[0, 600, 1000, 1000])], [call("ocr_image", image_id="img-1/zoom-1")], "1,500.00"],
    )
    with scripted_replies(tiny_runtime, ["Total: 1,500.00"]):
        result = assistant.ask("Read the small print at the bottom.", [draw_invoice()])
    zoom, ocr = result.steps
    assert zoom.image_ids == ["img-1", "img-1/zoom-1"] and zoom.data["box"] == [0, 600, 1000, 1000]
    assert ocr.image_ids == ["img-1/zoom-1"] and ocr.output == "Total: 1,500.00"


def test_errors_arrive_as_error_events(vlm):
    assistant, _ = assistant_with(vlm, ["unused"])
    assert isinstance(list(assistant.stream("   "))[-1], Error)
    events = list(assistant.stream("Read it", [b"not an image"]))
    assert len(events) == 1 and isinstance(events[0], Error) and "not an image file" in events[0].message
    with pytest.raises(AgentError, match="not an image file"):
        assistant.ask("Read it", [b"not an image"])


async def test_async_twins(tiny_runtime, vlm):
    assistant, _ = assistant_with(vlm, [[call("describe_image", image_id="img-1")], "A chart."])
    with scripted_replies(tiny_runtime, ["Four blue bars."]):
        events = [e async for e in assistant.astream("What is it?", [draw_bar_chart()], thread_id="a")]
    assert isinstance(events[0], StepStarted) and isinstance(events[-1], Answer)
    assert events[-1].steps[0].output == "Four blue bars."
    result = await assistant.aask("And now?", thread_id="a")
    assert result.answer == "A chart."


def test_build_agent_is_a_langgraph_graph_with_a_step_bound(tiny_runtime, vlm):
    store = ImageStore()
    store.add(draw_invoice())
    planner = ScriptedPlanner(script=[[call("ocr_image", image_id="img-1")], "done"])
    graph = build_agent(planner, store=store, vlm=vlm, max_steps=4, ocr_engine="vlm")
    with scripted_replies(tiny_runtime, [OCR_TEXT]):
        state = graph.invoke({"messages": [HumanMessage("Read img-1")]})
    assert [m.type for m in state["messages"]] == ["human", "ai", "tool", "ai"]
    assert state["messages"][2].content == OCR_TEXT and state["messages"][-1].content == "done"


def test_default_planner_is_chatqwenvl_sharing_the_tools_runtime(tiny_model):
    assistant = DocumentAssistant(ChatQwenVL(model=tiny_model, max_tokens=8))
    result = assistant.ask("What does it show?", [draw_bar_chart()])
    assert isinstance(result.answer, str)  # random text from the tiny model, but a full run
    assert assistant.vlm is assistant.model


def test_cli_ask_end_to_end_in_a_subprocess(tiny_model, tmp_path):
    image = tmp_path / "invoice.png"
    draw_invoice().save(image)
    command = [sys.executable, "-m", "qwenvl_agent.cli", "ask", str(image), "-q", "What is the total?", "--model", tiny_model, "--max-new-tokens", "12", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result["answer"], str) and result["images"] == {"img-1": "invoice.png"} and result["error"] is None
    plain = subprocess.run(command[:-1], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "Answer:" in plain.stdout and "[step 1]" in plain.stderr
    missing = subprocess.run([*command[:3], "ask", str(tmp_path / "nope.png"), "-q", "x"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_conversations_are_bounded_by_default(vlm):
    assistant, _ = assistant_with(vlm, ["unused"])
    assistant.add_images([draw_invoice()], thread_id="first")
    for index in range(api.DEFAULT_MAX_CONVERSATIONS):
        assistant.store(f"later-{index}")
    assert len(assistant.store(f"later-{api.DEFAULT_MAX_CONVERSATIONS - 1}")) == 0
    assert len(assistant.store("first")) == 0  # the least recently used one was let go (it starts again empty)


def test_idle_conversations_are_let_go_by_default(vlm, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(api, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter))
    assistant, _ = assistant_with(vlm, ["unused"])
    assistant.add_images([draw_invoice()], thread_id="recent")
    assistant.add_images([draw_invoice()], thread_id="old")
    clock[0] += api.DEFAULT_IDLE_SECONDS - 1
    assert len(assistant.store("recent")) == 1  # used again: not idle
    clock[0] += 2
    assistant.store("new")
    assert len(assistant.store("recent")) == 1
    assert len(assistant.store("old")) == 0


@pytest.mark.parametrize("bounds", [{"max_conversations": 0}, {"max_conversations": "many"}, {"idle_seconds": -5}, {"idle_seconds": "1h"}])
def test_bad_conversation_bounds_are_refused(vlm, bounds):
    with pytest.raises(ValueError, match=next(iter(bounds))):
        assistant_with(vlm, ["unused"], **bounds)


def test_unbounded_conversations_on_request(vlm):
    assistant, _ = assistant_with(vlm, ["unused"], max_conversations=None, idle_seconds=None)
    assistant.add_images([draw_invoice()], thread_id="first")
    for index in range(api.DEFAULT_MAX_CONVERSATIONS + 1):
        assistant.store(f"later-{index}")
    assert len(assistant.store("first")) == 1


def test_module_level_ask_keeps_a_bounded_number_of_conversations(vlm):
    planner = ScriptedPlanner(script=["Done."])
    first = api.ask("What is it?", [draw_invoice()], model=planner)
    assert len(api.default_assistant(planner).store(first.thread_id)) == 1  # a follow-up can use it
    results = [api.ask("What is it?", [draw_invoice()], model=planner) for _ in range(api.DEFAULT_MAX_CONVERSATIONS)]
    assert all(r.answer == "Done." for r in results)
    assert len(api.default_assistant(planner).store(results[-1].thread_id)) == 1
    assert len(api.default_assistant(planner).store(first.thread_id)) == 0


def test_module_level_ask_does_not_keep_every_model_it_was_given():
    first = ScriptedPlanner(script=["Done."])
    gone = weakref.ref(first)
    api.ask("What is it?", model=first)
    del first
    for _ in range(8):
        api.ask("What is it?", model=ScriptedPlanner(script=["Done."]))
    gc.collect()
    assert gone() is None


class SlowPlanner(ScriptedPlanner):
    """Zooms once, then answers with the question it was asked; each reply takes a while (runs overlap)."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        time.sleep(0.15)
        if isinstance(messages[-1], HumanMessage):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(
                content="", tool_calls=[{"name": "zoom_image", "args": {"image_id": "img-1", "box": [0, 0, 500, 500]},
                                         "id": f"call-{uuid.uuid4().hex[:8]}", "type": "tool_call"}]))])
        question = next(m for m in reversed(messages) if isinstance(m, HumanMessage)).text.split("\n")[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=f"Answer to {question}"))])


async def overlapping_runs(assistant, threads: dict[str, str]) -> list[tuple[str, Any]]:
    """Run ``astream`` for each question (key) on its thread at once; every event, labelled, in arrival order."""
    arrived: list[tuple[str, Any]] = []

    async def run(question, thread_id):
        async for event in assistant.astream(question, thread_id=thread_id):
            arrived.append((question, event))

    await asyncio.gather(*(run(question, thread_id) for question, thread_id in threads.items()))
    return arrived


async def test_two_runs_on_one_conversation_take_turns(vlm):
    assistant = DocumentAssistant(SlowPlanner(script=[]), vlm=vlm, ocr_engine="vlm")
    assistant.add_images([draw_invoice()], thread_id="shared")
    arrived = await overlapping_runs(assistant, {"first?": "shared", "second?": "shared"})
    order = [question for question, _ in arrived]
    assert len(order) == 10 and order == sorted(order, key=order.index)  # one run's events, then the other's
    for question in ("first?", "second?"):
        events = [event for label, event in arrived if label == question]
        assert [type(e).__name__ for e in events] == ["StepStarted", "ToolCall", "ToolResult", "StepStarted", "Answer"]
        assert events[-1].text == f"Answer to {question}"


async def test_runs_on_different_conversations_overlap(vlm):
    assistant = DocumentAssistant(SlowPlanner(script=[]), vlm=vlm, ocr_engine="vlm")
    for thread_id in ("one", "two"):
        assistant.add_images([draw_invoice()], thread_id=thread_id)
    arrived = await overlapping_runs(assistant, {"first?": "one", "second?": "two"})
    order = [question for question, _ in arrived]
    assert len(order) == 10 and order != sorted(order, key=order.index)  # interleaved: neither waited for the other
    assert {event.text for _, event in arrived if isinstance(event, Answer)} == {"Answer to first?", "Answer to second?"}


def test_a_planners_bare_json_call_is_a_step_and_never_answer_text(tiny_model, monkeypatch):
    llm = ChatQwenVL(model=tiny_model, max_tokens=80)
    prompts = given_prompts(monkeypatch, llm)
    assistant = DocumentAssistant(llm, max_steps=4, ocr_engine="rapidocr")
    bare = '{"name": "ocr_image", "arguments": {"image_id": "img-1"}}'
    with scripted_replies(llm.runtime, [bare, "The total is 1,500.00."]) as left:
        events = list(assistant.stream("What is the total?", [draw_invoice()]))
    assert left == []
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["ocr_image"]
    assert "".join(e.text for e in events if isinstance(e, AnswerToken)) == "The total is 1,500.00."
    # The planner's memory holds the call as a call, not its JSON as something it said.
    (turn,) = [m for m in prompts[-1].messages if m["role"] == "assistant"]
    assert [c["function"]["name"] for c in turn["tool_calls"]] == ["ocr_image"]
    assert "ocr_image" not in json.dumps(turn["content"])


def test_the_calls_of_one_turn_run_in_the_order_the_planner_wrote_them(tiny_runtime, vlm):
    # LangGraph starts the calls of a turn at once; the tools must still use the model in the planner's order.
    images = [draw_text_image(f"page {n}") for n in range(1, 5)]
    calls = [call("ocr_image", image_id=f"img-{n}") for n in range(1, 5)]
    assistant, _ = assistant_with(vlm, [calls, "Done."], loop=True)
    for _ in range(3):
        with scripted_replies(tiny_runtime, [f"text of img-{n}" for n in range(1, 5)]) as left:
            answer = assistant.ask("Read all four.", images)
        assert left == []
        assert [(s.args["image_id"], s.output) for s in answer.steps] == [(f"img-{n}", f"text of img-{n}") for n in range(1, 5)]


def test_the_answer_streams_while_the_planner_writes_it_and_reports_its_first_token(tiny_model):
    from slow_replies import slow_replies, story

    llm = ChatQwenVL(model=tiny_model, max_tokens=200)
    assistant = DocumentAssistant(llm, ocr_engine="rapidocr")
    text = story(12)
    arrivals = []
    with slow_replies(llm.runtime, [text], seconds_per_token=0.02) as left:
        for event in assistant.stream("Tell me a story.", [draw_invoice()]):
            arrivals.append((time.perf_counter(), event))
    assert left == []
    tokens = [(at, event) for at, event in arrivals if isinstance(event, AnswerToken)]
    answered_at, answer = arrivals[-1]
    assert isinstance(answer, Answer) and answer.text == text
    first_at, first = tokens[0]
    assert text.startswith(first.text) and len(first.text) < len(text) // 4  # a piece, not the whole answer
    assert answered_at - first_at > 0.5  # the reply was still being written (over a second of tokens)
    assert 0 < answer.first_token_seconds < answer.seconds - 0.5
    with scripted_replies(llm.runtime, ["Short answer."]):
        result = assistant.ask("Again?", [draw_invoice()])
    assert result.answer == "Short answer." and 0 < result.first_token_seconds <= result.seconds


def test_the_cli_shows_the_planners_text_as_it_comes_and_the_answer_on_stdout(capsys):
    from qwenvl_agent.cli.ask import _StepPrinter

    printer = _StepPrinter()
    for event in [StepStarted(1), AnswerToken("The total", 1), AnswerToken(" is 1,500.00.", 1), Answer("The total is 1,500.00.")]:
        printer.show(event)
    out, err = capsys.readouterr()
    assert "  The total is 1,500.00.\n" in err and err.index("[step 1]") < err.index("The total")
    assert out == "\nAnswer: The total is 1,500.00.\n"


def test_a_stopped_run_does_not_make_the_calls_still_waiting_for_their_turn(tiny_runtime, vlm):
    from slow_replies import slow_replies, story

    calls = [call("ocr_image", image_id="img-1"), call("ocr_image", image_id="img-2")]
    assistant, _ = assistant_with(vlm, [calls, "Done."], max_tokens=400)
    cancel = threading.Event()
    events = []
    with slow_replies(tiny_runtime, [story(40), "second page"], seconds_per_token=0.05) as left:
        for event in assistant.stream("Read both.", [draw_invoice(), draw_invoice()], cancel=cancel):
            events.append(event)
            if isinstance(event, ToolCall) and event.args["image_id"] == "img-1":
                threading.Timer(0.5, cancel.set).start()  # while the first call reads its page (2 s of tokens)
        stopped_at = time.perf_counter()
    assert left == ["second page"]  # the second call never reached the model
    assert not any(isinstance(e, Answer) for e in events)
    assert time.perf_counter() - stopped_at < 5
