"""The speech routes of ``qwenvl serve`` with OpenAI's Python client: ``/v1/audio/transcriptions`` and
``/v1/audio/speech`` against the server in its own process (a random Whisper recognises, espeak-ng speaks), and
the spoken question of ``/v1/agent`` (in this process, so the model's replies can be scripted)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from processes import free_port, qwenvl_process
from speech import QUESTION, espeak, heard, random_whisper, wav_seconds

pytest.importorskip("fastapi")
pytest.importorskip("av", reason="voice needs PyAV: pip install '.[voice]'")
openai = pytest.importorskip("openai")

from qwenvl_agent.voice import transcribe  # noqa: E402

KEY = "voice-key"
MAX_SECONDS = 4


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return random_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    return espeak(tmp_path_factory.mktemp("speech") / "question.wav")


@pytest.fixture(scope="module")
def serve(tiny_model, whisper, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    arguments = ["serve", "--model", tiny_model, "--engine", "torch", "--port", str(port), "--api-key", KEY,
                 "--asr-model", whisper, "--max-audio-seconds", str(MAX_SECONDS)]
    url = f"http://127.0.0.1:{port}"
    with qwenvl_process(arguments, log, f"{url}/health"):
        yield url


def client(url, key=KEY):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def test_transcriptions_in_each_response_format(serve, whisper, question):
    expected = transcribe(question, "en", model=whisper)
    with question.open("rb") as file:
        plain = client(serve).audio.transcriptions.create(model="whisper-1", file=file, language="en")
    assert plain.text == expected.text and expected.text
    with question.open("rb") as file:
        text = client(serve).audio.transcriptions.create(model="whisper-1", file=file, language="en", response_format="text")
    assert text == expected.text
    with question.open("rb") as file:
        verbose = client(serve).audio.transcriptions.create(model="whisper-1", file=file, language="en",
                                                            response_format="verbose_json")
    assert (verbose.text, verbose.language, verbose.duration) == (expected.text, "en", expected.seconds)
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [(s.start, s.end, s.text) for s in expected.segments]


def test_speech_is_a_wav_that_says_the_text(serve):
    reply = client(serve).audio.speech.create(model="tts-1", voice="alloy", input=QUESTION, response_format="wav")
    audio = reply.read()
    assert reply.response.headers["content-type"] == "audio/wav"
    assert wav_seconds(audio) > 1.0
    words = heard(audio)
    assert "total" in words and "dollars" in words, words
    chinese = client(serve).audio.speech.create(model="tts-1", voice="alloy", input="总金额是四十二元")
    assert chinese.response.headers["x-voice"] == "cmn (espeak)", "the default voice follows the text's language"


@pytest.mark.parametrize(("name", "data", "message"), [
    ("empty.wav", b"", "file: The audio is empty (0 bytes)."),
    ("question.wav", b"RIFF not really a wave file" * 20, "file: The audio could not be read as audio"),
    ("page.png", base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="),
     "file: The audio has no sound track (it is not an audio file)."),
])
def test_bad_audio_is_400_and_the_next_request_is_served(serve, question, name, data, message):
    with pytest.raises(openai.BadRequestError) as raised:
        client(serve).audio.transcriptions.create(model="whisper-1", file=(name, data), language="en")
    error = raised.value.body
    assert raised.value.status_code == 400 and error["message"].startswith(message), error
    assert (error["param"], error["code"]) == ("file", "invalid_audio")
    with question.open("rb") as file:
        assert client(serve).audio.transcriptions.create(model="whisper-1", file=file, language="en").text


def test_over_long_audio_is_refused(serve, tmp_path):
    long = espeak(tmp_path / "long.wav", " ".join([QUESTION] * 4))
    with pytest.raises(openai.BadRequestError, match=f"longer than the {MAX_SECONDS}-second limit"):
        client(serve).audio.transcriptions.create(model="whisper-1", file=long.open("rb"))


def test_bad_speech_requests_and_the_key(serve, question):
    with pytest.raises(openai.BadRequestError, match="Unknown voice 'nobody'"):
        client(serve).audio.speech.create(model="tts-1", voice="nobody", input="hello")
    with pytest.raises(openai.BadRequestError, match="a request names a voice"):
        client(serve).audio.speech.create(model="tts-1", voice="/etc/passwd.onnx", input="hello")
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client(serve).audio.speech.create(model="tts-1", voice="alloy", input="hello", response_format="mp3")
    with pytest.raises(openai.BadRequestError, match="response_format must be one of json, text, verbose_json; got 'srt'"):
        client(serve).audio.transcriptions.create(model="whisper-1", file=question.open("rb"), response_format="srt")
    with pytest.raises(openai.BadRequestError, match="Unknown language 'klingon'"):
        client(serve).audio.transcriptions.create(model="whisper-1", file=question.open("rb"), language="klingon")
    with pytest.raises(openai.AuthenticationError):
        client(serve, "wrong").audio.speech.create(model="tts-1", voice="alloy", input="hello")
    as_json = httpx.post(f"{serve}/v1/audio/transcriptions", json={"file": "x"}, headers={"Authorization": f"Bearer {KEY}"})
    assert as_json.status_code == 415 and "multipart/form-data" in as_json.json()["error"]["message"]


# ----- /v1/agent with a spoken question (in this process: the model's replies are scripted) ----------------

@pytest.fixture(scope="module")
def served(tiny_model, whisper):
    from served import Served

    from qwenvl_agent.server.app import ServerSettings

    server = Served(ServerSettings(model=tiny_model, engine="torch", asr_model=whisper, max_audio_seconds=MAX_SECONDS))
    yield server
    server.stop()


def agent_events(served, body):
    with httpx.stream("POST", f"{served.url}/v1/agent", json=body, timeout=300) as response:
        assert response.status_code == 200, response.read()
        lines = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines[:-1]]


def test_the_agent_answers_a_spoken_question(served, whisper, question, monkeypatch):
    from qwenvl_agent.vlm.testing import scripted_replies

    expected = transcribe(question, "en", model=whisper)
    prompts = []
    original = served.runtime.stream
    monkeypatch.setattr(served.runtime, "stream", lambda prompt, settings: (
        prompts.append(json.dumps(prompt.messages, ensure_ascii=False, default=str)), original(prompt, settings))[1])
    audio = "data:audio/wav;base64," + base64.b64encode(question.read_bytes()).decode()
    with scripted_replies(served.runtime, ["Forty two dollars."]):
        events = agent_events(served, {"audio": audio, "language": "en"})
    # The random recognizer writes noise, and where its noise trips Whisper's temperature fallback it samples:
    # what it heard may differ between two transcriptions, so the event is compared with what the model was asked.
    heard = events[1]
    assert heard == {"event": "Transcript", "text": heard["text"], "language": "en", "seconds": expected.seconds}
    assert heard["text"].strip() and heard["text"] in prompts[0], "the model is asked what was heard"
    assert events[-1]["event"] == "Answer" and events[-1]["text"] == "Forty two dollars."


def test_the_agent_refuses_bad_spoken_questions(served):
    for body, status, message in [
        ({"audio": base64.b64encode(b"not audio" * 50).decode()}, 400, "audio: The audio could not be read as audio"),
        ({"audio": "not base64 !!"}, 400, "audio is not valid base64 data."),
        ({"question": "What?", "audio": "AAAA"}, 400, "either as text (question) or spoken (audio)"),
        ({}, 400, "either as text (question) or spoken (audio)"),
    ]:
        reply = httpx.post(f"{served.url}/v1/agent", json=body, timeout=60)
        assert reply.status_code == status and message in reply.json()["error"]["message"], reply.text


def test_a_recognition_model_that_cannot_be_had_is_503_and_a_full_queue_is_busy(tmp_path, question):
    import asyncio

    from qwenvl_agent.server.admission import Admission
    from qwenvl_agent.server.app import ServerSettings
    from qwenvl_agent.server.audio import Voice
    from qwenvl_agent.server.openai_format import RequestError
    from qwenvl_agent.vlm import BusyError

    admission = Admission(1)
    voice = Voice(ServerSettings(model="unused", asr_model=str(tmp_path)), admission)
    with pytest.raises(RequestError) as raised:
        asyncio.run(voice.transcribe(question.read_bytes(), "en", "file"))
    assert (raised.value.status, raised.value.code) == (503, "model_unavailable")
    assert str(raised.value).startswith(f"Speech recognition is not available: {tmp_path} has no model.bin")
    release = admission.enter()  # one transcription running: the queue (of length 0 here) is full
    with pytest.raises(BusyError):
        asyncio.run(voice.transcribe(question.read_bytes(), "en", "file"))
    release()
