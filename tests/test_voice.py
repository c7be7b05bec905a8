"""Speech in and out: real speech made here with espeak-ng, decoded from every format browsers and phones record,
recognised by a random Whisper of the real architecture through faster-whisper (the plumbing), and by
PocketSphinx's English model, which its wheel ships (the accuracy: the words must come back)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import wave

import numpy as np
import pytest

from qwenvl_agent.cli import main
from qwenvl_agent.vlm.errors import ModelNotAvailableError
from qwenvl_agent.voice import AudioInputError, choose_voice, load_audio, speak, synthesize, transcribe
from qwenvl_agent.voice.audio import SAMPLE_RATE

pytest.importorskip("av", reason="voice needs PyAV: pip install '.[voice]'")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")

ENGLISH = "The total amount is forty two dollars"
CHINESE = "这张发票的总金额是四十二元"


def _espeak(path, text, voice):
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


def _seconds(wav_bytes: bytes) -> float:
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        return reader.getnframes() / reader.getframerate()


@pytest.fixture(scope="session")
def english_wav(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return _espeak(tmp_path_factory.mktemp("speech") / "english.wav", ENGLISH, "en-us")


@pytest.fixture(scope="session")
def chinese_wav(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return _espeak(tmp_path_factory.mktemp("speech") / "chinese.wav", CHINESE, "cmn")


@pytest.fixture(scope="session")
def whisper(tmp_path_factory) -> str:
    """A random Whisper (tiny dimensions, the real architecture and vocabulary layout) converted to CTranslate2."""
    pytest.importorskip("faster_whisper", reason="pip install '.[voice]'")
    from qwenvl_agent.voice.testing import make_random_whisper

    return str(make_random_whisper(tmp_path_factory.mktemp("whisper")))


def _pocketsphinx(samples: np.ndarray) -> str:
    """PocketSphinx's reading of 16 kHz samples with the US English model inside its wheel."""
    pocketsphinx = pytest.importorskip("pocketsphinx", reason="pip install '.[test]'")
    decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


# ----- decoding -----------------------------------------------------------------------------------------------

FORMATS = {  # what browsers and phones record
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "ogg": ["-c:a", "libopus", "-b:a", "32k"],
    "webm": ["-c:a", "libopus", "-b:a", "32k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
}


@needs_ffmpeg
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_recorded_format_decodes_to_the_same_speech(english_wav, tmp_path, fmt):
    encoded = tmp_path / f"question.{fmt}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(english_wav), *FORMATS[fmt], str(encoded)], check=True)
    reference = load_audio(english_wav)
    samples = load_audio(encoded.read_bytes())
    assert samples.dtype == np.float32
    assert abs(samples.size - reference.size) / SAMPLE_RATE < 0.06, "the length of the speech must survive the codec"
    # The loudness over time (20 ms frames) follows the original: the same words at the same moments.
    frames = min(samples.size, reference.size) // 320
    loudness = [np.sqrt((x[: frames * 320].reshape(frames, 320) ** 2).mean(axis=1)) for x in (samples, reference)]
    assert np.corrcoef(*loudness)[0, 1] > 0.95
    assert "total" in _pocketsphinx(samples)


def test_a_path_its_bytes_and_its_samples_are_the_same_audio(english_wav):
    with wave.open(str(english_wav)) as reader:
        rate = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    from_path = load_audio(english_wav)
    assert from_path.size == pytest.approx(pcm.size * SAMPLE_RATE / rate, abs=2)
    np.testing.assert_array_equal(load_audio(english_wav.read_bytes()), from_path)
    np.testing.assert_allclose(load_audio((pcm, rate)), from_path, atol=1e-4)
    np.testing.assert_allclose(load_audio((pcm.astype(np.float32) / 32768, rate)), from_path, atol=1e-4)
    stereo = np.stack([pcm, pcm], axis=1)
    np.testing.assert_allclose(load_audio((stereo, rate)), from_path, atol=1e-4)


def test_the_decoded_english_speech_is_understood(english_wav):
    """A real-accuracy check on our decoding: PocketSphinx (its wheel's en-us model) hears the key words."""
    heard = _pocketsphinx(load_audio(english_wav))
    assert "total" in heard and "dollars" in heard, heard


# ----- bad audio ----------------------------------------------------------------------------------------------

def _silence(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("audio", "message"), [
    (b"", "The audio is empty (0 bytes)."),
    (_silence(2.0), "The audio is silent (2.0 s without sound)"),
    (_silence(0.0), "The audio holds no sound (0 samples)."),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4, "The audio could not be read as audio"),
    (b"What is the total on this invoice?\n" * 20, "The audio could not be read as audio"),
    (_png(), "The audio has no sound track (it is not an audio file)."),
    ((np.zeros(0, np.float32), 16000), "The audio holds no sound (0 samples)."),
    ((np.full(1600, np.nan, np.float32), 16000), "The audio holds NaN or infinite samples."),
    ((np.ones(1600, np.float32), 0), "The sample rate must be a whole number of Hz between 1000 and 384000; got 0."),
    (np.ones(1600, np.float32), "Samples need their rate: pass (array, sample_rate)"),
    (12, "Audio must be a file path, the file's bytes, or (samples, sample_rate); got int."),
])
def test_bad_audio_is_a_clear_error(audio, message):
    with pytest.raises(AudioInputError) as raised:
        load_audio(audio)
    assert str(raised.value).startswith(message)


