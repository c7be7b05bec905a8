"""A question asked into the page's microphone, in real Chromium: its fake capture device plays a WAV made by
espeak-ng, the page transcribes the recording (PocketSphinx's English model in place of Whisper, so the words can
be checked: tests/scripted_voice_page.py) and sends it; the scripted answer is read aloud as a playable WAV."""

from __future__ import annotations

import re
import sys
import wave
from pathlib import Path
from urllib.parse import urljoin

import pytest
from processes import free_port
from speech import espeak, heard, wav_seconds
from test_ui_browser import ANSWER, CHROMIUM, CHROMIUM_ARGS, FINISHED, command_process

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
pytest.importorskip("av", reason="voice needs PyAV: pip install '.[voice]'")
SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui-voice.png"
REPLIES = ["The total amount is forty two dollars.", "It is dated the first of March."]
MAX_AUDIO_SECONDS = 5  # the page's bound on a recording


def test_a_spoken_question_is_answered_and_the_answer_read_aloud(tiny_model, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    question = after_silence(espeak(tmp_path / "question.wav"), seconds=1.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("scripted_voice_page.py")),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--", "--model", tiny_model, "--engine", "torch",
        "--max-audio-seconds", str(MAX_AUDIO_SECONDS),
    ]
    env = {"QWENVL_TEST_REPLIES": __import__("json").dumps(REPLIES), "QWENVL_TEST_TOKEN_SECONDS": "0"}
    microphone = [  # each recording hears the question once
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={question}%noloop",
    ]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    with command_process(command, tmp_path / "page.log", f"{url}/_stcore/health", env=env, cwd=tmp_path), \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS + microphone)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.set_default_timeout(60_000)
        try:
            page.goto(url, timeout=30_000)
            chat = page.get_by_test_id("stChatInput").get_by_test_id("stChatInputTextArea")
            expect(chat).to_be_editable(timeout=90_000)  # the model is loaded
            record(page, seconds=4)

            messages = page.get_by_test_id("stChatMessage")
            asked, answer = messages.nth(0), messages.nth(1)
            expect(asked).to_contain_text("Asked by voice", timeout=60_000)
            words = asked.locator('[data-testid="stMarkdown"]').first.inner_text()
            assert "total" in words and "dollars" in words, words
            expect(answer).to_contain_text(FINISHED, timeout=120_000)
            expect(answer.locator(ANSWER).last).to_have_text(REPLIES[0])  # drawn from the history

            answer.get_by_role("button", name=re.compile("Read aloud")).click()
            wav = spoken_answer(page, url, answer)
            assert wav_seconds(wav) > 1.0
            said = heard(wav)
            assert "total" in said and "dollars" in said, said

            record(page, seconds=MAX_AUDIO_SECONDS + 2)  # too long
            error = page.get_by_test_id("stAlert").filter(has_text="The recording could not be transcribed")
            expect(error).to_contain_text(f"longer than the {MAX_AUDIO_SECONDS}-second limit", timeout=30_000)
            expect(chat).to_be_editable()  # the question can be typed instead
            expect(messages).to_have_count(2)

            page.get_by_text("Read answers aloud").click()  # from now on each new answer plays by itself
            chat.fill("And the date?")
            page.get_by_test_id("stChatInputSubmitButton").click()
            second = messages.nth(3)
            expect(second).to_contain_text(FINISHED, timeout=120_000)
            player = second.locator("audio")
            expect(player).to_have_count(1, timeout=60_000)
            assert player.get_attribute("autoplay") is not None
            assert heard(spoken_answer(page, url, second)), "the second answer is spoken too"
        finally:
            page.screenshot(path=str(SCREENSHOT))
            browser.close()


def after_silence(path: Path, seconds: float) -> Path:
    """The WAV with ``seconds`` of silence before the speech: the recorder starts a moment after the capture does."""
    with wave.open(str(path)) as reader:
        params, frames = reader.getparams(), reader.readframes(reader.getnframes())
    with wave.open(str(path), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(b"\0" * params.sampwidth * params.nchannels * int(seconds * params.framerate) + frames)
    return path


def record(page, seconds: float) -> None:
    microphone = page.get_by_test_id("stAudioInput")
    microphone.get_by_role("button", name="Record").click()
    page.wait_for_timeout(seconds * 1000)
    microphone.get_by_role("button", name="Stop recording").click()


def spoken_answer(page, url: str, answer) -> bytes:
    """The WAV behind the answer's player, once Chromium has read it as audio (its duration known)."""
    player = answer.locator("audio")
    expect = __import__("playwright.sync_api", fromlist=["expect"]).expect
    expect(player).to_have_count(1)
    duration = player.evaluate(
        "el => new Promise(done => { if (el.readyState >= 1) done(el.duration); "
        "el.onloadedmetadata = () => done(el.duration); el.onerror = () => done(-1); el.load(); })")
    assert duration > 1.0, "Chromium cannot play the spoken answer"
    return page.request.get(urljoin(url, player.get_attribute("src"))).body()
