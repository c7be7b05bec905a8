"""The offline OCR engine: RapidOCR's real models on drawn documents, the layout rebuilt from boxes, the
hybrid engine's check by the vision model, and the engine choice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from documents import draw_text_image
from given import given_calls
from langchain_core.callbacks import BaseCallbackHandler
from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

from qwenvl_agent.tools import ImageStore, OcrEngineError, TextPiece, make_tools, rapid_ocr, to_text
from qwenvl_agent.tools.ocr import reading_to_draft_from
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def run(tool, **args):
    return tool.invoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})


def similarity(a: str, b: str) -> float:
    return Levenshtein.normalized_similarity(" ".join(a.split()), " ".join(b.split()))


def draw_table() -> Image.Image:
    image = Image.new("RGB", (900, 260), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=26)
    rows = [("Item", "Qty", "Amount"), ("Sensor kit", "40", "500.00"), ("Cable", "300", "126.00"), ("Service", "1", "82.58")]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            draw.text((30 + c * 300, 20 + r * 58), cell, fill="black", font=font)
    return image


@pytest.fixture
def store():
    store = ImageStore()
    store.add(draw_text_image(["INVOICE No. 12345678", "Date: 2026-03-14", "Buyer: ACME Ltd", "Total: 1,500.00"], size=(520, 200)))
    store.add(draw_table())
    return store


def test_layout_rows_tables_and_paragraphs_from_boxes():
    pieces = [
        TextPiece("Total:", (500, 400, 580, 420)),
        TextPiece("Invoice", (10, 10, 90, 30)),
        TextPiece("1,500.00", (700, 402, 800, 421)),
        TextPiece("No. 5", (95, 11, 150, 31)),
        TextPiece("Item", (10, 100, 60, 120)), TextPiece("Qty", (300, 100, 340, 120)), TextPiece("Price", (500, 101, 560, 121)),
        TextPiece("Pen|blue", (10, 130, 90, 150)), TextPiece("2", (300, 130, 312, 150)), TextPiece("3.00", (500, 131, 550, 151)),
    ]
    assert to_text(pieces).splitlines() == [
        "Invoice No. 5",
        "",
        "| Item | Qty | Price |",
        "| --- | --- | --- |",
        "| Pen\\|blue | 2 | 3.00 |",
        "",
        "Total:   1,500.00",
    ]
    assert to_text([]) == ""


def test_rapidocr_reads_a_drawn_invoice_offline(store, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the OCR engine tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(rapid_ocr, "_default", None)  # build it afresh, under the no-network guard
    ocr = make_tools(None, store)[0]
    message = run(ocr, image_id="img-1")
    assert message.status == "success", message.content
    expected = "INVOICE No. 12345678\nDate: 2026-03-14\nBuyer: ACME Ltd\nTotal: 1,500.00"
    assert similarity(message.content, expected) > 0.9, message.content
    lines = message.artifact["data"]["lines"]
    assert message.artifact["data"]["engine"] == "rapidocr" and len(lines) >= 4
    assert all(0 < line["confidence"] <= 1 and 0 <= line["box"][0] < line["box"][2] <= 1000 for line in lines)


@pytest.mark.skipif(rapid_ocr.runtime() != "openvino", reason="OpenVINO is not installed")
def test_ocr_image_reads_on_openvino_what_onnx_runtime_reads(monkeypatch):
    # ocr_image's reader runs the models on OpenVINO in float32 (not the CPU's bfloat16): the same lines,
    # character for character, at the same places, as on ONNX Runtime.
    from qwenvl_agent.eval.dataset import build_set

    engine = rapid_ocr._build_engine(2)
    for stage in (engine._load_det_model(), engine._load_rec_model()):
        assert type(stage.session).__name__ == "OpenVINOInferSession"
        compiled = stage.session.session.get_compiled_model()
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    images = [item.images[0] for item in build_set("full") if item.category.startswith("ocr/")][:4]
    on_openvino = [rapid_ocr.read_pieces_with(2)(image) for image in images]
    monkeypatch.setattr(rapid_ocr, "runtime", lambda: "onnxruntime")
    on_onnx_runtime = [rapid_ocr.read_pieces_with(2)(image) for image in images]
    for ours, theirs in zip(on_openvino, on_onnx_runtime):
        assert len(ours) > 3 and [p.text for p in ours] == [p.text for p in theirs]
        for a, b in zip(ours, theirs):
            assert max(abs(x - y) for x, y in zip(a.box, b.box)) <= 1.0 and abs(a.score - b.score) < 0.01


def test_ocr_falls_back_to_onnx_runtime_when_openvino_cannot_compile(store, monkeypatch, caplog):
    def cannot(engine, threads):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp: no CPU plugin")

    monkeypatch.setattr(rapid_ocr, "runtime", lambda: "openvino")
    monkeypatch.setattr(rapid_ocr, "_in_float32", cannot)
    with caplog.at_level("WARNING", logger=rapid_ocr.__name__):
        engine = rapid_ocr._build_engine(2)
        pieces = rapid_ocr.read_pieces_with(2)(store.get("img-1"))
    assert type(engine._load_det_model().session).__name__ == "OrtInferSession"
    assert "12345678" in " ".join(p.text for p in pieces)
    assert "falls back to ONNX Runtime" in caplog.text and "no CPU plugin" in caplog.text


def test_rapidocr_rebuilds_a_table_as_markdown(store):
    text = run(make_tools(None, store)[0], image_id="img-2").content
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 5 and table[1].count("---") == 3, text
    assert "Sensor kit" in table[2] and "500.00" in table[2]


@pytest.mark.skipif(not CJK_FONT.is_file(), reason="Chinese text needs Debian's fonts-noto-cjk")
def test_rapidocr_reads_chinese():
    image = Image.new("RGB", (700, 140), "white")
    font = ImageFont.truetype(str(CJK_FONT), 36)
    ImageDraw.Draw(image).text((20, 40), "发票号码：12345678 价税合计", fill="black", font=font)
    store = ImageStore()
    store.add(image)
    text = run(make_tools(None, store)[0], image_id="img-1").content
    assert similarity(text, "发票号码：12345678 价税合计") > 0.8, text


@pytest.mark.skipif(not CJK_FONT.is_file(), reason="Chinese text needs Debian's fonts-noto-cjk")
def test_a_date_and_its_time_stay_apart_on_receipts():
    # The recogniser drops the space between a receipt's date and time on many of these receipts.
    import re

    from qwenvl_agent.eval.dataset import build_set

    receipts = [item for item in build_set("full") if item.category == "ocr/receipt"][:12]
    for item in receipts:
        text = "\n".join(piece.text for piece in rapid_ocr.read_pieces(item.images[0]))
        stamp = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", item.text).group()
        assert stamp in text, (stamp, text)


def test_the_engine_argument_overrides_the_tools_engine_for_one_call(tiny_model, store):
    ocr = make_tools(ChatQwenVL(model=tiny_model), store, ocr_engine="vlm")[0]
    assert "engine" not in ocr.tool_call_schema.model_json_schema()["properties"]  # the planner never sees it
    message = ocr.invoke({"image_id": "img-1", "engine": "rapidocr"})
    assert "12345678" in message


def test_hybrid_sends_only_uncertain_lines_to_the_model_as_crops(tiny_model, store):
    llm = ChatQwenVL(model=tiny_model)
    ocr = make_tools(llm, store, ocr_engine="hybrid")[0]
    ocr.hybrid_threshold = 0.0  # RapidOCR is sure of every line: the model is not asked
    with scripted_replies(llm.runtime, ["1: never used"]) as left:
        sure = run(ocr, image_id="img-1")
    assert left == ["1: never used"] and sure.artifact["data"]["checked_by_vlm"] == []

    ocr.hybrid_threshold = 1.01  # every line is uncertain: each goes to the model, which corrects line 2
    seen = []
    llm.callbacks = [_Recorder(seen)]
    with scripted_replies(llm.runtime, ["1: INVOICE No. 12345678\n2: Date: 2099-01-01"]) as left:
        checked = run(ocr, image_id="img-1")
    assert left == []
    assert "Date: 2099-01-01" in checked.content and checked.artifact["data"]["checked_by_vlm"][:2] == [0, 1]
    sent = seen[0][0][0].content
    images = [block for block in sent if block.get("type") == "image"]
    assert len(images) == len(checked.artifact["data"]["lines"])
    assert all(block["image"].height < 100 for block in images)  # line crops, not the page


def test_the_vision_model_reads_the_page_itself_its_reply_drafted_from_rapidocrs_reading(tiny_model, store, monkeypatch):
    llm = ChatQwenVL(model=tiny_model, max_tokens=300, reuse_prefix=False)
    ocr = make_tools(llm, store, ocr_engine="vlm")[0]
    given = given_calls(monkeypatch, llm)
    finished = []
    llm.callbacks = [_Finished(finished)]
    reading = to_text(rapid_ocr.read_pieces(store.get("img-1")))
    assert "12345678" in reading
    own = reading.replace("12345678", "12345679")  # the model reads one digit otherwise: its reading is the reply
    with scripted_replies(llm.runtime, [own]) as left:
        message = run(ocr, image_id="img-1")
    assert left == [] and message.content == own.strip()
    ((prompt, settings),) = given
    assert settings.draft_text == reading  # RapidOCR's reading, as a source of drafts only
    text = " ".join(part["text"] for m in prompt.messages for part in m["content"] if isinstance(m["content"], list) and part.get("type") == "text")
    assert "12345678" not in text and "Buyer" not in text  # the model was not shown it: it reads the image
    (timings,) = finished
    assert timings["decode_steps"] < timings["accepted_draft_tokens"]  # most of the reply came as drafts

    sampling = ChatQwenVL(model=tiny_model, max_tokens=300, temperature=0.7)  # no drafts: RapidOCR is not run
    assert reading_to_draft_from(sampling, store.get("img-1")) is None


class _Finished(BaseCallbackHandler):
    """Keeps each chat-model call's timings."""

    def __init__(self, seen):
        self.seen = seen

    def on_llm_end(self, response, **kwargs):
        self.seen.append(response.generations[0][0].message.response_metadata["timings"])


def test_an_unknown_ocr_engine_is_refused(store):
    with pytest.raises(ValueError, match="ocr_engine must be one of vlm, rapidocr, hybrid"):
        make_tools(None, store, ocr_engine="tesseract")


def test_missing_models_are_a_clear_error_not_a_download(tmp_path, monkeypatch):
    with pytest.raises(OcrEngineError, match="never downloads"):
        rapid_ocr._model(tmp_path, "det")


class _Recorder(BaseCallbackHandler):
    """Keeps the messages each chat-model call received."""

    def __init__(self, seen):
        self.seen = seen

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.seen.append(messages)
