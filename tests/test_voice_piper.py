"""Piper's neural voices on the real path: a small random VITS of the real architecture, exported to the ONNX
signature Piper's runtime feeds, with the .onnx.json Piper reads (``make_random_piper_voice``), spoken through
piper-tts exactly as a downloaded ``rhasspy/piper-voices`` voice is: espeak-ng's phonemes, Piper's phoneme ids,
ONNX Runtime. What it says is noise; which voice spoke, the WAV, its rate and how long it runs are real."""

from __future__ import annotations

import io
import json
import shutil
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from qwenvl_agent.vlm.errors import ModelNotAvailableError
from qwenvl_agent.voice import speak, synthesize

pytest.importorskip("piper", reason="Piper voices need piper-tts: pip install '.[voice]'")
pytest.importorskip("onnx", reason="the random Piper voice is exported with onnx: pip install '.[test]'")

ENGLISH = "The total amount is forty two dollars"
CHINESE = "这张发票的总金额是四十二元"
HOP = 256  # audio samples per VITS frame (the decoder's upsampling 8·8·2·2), as in Piper's voices


@pytest.fixture(scope="module")
def english_voice(tmp_path_factory):
    from qwenvl_agent.voice.testing import make_random_piper_voice

    return make_random_piper_voice(tmp_path_factory.mktemp("piper-en"), "en", sample_rate=22050)


@pytest.fixture(scope="module")
def chinese_voice(tmp_path_factory):
    from qwenvl_agent.voice.testing import make_random_piper_voice

    return make_random_piper_voice(tmp_path_factory.mktemp("piper-zh"), "zh", sample_rate=16000)


def _wav(data: bytes):
    """(rate, channels, sample width, samples) of a WAV file's bytes."""
    with wave.open(io.BytesIO(data)) as reader:
        frames = reader.readframes(reader.getnframes())
        return reader.getframerate(), reader.getnchannels(), reader.getsampwidth(), np.frombuffer(frames, np.int16)


def _phoneme_ids(voice_path, text) -> list[list[int]]:
    """The phoneme ids Piper gives the model for ``text``, one list per sentence."""
    from piper import PiperVoice

    voice = PiperVoice.load(voice_path)
    return [voice.phonemes_to_ids(phonemes) for phonemes in voice.phonemize(text) if phonemes]


def test_a_piper_voice_speaks_english_as_a_wav_at_its_rate(english_voice):
    spoken = synthesize(ENGLISH, voice=str(english_voice))
    assert spoken.voice.engine == "piper"
    assert spoken.voice.path == english_voice
    assert spoken.voice.name == "en_US-random-x_low"
    rate, channels, width, samples = _wav(spoken.wav)
    assert (rate, channels, width) == (22050, 1, 2)
    assert spoken.seconds == pytest.approx(samples.size / rate, abs=1e-3)
    assert np.abs(samples).max() > 1000, "the voice's audio is silent"
    # The model was given this text's phonemes: every phoneme id lasts at least one frame of the decoder.
    (ids,) = _phoneme_ids(english_voice, ENGLISH)
    assert len(ids) > 2 * len(ENGLISH.split())
    assert samples.size % HOP == 0
    assert samples.size >= HOP * len(ids)
    assert speak(ENGLISH, voice=str(english_voice))[:4] == b"RIFF"


def test_the_speech_grows_with_the_text(english_voice):
    short = synthesize("Hi.", voice=str(english_voice)).seconds
    middle = synthesize(ENGLISH, voice=str(english_voice)).seconds
    long = synthesize(f"{ENGLISH}. {ENGLISH}. {ENGLISH}.", voice=str(english_voice)).seconds
    assert 0 < short < middle < long


def test_the_voice_settings_inference_scales_reach_the_model(english_voice, tmp_path):
    """Piper feeds the .onnx.json's scales to the model: a length_scale of 5 (with the duration noise off, so both
    runs draw the same durations) speaks the same text longer."""
    seconds = {}
    for length_scale in (1.0, 5.0):
        copy = _copy_voice(english_voice, tmp_path / f"length-{length_scale}")
        settings = json.loads(Path(f"{copy}.json").read_text())
        settings["inference"].update(length_scale=length_scale, noise_w=0.0)
        Path(f"{copy}.json").write_text(json.dumps(settings))
        seconds[length_scale] = synthesize(ENGLISH, voice=str(copy)).seconds
    assert seconds[5.0] > seconds[1.0] > 0


