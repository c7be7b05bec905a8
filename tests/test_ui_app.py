"""The Streamlit page under ``AppTest``: a scripted planner over the real tools on the tiny checkpoint."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from documents import draw_bar_chart, draw_invoice, draw_text_image, png_bytes
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from planner import ScriptedPlanner, call
from slow_replies import another_request, slow_replies, story
from streamlit.testing.v1 import AppTest

from qwenvl_agent.ui import render, state
from qwenvl_agent.vlm.errors import BusyError
from qwenvl_agent.vlm.testing import scripted_replies

APP = Path(state.__file__).with_name("app.py")
TIMEOUT = 120
OCR_TEXT = "INVOICE No. 12345678\nTotal: 1,500.00"
CHART_JSON = (
    '{"chart_type": "bar", "title": "Quarterly sales", "categories": ["Q1", "Q2", "Q3", "Q4"], '
    '"series": [{"name": "sales (M)", "values": [0.8, 0.9, 1.2, 1.0]}], "answer": "Q3"}'
)


class BusyPlanner(BaseChatModel):
    """A planner whose model is always taken by someone else."""

    @property
    def _llm_type(self) -> str:
        return "busy"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        raise BusyError("The model is busy: one request is running and 3 are waiting. Try again in a moment.")


class StreamingPlanner(ScriptedPlanner):
    """The scripted planner, streamed word by word like ChatQwenVL; before a tool call it thinks aloud."""

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        message = self._generate(messages).generations[0].message
        text = "I will read the invoice first." if message.tool_calls else message.content
        for word in re.findall(r"\S+\s*", text):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word))
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        for index, tool_call in enumerate(message.tool_calls):
            args = json.dumps(tool_call["args"])
            chunk = {"name": tool_call["name"], "args": args, "id": tool_call["id"], "index": index}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))


def pdf_bytes(*pages) -> bytes:
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=list(pages[1:]))
    return buffer.getvalue()


@pytest.fixture
def page(tiny_model, monkeypatch):
    """Start the page on the tiny checkpoint; ``planner`` (a chat model or a script) replaces the planner."""
    monkeypatch.setenv(state.MODEL_ENV, tiny_model)
    monkeypatch.setattr(sys, "argv", ["app.py", "--ocr-engine", "vlm"])  # the steps script the model's OCR

    def start(planner=None) -> AppTest:
        if planner is not None:
            model = planner if isinstance(planner, BaseChatModel) else ScriptedPlanner(script=planner)
            monkeypatch.setattr(state, "make_planner", lambda settings, vlm: model)
        app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        app.run()
        assert not app.exception and not app.error
        return app

    return start


def ask(app: AppTest, question: str) -> AppTest:
    app.chat_input(key="question").set_value(question).run()
    assert not app.exception
    return app


def ask_and_leave(app: AppTest, question: str, seconds: float = 3) -> None:
    """Send a question and stop the page's script run after ``seconds``, while the answer is still being
    written (as Streamlit stops a run when an upload or a changed setting reruns the page)."""
    chat = app.chat_input(key="question")
    with pytest.raises(RuntimeError, match="timed out"):
        chat.set_value(question).run(timeout=seconds)
    chat.set_value(None)  # sent once: the next run must not send it again


def answer_text(reply) -> str:
    """The answer's markdown, outside the status box of steps."""
    return "\n".join(m.value for m in reply.markdown)


def stop_buttons(app: AppTest) -> list:
    return [button for button in app.button if button.label == "Stop"]


