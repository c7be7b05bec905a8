"""Long documents: each PDF page's own text layer (OCR for scans and images) in a page index built in the
background, ranked search over it, a page's text at once, and the agent going search → read → answer."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from documents import draw_text_image
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from planner import ScriptedPlanner, call

from qwenvl_agent.agent import DocumentAssistant, ToolCall, trail
from qwenvl_agent.tools import ImageStore, PageIndex, make_tools
from qwenvl_agent.tools.page_index import tokens

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
NEEDLE = "The termination notice period is ninety days"


def text_pdf(pages: int = 20, needle_page: int = 13) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number in range(1, pages + 1):
        pdf.add_page()
        for line in range(25):
            text = f"Section {number}.{line}: payment terms and delivery schedule, item {number * 100 + line}"
            pdf.cell(text=NEEDLE + "." if (number, line) == (needle_page, 7) else text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def scanned_pdf(pages: int = 4, needle_page: int = 3) -> bytes:
    images = []
    for number in range(1, pages + 1):
        lines = [f"Section {number}: delivery schedule", f"Item {number * 100}"]
        if number == needle_page:
            lines.append(NEEDLE)
        images.append(draw_text_image(lines, size=(900, 200)))
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return buffer.getvalue()


def tools_of(store: ImageStore):
    return {tool.name: tool for tool in make_tools(None, store)}


def run(tool, **args):
    return tool.invoke({"name": tool.name, "args": args, "id": "c", "type": "tool_call"})


def test_a_text_pdf_is_indexed_from_its_text_layer_and_searched():
    store = ImageStore(dpi=72)
    store.add(text_pdf(), name="contract.pdf")
    assert store.index.wait(30)
    tools = tools_of(store)
    found = run(tools["search_document"], query="termination notice period", k=3)
    hits = found.artifact["data"]["hits"]
    assert hits[0]["page_id"] == "doc-1/page-13" and hits[0]["source"] == "text layer"
    assert NEEDLE in hits[0]["lines"][0]["text"] and 0 <= hits[0]["lines"][0]["box"][1] < 1000
    assert found.artifact["image_ids"][0] == "doc-1/page-13"
    assert found.content.startswith("Searched 20 pages")  # the step shows how much was searched
    page = run(tools["read_page_text"], page_id="doc-1/page-13")
    assert NEEDLE in page.content and "(text layer)" in page.content


def test_scanned_pages_and_plain_images_are_read_by_ocr():
    store = ImageStore(dpi=72)
    store.add(scanned_pdf(), name="scan.pdf")
    store.add(draw_text_image(["Receipt from the corner shop", "Total 12.50"], size=(600, 120)))
    assert store.index.wait(120)
    hit = store.index.search("termination notice", k=3)[0]
    assert hit.page_id == "doc-1/page-3" and hit.source == "OCR"
    assert store.index.page("img-1").source == "OCR" and "12.50" in store.index.page("img-1").text


def test_questions_can_start_before_the_index_is_done():
    release = threading.Event()
    seen = []

    def slow_reader(image):
        release.wait(10)
        return []

    index = PageIndex(read=slow_reader)
    index.on_progress(lambda done, total: seen.append((done, total)))
    index.add_image("img-1", Image.new("RGB", (50, 50)))
    index.add_image("img-2", Image.new("RGB", (50, 50)))
    assert index.progress() == (0, 2) and index.search("anything") == []
    release.set()
    assert index.wait(10) and seen[-1] == (2, 2)


def test_the_search_tool_waits_for_the_index_then_says_what_it_has(monkeypatch):
    from qwenvl_agent.tools import search

    monkeypatch.setattr(search, "SEARCH_WAIT_SECONDS", 0.2)
    store = ImageStore(dpi=72)
    store.index = PageIndex(read=lambda image: time.sleep(5) or [])
    store.add(draw_text_image(["hello"], size=(200, 80)))
    started = time.monotonic()
    message = run(tools_of(store)["search_document"], query="hello")
    assert "Still reading the pages: 0 of 1" in message.content and time.monotonic() - started < 3


def test_chinese_is_searched_by_pairs_of_characters():
    assert tokens("价税合计 Total 1,500") == ["价税", "税合", "合计", "total", "1", "500"]
    if not CJK_FONT.is_file():
        pytest.skip("needs Debian's fonts-noto-cjk to draw Chinese")
    image = Image.new("RGB", (800, 160), "white")
    ImageDraw.Draw(image).text((20, 50), "合同终止通知期为九十天", fill="black", font=ImageFont.truetype(str(CJK_FONT), 40))
    store = ImageStore()
    store.add(draw_text_image(["Payment schedule"], size=(600, 100)))
    store.add(image)
    store.index.wait(120)
    assert store.index.search("终止通知期")[0].page_id == "img-2"


def test_a_bad_doc_id_is_a_readable_tool_error():
    store = ImageStore(dpi=72)
    store.add(text_pdf(pages=2))
    message = run(tools_of(store)["search_document"], query="payment", doc_id="doc-9")
    assert message.status == "error" and "Documents and images: doc-1" in message.content


def test_without_a_page_index_both_tools_say_to_use_ocr():
    store = ImageStore(dpi=72, index_pages=False)
    store.add(text_pdf(pages=2))
    tools = tools_of(store)
    for message in (run(tools["search_document"], query="payment"), run(tools["read_page_text"], page_id="doc-1/page-1")):
        assert message.status == "error" and "not indexed" in message.content and "ocr_image" in message.content


def test_the_agent_searches_reads_and_cites_the_page(tiny_model):
    from qwenvl_agent.vlm import ChatQwenVL

    planner = ScriptedPlanner(script=[
        [call("search_document", query="termination notice period")],
        [call("read_page_text", page_id="doc-1/page-13")],
        "The notice period is ninety days (doc-1/page-13).",
    ])
    assistant = DocumentAssistant(planner, vlm=ChatQwenVL(model=tiny_model, engine="torch"), dpi=72)
    events = list(assistant.stream("How long is the termination notice period?", images=[text_pdf()]))
    calls = [e for e in events if isinstance(e, ToolCall)]
    answer = events[-1]
    assert [c.name for c in calls] == ["search_document", "read_page_text"]
    assert answer.steps[0].image_ids[0] == "doc-1/page-13" and NEEDLE in answer.steps[1].output
    assert "doc-1/page-13" in answer.text
    assert trail(answer.steps).startswith("searched 20 pages → doc-1/page-13")
    assert trail(answer.steps).endswith(" → read text of doc-1/page-13")
    prompt = planner.seen[0][0].content
    assert "search_document" in prompt and "read_page_text" in prompt


def test_a_closed_index_stops_after_the_page_in_hand_and_releases_waiters():
    started, release = threading.Event(), threading.Event()

    def slow_read(image):
        started.set()
        release.wait(10)
        return []

    index = PageIndex(read=slow_read)
    for n in range(5):
        index.add_image(f"img-{n}", Image.new("RGB", (32, 32), "white"))
    assert started.wait(10)
    closer = threading.Thread(target=index.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive() and index.wait(1)
    assert index.progress() == (1, 5)  # the page in hand was finished, the rest never started
    assert index.page("img-4", timeout=5) is None
    index.add_image("img-9", Image.new("RGB", (8, 8)))  # a closed index takes no more pages
    assert index.progress() == (1, 5)


def slow_reader(seconds: float, calls: list | None = None):
    def read(image):
        if calls is not None:
            calls.append(image.size)
        time.sleep(seconds)
        return []
    return read


def test_a_failing_progress_listener_does_not_stop_indexing():
    index = PageIndex(read=slow_reader(0.0))
    index.on_progress(lambda done, total: 1 / 0)
    for n in range(3):
        index.add_image(f"img-{n}", Image.new("RGB", (32, 32), "white"))
    assert index.wait(10) and index.progress() == (3, 3)
    index.add_image("img-3", Image.new("RGB", (32, 32), "white"))  # a new worker starts for later pages
    assert index.wait(10) and index.progress() == (4, 4)


def test_a_page_someone_waits_for_is_read_next():
    sizes: list = []
    index = PageIndex(read=slow_reader(0.2, sizes))
    for n in range(1, 11):
        index.add_image(f"img-{n}", Image.new("RGB", (32 + n, 32), "white"))
    assert index.page("img-10", timeout=10) is not None
    assert (42, 32) in sizes[:3], sizes  # read second or third, not tenth
    index.close()


def test_stop_ends_a_search_that_waits_for_the_index():
    from qwenvl_agent.vlm.cancel import cancel_scope

    store = ImageStore()
    store.index = PageIndex(read=slow_reader(3.0))
    store.add(Image.new("RGB", (64, 64), "white"))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with cancel_scope(stop):
        message = run(tools_of(store)["search_document"], query="anything")
    assert time.monotonic() - started < 5
    assert message.status == "error" and "Stopped" in message.content
    store.index.close(timeout=0)


def test_text_layer_boxes_follow_a_turned_page():
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(text_pdf(pages=1, needle_page=1))
    document[0].set_rotation(90)
    buffer = io.BytesIO()
    document.save(buffer)
    store = ImageStore(dpi=72)
    store.add(buffer.getvalue(), name="turned.pdf")
    assert store.index.wait(30)
    page = store.index.page("doc-1/page-1")
    image = store.get("doc-1/page-1")
    assert image.width > image.height  # the portrait page is shown turned, as landscape
    # The page's first line now runs down the right edge, from the top.
    first = next(line.box for line in page.lines if line.text.startswith("Section 1.0:"))
    assert first[0] > 800 and first[1] < 300 and first[3] - first[1] > first[2] - first[0], first


def test_a_scan_with_a_stamp_in_its_text_layer_is_still_read_by_ocr():
    pdf = FPDF(unit="pt", format=(900, 200))
    pdf.add_page()
    pdf.image(draw_text_image(["Section 1: delivery schedule", NEEDLE], size=(900, 200)), x=0, y=0, w=900, h=200)
    pdf.set_font("helvetica", size=8)
    pdf.text(10, 190, "CONFIDENTIAL - Bates No. 0001234 - Document control")  # the stamp: text, not the page
    store = ImageStore(dpi=72)
    store.add(bytes(pdf.output()), name="stamped.pdf")
    assert store.index.wait(60)
    page = store.index.page("doc-1/page-1")
    assert page.source == "OCR" and "termination" in page.text.lower(), page


def test_ocr_for_the_index_waits_for_the_model_to_be_idle_unless_someone_waits_for_the_pages(tiny_runtime, monkeypatch):
    """Two cores shared between the index's OCR and a decode loop halve the decoding: OCR waits until the model
    has been idle a while (an agent's model calls come with short gaps), except when a search waits for the
    pages (then the pages come first)."""
    from qwenvl_agent.tools import index_ocr

    monkeypatch.setattr(index_ocr, "IDLE_SECONDS", 0.5)
    monkeypatch.setattr(index_ocr, "SETTLE_SECONDS", 0.1)
    read = []
    index = PageIndex(read=lambda image: read.append((image.size, time.monotonic())) or [])
    tiny_runtime.gate.enter()  # what every generation of the model does while it runs
    try:
        index.add_image("img-1", Image.new("RGB", (50, 40)))
        time.sleep(1.0)
        assert read == [] and index.progress() == (0, 1)
    finally:
        tiny_runtime.gate.leave()
    ended = time.monotonic()
    while not read and time.monotonic() < ended + 5:
        time.sleep(0.02)
    assert [size for size, _ in read] == [(50, 40)]
    assert read[0][1] - ended >= 0.5  # only after the model was idle that long
    tiny_runtime.gate.enter()
    try:
        index.add_image("img-2", Image.new("RGB", (60, 40)))
        assert index.wait(5)  # a waiter: read now, generation or not
        assert [size for size, _ in read] == [(50, 40), (60, 40)]
    finally:
        tiny_runtime.gate.leave()
    index.close()
