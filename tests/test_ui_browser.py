"""End to end in a real browser: the page on the tiny checkpoint, driven in Debian's headless Chromium.

The first test runs ``qwenvl ui`` itself; the tiny model's answer is random text, so it checks that the question,
the image's thumbnail and an answer appear. The others run the page with the model's replies scripted and slow
(tests/scripted_page.py), to act while an answer streams and check its full text. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from documents import draw_invoice, png_bytes
from processes import free_port, qwenvl_process, stop, wait_until_healthy
from slow_replies import story

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
    expect(answer).to_contain_text(FINISHED, timeout=120_000)  # (while the page redraws, the live status may linger)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(answer.get_by_test_id("stAlert")).to_have_count(0)
    assert answer.locator(ANSWER).last.inner_text().strip(), "the answer is empty"


def pdf_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    draw_invoice().save(path, "PDF")
    return path


# Answers that stream for a while: the model's replies are scripted (tests/scripted_page.py), a token every
# TOKEN_SECONDS, in the order the model writes them.

TOKEN_SECONDS = 0.02
FIRST, SECOND = story(25, "first"), story(25, "second")  # about 430 tokens each: 10 s or more
STOP_KEY = '[class*="st-key-stop-"]'  # where an answer's Stop button is in the DOM


def stop_buttons(page):
    """The Stop buttons of answers (Streamlit's own "Stop", of a running script, is in the toolbar)."""
    return page.get_by_test_id("stChatMessage").get_by_role("button", name="Stop")


@contextlib.contextmanager
def scripted_server(tiny_model: str, tmp_path: Path, replies: list[str]):
    """The page on the tiny checkpoint, its model replying ``replies`` one token every TOKEN_SECONDS."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("scripted_page.py")),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--", "--model", tiny_model, "--engine", "torch", "--max-new-tokens", "2000",
    ]
    env = {"QWENVL_TEST_REPLIES": json.dumps(replies), "QWENVL_TEST_TOKEN_SECONDS": str(TOKEN_SECONDS)}
    with command_process(command, tmp_path / "server.log", f"{url}/_stcore/health", env=env, cwd=tmp_path):
        yield url


@contextlib.contextmanager
def command_process(command: list[str], log: Path, health: str, env: dict, cwd: Path):
    """``command`` in a process group of its own, offline, once ``health`` answers; stopped on the way out."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_healthy(health, process, log)
        yield process
    finally:
        stop(process)


def send(expect, page, question: str):
    """Ask once the page can take a question; the assistant's message for it."""
    chat = page.get_by_test_id("stChatInput")
    expect(chat.get_by_test_id("stChatInputTextArea")).to_be_editable(timeout=90_000)
    count = page.get_by_test_id("stChatMessage").count()
    chat.get_by_test_id("stChatInputTextArea").fill(question)
    chat.get_by_test_id("stChatInputSubmitButton").click()
    return page.get_by_test_id("stChatMessage").nth(count + 1)


def test_an_answer_goes_on_while_a_file_is_attached_and_stop_ends_an_answer(tiny_model, tmp_path):
    """While an answer streams the user adds a PDF in the sidebar (Streamlit reruns the page): the answer
    goes on to its end. The next answer is stopped with Stop. No Stop button stays once an answer has ended."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with scripted_server(tiny_model, tmp_path, [FIRST, SECOND]) as url, browser_page(sync_api, SCREENSHOT.with_name("ui-stopped.png")) as page:
        page.goto(url, timeout=30_000)
        first = send(expect, page, "Tell me a long story.")
        answer = first.locator(ANSWER).last
        expect(answer).to_contain_text("Line 3 of the first story.", timeout=60_000)  # it is streaming
        stop_button = stop_buttons(page)
        expect(stop_button).to_have_count(1)

        page.get_by_test_id("stSidebar").locator("input[type=file]").set_input_files(str(pdf_file(tmp_path)))
        expect(page.get_by_test_id("stSidebar")).to_contain_text("doc-1/page-1", timeout=30_000)
        assert "Line 25 of" not in answer.inner_text(), "the answer ended before the upload: make it longer"
        expect(answer).to_contain_text("Line 12 of the first story.", timeout=120_000)  # it goes on
        page.screenshot(path=str(SCREENSHOT.with_name("ui-attach-mid-answer.png")))
        expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()  # one answer at a time

        expect(first).to_contain_text("Answered without tools", timeout=240_000)
        expect(answer).to_have_text(FIRST)
        expect(first).not_to_contain_text("stopped")
        expect(stop_button).to_have_count(0)  # nothing left to stop
        expect(page.locator(STOP_KEY)).to_have_count(0)

        second = send(expect, page, "And another one?")
        answer = second.locator(ANSWER).last
        expect(answer).to_contain_text("Line 2 of the second story.", timeout=60_000)
        stop_button.click()
        expect(second).to_contain_text("Stopped after", timeout=30_000)
        expect(stop_button).to_have_count(0)
        expect(page.locator(STOP_KEY)).to_have_count(0)
        partial = answer.inner_text().strip()
        assert partial and SECOND.startswith(partial) and partial != SECOND, partial
        expect(page.get_by_test_id("stChatInputTextArea")).to_be_editable()
        expect(page.get_by_test_id("stException")).to_have_count(0)


def test_the_busy_note_goes_once_both_answers_have_ended(tiny_model, tmp_path):
    """Two people ask at once: the second waits for the first. Once both answers have ended neither page
    says the model is busy."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with scripted_server(tiny_model, tmp_path, [FIRST, SECOND]) as url, browser_page(sync_api, SCREENSHOT.with_name("ui-busy.png")) as one:
        two = one.context.browser.new_page(viewport={"width": 1280, "height": 1000})
        one.goto(url, timeout=30_000)
        two.goto(url, timeout=30_000)
        first = send(expect, one, "Tell me a long story.")
        expect(first.locator(ANSWER).last).to_contain_text("Line 2 of the first story.", timeout=60_000)
        second = send(expect, two, "Me too.")
        expect(second).to_contain_text("in the queue")

        expect(first).to_contain_text("Answered without tools", timeout=240_000)
        expect(first.locator(ANSWER).last).to_have_text(FIRST)
        expect(second).to_contain_text("Answered without tools", timeout=240_000)
        expect(second.locator(ANSWER).last).to_have_text(SECOND)
        for page in (two, one):
            expect(page.get_by_text("answering another request")).to_have_count(0, timeout=10_000)
            expect(page.get_by_text("in the queue")).to_have_count(0)
        for page in (one, two):
            expect(page.locator(STOP_KEY)).to_have_count(0)