def upload(app: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    app.sidebar.get("file_uploader")[0].set_value(list(files)).run()
    assert not app.exception
    return app


def texts(block) -> str:
    return "\n".join(e.value for kind in ("markdown", "code", "caption") for e in getattr(block, kind))


def captions(block) -> list[str]:
    return [caption for image in block.image for caption in image.captions]


def test_a_question_about_an_uploaded_image_shows_the_steps_and_the_answer(page, tiny_runtime):
    app = page([[call("ocr_image", image_id="img-1")], "The total is $1,500.00 (ocr_image on img-1)."])
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    assert captions(app.sidebar) == ["img-1"]
    with scripted_replies(tiny_runtime, [OCR_TEXT]) as left:
        ask(app, "What is the total?")
    assert left == [] and not app.error
    question, reply = app.chat_message
    assert question.name == "user" and "What is the total?" in texts(question)
    assert captions(question) == ["img-1"]  # the sidebar file is shown with the question it came with
    status = reply.status[0]
    assert status.state == "complete" and status.label.startswith("1 step")
    steps = texts(status)
    assert "`ocr_image`" in steps and 'image_id="img-1"' in steps and OCR_TEXT in steps
    assert captions(status) == ["img-1"]
    assert "The total is \\$1,500.00" in texts(reply)  # "$" must not start LaTeX
    assert not stop_buttons(app)  # the answer has ended: nothing to stop

    # A follow-up: the earlier turn keeps its steps, collapsed
    ask(app, "And the date?")
    assert [m.name for m in app.chat_message] == ["user", "assistant", "user", "assistant"]
    first_reply = app.chat_message[1]
    assert OCR_TEXT in texts(first_reply.status[0]) and not first_reply.status[0].proto.expanded


def test_files_attached_to_the_chat_input_come_with_the_question(page, tiny_runtime):
    app = page([[call("ocr_image", image_id="doc-1/page-2")], "All read."])
    chat = app.chat_input(key="question")
    chat.upload("invoice.png", png_bytes(draw_invoice()), "image/png")
    chat.upload("chart.webp", png_bytes(draw_bar_chart(), "WEBP"), "image/webp")
    chat.upload("report.pdf", pdf_bytes(draw_text_image(["Report"]), draw_invoice()), "application/pdf")
    with scripted_replies(tiny_runtime, [OCR_TEXT]):
        ask(app, "Read the invoice page of the report")
    assert not app.error
    question, reply = app.chat_message
    ids = ["img-1", "img-2", "doc-1/page-1", "doc-1/page-2"]
    assert captions(question) == ids and captions(app.sidebar) == ids
    assert "All read." in texts(reply) and 'image_id="doc-1/page-2"' in texts(reply.status[0])


def test_a_streaming_planner_thinks_aloud_in_the_steps_and_streams_the_answer(page, tiny_runtime):
    answer = "The total is 1,500.00."
    app = page(StreamingPlanner(script=[[call("ocr_image", image_id="img-1")], answer]))
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    with scripted_replies(tiny_runtime, [OCR_TEXT]):
        ask(app, "What is the total?")
    reply = app.chat_message[1]
    assert "Planner: I will read the invoice first." in texts(reply.status[0])
    outside = [m.value for m in reply.markdown if "I will read" in m.value or answer in m.value]
    assert outside == [answer]  # the thinking went into the step, the answer shows once


def test_a_read_chart_step_shows_the_table_and_the_redrawn_chart(page, tiny_runtime):
    app = page([[call("read_chart", image_id="img-1")], "Q3 is the highest."])
    upload(app, ("chart.png", png_bytes(draw_bar_chart()), "image/png"))
    with scripted_replies(tiny_runtime, [CHART_JSON]):
        ask(app, "Which quarter is highest?")
    status = app.chat_message[1].status[0]
    table = status.dataframe[0].value
    assert list(table.columns) == ["category", "sales (M)"]
    assert table.set_index("category")["sales (M)"]["Q3"] == 1.2
    (redrawn,) = status.get("vega_lite_chart")
    assert '"sort": ["Q1", "Q2", "Q3", "Q4"]' in redrawn.proto.spec  # in the order read, not alphabetical
    assert captions(status) == ["img-1 (original)"]
    assert "Chart answer: Q3" in texts(status)


def test_a_zoom_step_shows_the_box_on_the_source_and_the_crop(page):
    app = page([[call("zoom_image", image_id="img-1", box=[0, 0, 500, 500])], "Zoomed in."])
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    ask(app, "Look at the top left")
    status = app.chat_message[1].status[0]
    assert captions(status) == ["img-1, box [0, 0, 500, 500]", "img-1/zoom-1"]
    assert status.label.startswith("1 step") and status.label.endswith(": zoomed into img-1")
    assert "box=[0, 0, 500, 500]" in texts(status)


def test_a_tool_error_that_repeats_the_planners_words_never_renders_them_as_markdown(page):
    app = page([[call("zoom_image", image_id="![x](http://attacker.test/leak.png)", box=[0, 0, 500, 500])], "Done."])
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    ask(app, "Zoom")
    warning = app.chat_message[1].status[0].warning[0].value
    assert "\\!\\[x\\]" in warning or "!\\[x\\]" in warning, warning
    assert "](http" not in warning.replace("\\]", "")


@pytest.mark.parametrize(
    ("file", "message"),
    [
        (("notes.txt", b"hello", "text/plain"), "notes.txt is not a file type the assistant reads"),
        (("photo.png", b"\x89PNG but not really", "image/png"), "photo.png could not be used"),
    ],
)
def test_a_file_that_cannot_be_used_shows_an_error_not_a_traceback(page, file, message):
    app = upload(page(), file)
    assert len(app.sidebar.error) == 1
    error = app.sidebar.error[0].value
    assert message in error and "Upload PNG, JPEG" in error
    assert not app.exception and not captions(app.sidebar)


def test_a_bad_file_in_the_chat_input_is_reported_and_the_question_not_sent(page):
    app = page(["never asked"])
    app.chat_input(key="question").upload("scan.pdf", b"%PDF-1.4 truncated", "application/pdf")
    ask(app, "What does it say?")
    reply = app.chat_message[1]
    assert "scan.pdf could not be used" in reply.error[0].value and "not sent" in reply.error[1].value
    assert not reply.status and not app.exception


def test_a_missing_model_says_what_to_do(page, monkeypatch, tmp_path):
    monkeypatch.setenv(state.MODEL_ENV, str(tmp_path / "no-such-model"))
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not app.exception
    message = app.error[0].value
    assert "No model folder at" in message and "Change **Model** in the sidebar" in message
    assert app.chat_input(key="question").proto.disabled

    monkeypatch.undo()
    app.sidebar.text_input(key="model").input(str(tmp_path)).run()  # a folder, but no checkpoint in it
    assert "has no config.json" in app.error[0].value and not app.exception


def test_a_busy_model_is_reported(page):
    app = page(BusyPlanner())
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    ask(app, "What is the total?")
    reply = app.chat_message[1]
    assert "The model is busy" in reply.error[0].value and reply.status[0].state == "error"
    assert not app.exception


def test_a_request_of_another_session_is_announced_instead_of_hanging(page, tiny_runtime):
    app = page(["Done."])
    with tiny_runtime.gate.hold():  # another session's generation
        app.run()
        assert "answering another request" in app.info[0].value
        ask(app, "Hello?")
    assert "Done." in texts(app.chat_message[1])


def test_no_busy_note_is_left_once_the_other_request_and_the_answer_have_ended(page, tiny_runtime):
    app = page()  # the real model plans, so the answer waits for the other request to end
    with scripted_replies(tiny_runtime, ["Done."]) as left, another_request(tiny_runtime.gate, seconds=3):
        app.run()
        assert "answering another request" in app.info[0].value  # true while the other request runs
        ask(app, "Hello?")  # waits for its turn, then answers
    assert left == [] and not tiny_runtime.gate.busy
    reply = app.chat_message[1]
    assert answer_text(reply) == "Done." and reply.status[0].state == "complete"
    assert [note.value for note in app.info] == []  # neither "answering another request" nor "in the queue"
    assert not stop_buttons(app)


@pytest.mark.parametrize("action", ["upload", "setting"])
def test_an_answer_goes_on_while_a_file_is_attached_or_a_setting_changed(page, tiny_runtime, action):
    text = story(15)
    app = page()  # the real model answers, slowly enough to act while it writes
    with slow_replies(tiny_runtime, [text], seconds_per_token=0.03) as left:
        ask_and_leave(app, "Tell me a story.")
        if action == "upload":
            upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
        else:
            app.sidebar.number_input(key="max_steps").set_value(3).run()
        assert not app.exception
    assert left == []  # one generation: the answer was neither stopped nor asked again
    question, reply = app.chat_message
    assert "Tell me a story." in texts(question)
    status = reply.status[0]
    assert status.state == "complete" and status.label.startswith("Answered without tools"), status.label
    assert answer_text(reply) == text
    assert not stop_buttons(app) and not reply.info
    if action == "upload":
        assert captions(app.sidebar) == ["img-1"]
    else:  # the new setting applies once the answer has ended
        assert app.session_state["conversation"].settings.max_steps == 3


def test_a_changed_setting_keeps_the_files(page):
    app = page(["Hi."])
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    app.sidebar.number_input(key="max_steps").set_value(3).run()
    assert captions(app.sidebar) == ["img-1"] and not app.exception
    ask(app, "Hello")
    assert "Hi." in texts(app.chat_message[1])


def test_clear_conversation_forgets_turns_and_files(page):
    app = page(["Hi."])
    upload(app, ("invoice.png", png_bytes(draw_invoice()), "image/png"))
    ask(app, "Hello")
    app.sidebar.button[0].click().run()
    assert not app.chat_message and not captions(app.sidebar) and not app.exception


# The pure helpers


def test_launch_settings_read_the_arguments_after_the_double_dash():
    argv = ["--model", "/models/q", "--dtype", "float32", "--max-new-tokens", "64", "--other"]
    settings = state.launch_settings(argv, {})
    assert (settings.model, settings.dtype) == ("/models/q", "float32")
    assert (settings.max_new_tokens, settings.max_steps) == (64, 8)
    assert state.launch_settings([], {state.MODEL_ENV: "x/y"}).model == "x/y"
    assert state.launch_settings([], {}).model == "Qwen/Qwen3-VL-2B-Instruct"


def test_upload_labels_never_carry_a_path():
    assert state.upload_label("../../etc/passwd") == "passwd"
    assert state.upload_label("C:\\Users\\me\\scan 1.pdf") == "scan 1.pdf"
    assert state.upload_label("<b>x<b>.png") == "b_x_b_.png"
    assert state.upload_label("") == "upload"


def test_chart_table_pads_and_names_columns():
    series = [{"name": "", "values": [1, None]}, {"name": "b", "values": [3, 4, 5, 6]}]
    chart = {"categories": ["Q1", "Q1", ""], "series": series}
    table = render.chart_table(chart)
    assert list(table["category"]) == ["Q1", "Q1 (2)", "category 3", "category 4"]
    assert list(table.columns) == ["category", "series 1", "b"]
    assert table["series 1"].isna().tolist() == [False, True, True, True]
    assert render.chart_plot({"categories": [], "series": []}) is None


def test_draw_box_marks_the_region_on_a_reduced_copy():
    image = draw_invoice()
    marked = render.draw_box(image, [0, 0, 500, 500], max_side=260)
    assert max(marked.size) == 260 and image.size == (520, 200)
    assert marked.getpixel((0, 0)) == render.BOX_COLOR and marked.getpixel((200, 90)) != render.BOX_COLOR