def test_over_long_audio_is_refused_without_decoding_it_all(english_wav):
    with pytest.raises(AudioInputError, match=r"^The file .*english.wav is longer than the 1-second limit\.$"):
        load_audio(english_wav, max_seconds=1)
    assert load_audio(english_wav, max_seconds=None).size > SAMPLE_RATE * 2


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(AudioInputError, match=r"^No audio file at .*nothing.wav\.$"):
        load_audio(tmp_path / "nothing.wav")


# ----- recognition (a random Whisper through the real faster-whisper path) -----------------------------------

def test_transcribe_returns_the_transcript_of_the_whole_audio(whisper, english_wav):
    with wave.open(str(english_wav)) as reader:
        duration = reader.getnframes() / reader.getframerate()
    transcript = transcribe(english_wav, "en", model=whisper)
    assert transcript.language == "en"
    assert transcript.seconds == pytest.approx(duration, abs=1e-3)
    assert transcript.segments, "the random model still writes segments"
    for segment in transcript.segments:
        assert 0 <= segment.start <= segment.end <= transcript.seconds
    assert transcript.text == " ".join(s.text for s in transcript.segments if s.text)


def test_the_language_is_given_as_a_browser_tag_or_detected(whisper, chinese_wav):
    from qwenvl_agent.voice import load_recognizer

    given = transcribe(chinese_wav.read_bytes(), "zh-CN", model=whisper)
    assert given.language == "zh"
    assert given.text == "".join(s.text for s in given.segments), "Chinese segments join without spaces"
    detected = transcribe(chinese_wav, model=whisper)
    assert detected.language in load_recognizer(whisper).languages
    with pytest.raises(ValueError, match="Unknown language 'klingon' for speech recognition"):
        transcribe(chinese_wav, "klingon", model=whisper)


def test_samples_in_memory_are_transcribed(whisper, english_wav):
    with wave.open(str(english_wav)) as reader:
        rate = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    transcript = transcribe((pcm, rate), "en", model=whisper)
    assert transcript.seconds == pytest.approx(pcm.size / rate, abs=1e-3)


def test_the_random_whisper_is_sure_of_itself_so_its_transcript_depends_only_on_the_audio(whisper, english_wav, chinese_wav):
    """A flat random Whisper failed faster-whisper's thresholds and was re-decoded by sampling, so the server and
    this process heard the same file differently; the test model's greedy pass must be accepted."""
    from qwenvl_agent.voice import load_recognizer

    model = load_recognizer(whisper).model
    for audio in (english_wav, chinese_wav):
        pieces, _ = model.transcribe(load_audio(audio), language="en", beam_size=1, condition_on_previous_text=False)
        assert {segment.temperature for segment in pieces} == {0.0}, "greedy decoding was kept, no sampling"
    first = transcribe(english_wav, "en", model=whisper)
    assert first.text and transcribe(english_wav, "en", model=whisper) == first
    assert transcribe(chinese_wav, "en", model=whisper).text != first.text, "what it writes depends on what it hears"


def test_the_recogniser_is_loaded_once(whisper):
    from qwenvl_agent.voice import load_recognizer

    assert load_recognizer(whisper) is load_recognizer(whisper)


def test_bad_audio_fails_before_the_model_runs(whisper):
    with pytest.raises(AudioInputError, match="silent"):
        transcribe(_silence(1.0), model=whisper)


