"""End to end in a real browser: ``qwenvl ui`` on the tiny checkpoint, driven in Debian's headless Chromium.

The tiny model's answer is random text, so the test checks that the question, the image's thumbnail and an
answer appear (with real weights the steps appear too). The screenshot is saved to test-artifacts/ui.png.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from documents import draw_invoice, png_bytes
from processes import free_port, qwenvl_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "test-artifacts" / "ui.png"
QUESTION = "What is the invoice total?"
FINISHED = re.compile(r"Answered without tools|\d+ steps? ·|Stopped at the step limit|Failed after")
# Markdown of the answer: in the assistant's message, outside the status box of steps
ANSWER = '[data-testid="stMarkdown"]:not([data-testid="stExpander"] *)'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture
def server(tiny_model, tmp_path):
    yield from serve(tiny_model, tmp_path)


@pytest.fixture
def slow_server(tiny_model, tmp_path):
    """The page with answers long enough to interact with while they stream (the tiny model writes on)."""
    yield from serve(tiny_model, tmp_path, "--max-new-tokens", "20000", "--engine", "torch")


def serve(tiny_model, tmp_path, *options: str):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    arguments = ["ui", "--model", tiny_model, "--port", str(port), *options]
    with qwenvl_process(arguments, tmp_path / "server.log", f"{url}/_stcore/health", cwd=tmp_path):
        yield url


def test_ask_about_an_image_attached_to_the_chat_input(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    image = tmp_path / "invoice.png"
    image.write_bytes(png_bytes(draw_invoice()))
    with browser_page(sync_api, SCREENSHOT) as page:
        ask_with_attachment(sync_api.expect, page, server, image)


@contextlib.contextmanager
def browser_page(sync_api, screenshot: Path):
    """A page in headless Chromium; its screenshot is saved to ``screenshot`` however the test ends."""
    screenshot.parent.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            try:
                yield page
            finally:
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()


def ask_with_attachment(expect, page, url: str, image: Path) -> None:
    page.goto(url, timeout=30_000)
    chat = page.get_by_test_id("stChatInput")
    expect(chat.get_by_test_id("stChatInputTextArea")).to_be_editable(timeout=90_000)  # the model is loaded
    chat.locator("input[type=file]").set_input_files(str(image))
    expect(chat.get_by_test_id("stFileChip")).to_have_count(1)
    chat.get_by_test_id("stChatInputTextArea").fill(QUESTION)
    send = chat.get_by_test_id("stChatInputSubmitButton")
    expect(send).to_be_enabled()  # the upload has finished
    send.click()

    messages = page.get_by_test_id("stChatMessage")
    question, answer = messages.nth(0), messages.nth(1)
    expect(question).to_contain_text(QUESTION)
    thumbnail = question.locator("img")
    expect(thumbnail).to_have_count(1)
    expect(question).to_contain_text("img-1")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    expect(answer.get_by_test_id("stExpander")).to_contain_text(FINISHED, timeout=120_000)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(answer.get_by_test_id("stAlert")).to_have_count(0)
    assert answer.locator(ANSWER).last.inner_text().strip(), "the answer is empty"


def pdf_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    draw_invoice().save(path, "PDF")
    return path


def test_an_upload_during_an_answer_keeps_the_answer_and_frees_the_model(slow_server, tmp_path):
    """While an answer streams, the user adds a PDF in the sidebar (Streamlit reruns the page) and asks
    about it: the first answer stays, marked as stopped, and the new question starts at once."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with browser_page(sync_api, SCREENSHOT.with_name("ui-stopped.png")) as page:
        page.goto(slow_server, timeout=30_000)
        chat = page.get_by_test_id("stChatInput")
        expect(chat.get_by_test_id("stChatInputTextArea")).to_be_editable(timeout=90_000)
        chat.get_by_test_id("stChatInputTextArea").fill("Tell me a long story.")
        chat.get_by_test_id("stChatInputSubmitButton").click()
        first = page.get_by_test_id("stChatMessage").nth(1)
        expect(first.locator(ANSWER).last).not_to_have_text("", timeout=60_000)  # it is streaming

        page.get_by_test_id("stSidebar").locator("input[type=file]").set_input_files(str(pdf_file(tmp_path)))
        expect(first).to_contain_text("Stopped after", timeout=30_000)
        expect(first).to_contain_text("stopped before it was complete")
        assert first.locator(ANSWER).last.inner_text().strip(), "the partial answer was lost"

        expect(chat.get_by_test_id("stChatInputTextArea")).to_be_editable()
        chat.get_by_test_id("stChatInputTextArea").fill("What is in the PDF?")
        chat.get_by_test_id("stChatInputSubmitButton").click()
        second = page.get_by_test_id("stChatMessage").nth(3)
        expect(second.locator(ANSWER).last).not_to_have_text("", timeout=20_000)  # started at once
        expect(second).not_to_contain_text("Another request is running")
        page.get_by_role("button", name="Stop").click()
        expect(page.get_by_test_id("stChatMessage").nth(3)).to_contain_text("Stopped after", timeout=30_000)
        expect(page.get_by_test_id("stException")).to_have_count(0)
