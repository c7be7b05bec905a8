"""Speech for the voice tests: real speech made with espeak-ng, a random Whisper of the real architecture, and
PocketSphinx's US English model (inside its wheel) to check what a recording or an answer actually says."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

QUESTION = "The total amount is forty two dollars"


def espeak(path: Path, text: str = QUESTION, voice: str = "en-us") -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


def random_whisper(folder: Path) -> str:
    pytest.importorskip("faster_whisper", reason="pip install '.[voice]'")
    from qwenvl_agent.voice.testing import make_random_whisper

    return str(make_random_whisper(folder))


def heard(audio) -> str:
    """What PocketSphinx hears in ``audio`` (anything ``load_audio`` takes)."""
    from qwenvl_agent.voice import load_audio

    return _pocketsphinx(load_audio(audio, max_seconds=None))


def pocketsphinx_transcribe(audio, language=None, *, model=None, max_seconds=None):
    """``transcribe`` with PocketSphinx's English model in place of Whisper: the real decoding and checks of the
    audio, then words a test can check (a random Whisper's are noise)."""
    from qwenvl_agent.voice import SAMPLE_RATE, Transcript, load_audio

    samples = load_audio(audio, max_seconds=max_seconds)
    return Transcript(_pocketsphinx(samples), "en", (), round(samples.size / SAMPLE_RATE, 3))


def _pocketsphinx(samples: np.ndarray) -> str:
    pocketsphinx = pytest.importorskip("pocketsphinx", reason="pip install '.[test]'")
    from qwenvl_agent.voice import SAMPLE_RATE

    decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE)
    decoder.start_utt()
    decoder.process_raw((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


def wav_seconds(data: bytes) -> float:
    """The length of a WAV file's sound; fails if ``data`` is not a WAV file."""
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getnframes() / reader.getframerate()