def test_a_model_that_cannot_be_had_says_how_to_provide_one(tmp_path):
    pytest.importorskip("faster_whisper", reason="pip install '.[voice]'")
    with pytest.raises(ModelNotAvailableError) as raised:
        transcribe(_silence(1.0), model="Systran/faster-whisper-base")
    message = str(raised.value)
    assert "'Systran/faster-whisper-base' is not in the local cache" in message
    assert "hf download Systran/faster-whisper-base" in message and "local folder" in message
    with pytest.raises(ModelNotAvailableError, match="has no model.bin: it is not a faster-whisper model"):
        transcribe(_silence(1.0), model=tmp_path)


# ----- synthesis ----------------------------------------------------------------------------------------------

@needs_espeak
def test_speak_returns_a_wav_as_long_as_the_words_take():
    wav = speak(ENGLISH)
    with wave.open(io.BytesIO(wav)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        assert reader.getframerate() == 22050
    words = len(ENGLISH.split())
    assert 0.15 * words < _seconds(wav) < 0.8 * words


@needs_espeak
def test_spoken_english_is_understood_again():
    """The round trip: speak() → decoding → PocketSphinx hears the key words."""
    heard = _pocketsphinx(load_audio(speak(ENGLISH)))
    assert "total" in heard and "dollars" in heard, heard


@needs_espeak
def test_the_voice_follows_the_language_of_the_text():
    chinese = synthesize(CHINESE)
    assert (chinese.voice.engine, chinese.voice.name, chinese.voice.language) == ("espeak", "cmn", "zh")
    assert 1.0 < chinese.seconds < 0.8 * len(CHINESE)
    assert synthesize(ENGLISH).voice.name == "en-us"
    assert synthesize("发票总额 total: 42").voice.name == "cmn", "Chinese words among English ones"
    assert synthesize("The invoice 发票 shows a total of 42 dollars").voice.name == "en-us"
    assert synthesize(ENGLISH, language="zh-CN").voice.name == "cmn"
    assert synthesize(ENGLISH, voice="espeak:en-gb").voice.name == "en-gb"
    assert synthesize(ENGLISH, voice="de").voice.name == "de"


@needs_espeak
def test_text_that_looks_like_an_option_is_spoken():
    assert _seconds(speak("--help me read this")) > 0.5


@needs_espeak
def test_bad_speech_requests_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Nothing to speak: the text is empty."):
        speak("   ")
    with pytest.raises(ValueError, match="Unknown voice 'nobody'"):
        speak("hello", voice="nobody")
    with pytest.raises(ValueError, match="No espeak-ng voice speaks 'xx'"):
        speak("hello", language="xx")
    with pytest.raises(ModelNotAvailableError, match=r"Piper voice 'en_US-lessac-medium' from 'rhasspy/piper-voices' is not in the local cache"):
        speak("hello", voice="en_US-lessac-medium")
    with pytest.raises(ModelNotAvailableError, match="has no voice.onnx.json beside it"):
        (tmp_path / "voice.onnx").write_bytes(b"onnx")
        speak("hello", voice=str(tmp_path / "voice.onnx"))


@needs_espeak
def test_without_a_neural_voice_on_disk_espeak_speaks():
    """Offline and with no Piper voice in the cache, the default is espeak-ng: nothing is downloaded."""
    assert choose_voice(ENGLISH).engine == "espeak"
    assert choose_voice(CHINESE).engine == "espeak"


# ----- the CLI ------------------------------------------------------------------------------------------------

@needs_espeak
def test_cli_speak_then_transcribe(whisper, tmp_path, capsys):
    out = tmp_path / "answer.wav"
    assert main(["speak", CHINESE, "-o", str(out)]) == 0
    assert "voice cmn (espeak)" in capsys.readouterr().err
    assert main(["transcribe", str(out), "--model", whisper, "--language", "zh", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["language"] == "zh"
    assert document["seconds"] == pytest.approx(_seconds(out.read_bytes()), abs=1e-3)


def test_cli_reports_bad_audio_as_an_error(whisper, tmp_path, capsys):
    bad = tmp_path / "question.wav"
    bad.write_bytes(b"not audio at all" * 10)
    assert main(["transcribe", str(bad), "--model", whisper]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: The file {bad} could not be read as audio") and "Traceback" not in err


def test_transcription_runs_while_the_vision_model_is_answering(whisper, english_wav, tiny_runtime):
    """Speech never waits on the vision model's generation gate: with the gate held (an answer being written),
    a transcription still finishes."""
    import threading

    done = threading.Event()
    with tiny_runtime.gate.hold():
        worker = threading.Thread(target=lambda: (transcribe(english_wav, "en", model=whisper), done.set()), daemon=True)
        worker.start()
        assert done.wait(60), "the transcription waited for the vision model's gate"
        assert tiny_runtime.gate.busy