def test_a_folder_holding_one_voice_is_a_voice(english_voice):
    spoken = synthesize(ENGLISH, voice=str(english_voice.parent))
    assert (spoken.voice.engine, spoken.voice.path) == ("piper", english_voice)


def test_a_chinese_voice_speaks_chinese(chinese_voice):
    spoken = synthesize(CHINESE, voice=str(chinese_voice))
    assert (spoken.voice.engine, spoken.voice.language, spoken.voice.path) == ("piper", "zh", chinese_voice)
    rate, channels, width, samples = _wav(spoken.wav)
    assert (rate, channels, width) == (16000, 1, 2)
    # espeak-ng's Mandarin ("cmn" in the voice's settings) turned the characters into phonemes the model read.
    (ids,) = _phoneme_ids(chinese_voice, CHINESE)
    assert len(ids) > 2 * len(CHINESE)
    assert samples.size >= HOP * len(ids)
    assert 0 < synthesize("你好", voice=str(chinese_voice)).seconds < spoken.seconds


def test_real_time_factor_of_the_small_random_voice(english_voice):
    """Measured, not a target: the real voices are larger (see the README's speed table)."""
    answer = ("The invoice from Acme Supplies is dated the third of March and its total is forty two dollars "
              "and fifty cents, of which tax is three dollars and ten cents. It is due in thirty days, and the "
              "bank details are printed at the bottom of the second page.")  # about 80 tokens
    synthesize("Warm up.", voice=str(english_voice))
    started = time.perf_counter()
    spoken = synthesize(answer, voice=str(english_voice))
    elapsed = time.perf_counter() - started
    assert spoken.voice.engine == "piper" and spoken.seconds > 0
    print(f"\nrandom Piper voice: {spoken.seconds:.2f} s of speech in {elapsed:.3f} s, real-time factor {elapsed / spoken.seconds:.3f}")


# ----- broken voices: clear errors -------------------------------------------------------------------------

def _copy_voice(voice, folder):
    folder.mkdir()
    shutil.copy(voice, folder / voice.name)
    shutil.copy(f"{voice}.json", folder / f"{voice.name}.json")
    return folder / voice.name


def test_a_voice_without_its_settings_says_so(english_voice, tmp_path):
    copy = _copy_voice(english_voice, tmp_path / "voice")
    (tmp_path / "voice" / f"{copy.name}.json").unlink()
    with pytest.raises(ModelNotAvailableError, match=r"has no en_US-random-x_low\.onnx\.json beside it"):
        speak(ENGLISH, voice=str(copy))
    with pytest.raises(ModelNotAvailableError, match=r"has no en_US-random-x_low\.onnx\.json beside it"):
        speak(ENGLISH, voice=str(tmp_path / "voice"))
    with pytest.raises(ModelNotAvailableError, match="should hold one Piper voice .* it holds 0"):
        speak(ENGLISH, voice=str((tmp_path / "empty").mkdir() or tmp_path / "empty"))


def test_a_voice_with_broken_settings_says_so(english_voice, tmp_path):
    copy = _copy_voice(english_voice, tmp_path / "not-json")
    settings = tmp_path / "not-json" / f"{copy.name}.json"
    settings.write_text("{not json")
    with pytest.raises(ModelNotAvailableError, match=r"settings .*en_US-random-x_low\.onnx\.json are broken: not JSON"):
        speak(ENGLISH, voice=str(copy))
    copy = _copy_voice(english_voice, tmp_path / "incomplete")
    settings = tmp_path / "incomplete" / f"{copy.name}.json"
    settings.write_text(json.dumps({"audio": {"sample_rate": 22050}}))
    with pytest.raises(ModelNotAvailableError, match=r"settings .*en_US-random-x_low\.onnx\.json are broken: .*'num_symbols'"):
        speak(ENGLISH, voice=str(copy))


def test_a_voice_file_that_is_not_onnx_says_so(english_voice, tmp_path):
    copy = _copy_voice(english_voice, tmp_path / "voice")
    copy.write_bytes(b"this is not an ONNX model")
    with pytest.raises(ModelNotAvailableError, match=r"en_US-random-x_low\.onnx is not a Piper voice ONNX Runtime can load"):
        speak(ENGLISH, voice=str(copy))
