"""``qwenvl ask FILE --audio question.wav --speak answer.wav``: the spoken question is transcribed and is what the
model is asked; the answer is written as speech that says it. The model's replies are scripted (tiny checkpoint)."""

from __future__ import annotations

import json

import pytest
from speech import espeak, heard, random_whisper, wav_seconds

from qwenvl_agent.cli import main
from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.testing import scripted_replies
from qwenvl_agent.voice import transcribe

pytest.importorskip("av", reason="voice needs PyAV: pip install '.[voice]'")
ANSWER = "The total amount is forty two dollars."


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return random_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture
def asked(tiny_model, monkeypatch):
    """The tiny model's runtime, and the prompts it is given from now on."""
    runtime = ChatQwenVL(model=tiny_model, engine="torch").runtime
    prompts = []
    original = runtime.stream

    def recording(prompt, settings):
        prompts.append(json.dumps(prompt.messages, ensure_ascii=False, default=str))
        return original(prompt, settings)

    monkeypatch.setattr(runtime, "stream", recording)
    return runtime, prompts


def test_ask_by_voice_and_hear_the_answer(tiny_model, whisper, asked, tmp_path, capsys):
    runtime, prompts = asked
    question = espeak(tmp_path / "question.wav")
    answer = tmp_path / "answer.wav"
    expected = transcribe(question, "en", model=whisper).text
    with scripted_replies(runtime, [ANSWER]) as left:
        code = main(["ask", "--sample", "invoice", "--audio", str(question), "--language", "en", "--asr-model", whisper,
                     "--speak", str(answer), "--model", tiny_model, "--engine", "torch", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert left == [] and json.loads(captured.out)["answer"] == ANSWER
    assert f"Heard (en): {expected}" in captured.err
    assert expected and expected in prompts[0], "the model is asked what was heard"
    assert wav_seconds(answer.read_bytes()) > 1.0
    words = heard(answer)
    assert "total" in words and "dollars" in words, words


def test_bad_audio_is_an_error_before_the_model_is_asked(tiny_model, whisper, asked, tmp_path, capsys):
    runtime, prompts = asked
    bad = tmp_path / "question.wav"
    bad.write_bytes(b"RIFF and then nothing that is audio" * 8)
    with scripted_replies(runtime, [ANSWER]) as left:
        code = main(["ask", "--sample", "invoice", "--audio", str(bad), "--asr-model", whisper,
                     "--model", tiny_model, "--engine", "torch"])
    err = capsys.readouterr().err
    assert code == 1 and f"error: The file {bad} could not be read as audio" in err and "Traceback" not in err
    assert left == [ANSWER] and prompts == []


def test_the_question_is_typed_or_spoken(tiny_model, tmp_path, capsys):
    question = espeak(tmp_path / "question.wav")
    assert main(["ask", "--sample", "invoice", "-q", "What?", "--audio", str(question), "--model", tiny_model]) == 2
    assert "error: give the question as text (-q) or spoken (--audio FILE), one of them" in capsys.readouterr().err
    assert main(["ask", "--sample", "invoice", "--model", tiny_model]) == 2
    assert "one of them" in capsys.readouterr().err
