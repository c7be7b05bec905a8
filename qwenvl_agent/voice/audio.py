"""Audio in any form a caller has (a file, the bytes a browser or phone recorded, samples in memory) to the one
form speech recognition reads: mono float32 samples at 16 kHz. Every way it can fail is an ``AudioInputError``
that names the problem."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioInputError

SAMPLE_RATE = 16_000
DEFAULT_MAX_SECONDS = 120.0
# Below this peak (about -60 dBFS) a recording holds nothing a recogniser could hear: a muted microphone.
SILENCE_PEAK = 1e-3

# A path, the file's bytes, or samples with their rate: (array, rate), the array 1-D (mono) or 2-D
# (samples, channels), float in [-1, 1] or int16/int32 PCM.
Audio = Union[str, os.PathLike, bytes, bytearray, memoryview, "tuple[np.ndarray, int]"]


def load_audio(audio: Audio, *, max_seconds: float | None = DEFAULT_MAX_SECONDS, name: str | None = None) -> np.ndarray:
    """``audio`` as mono float32 samples at 16 kHz, checked: not empty, not silent, at most ``max_seconds`` long
    (None: no bound). ``name`` is how errors call it (default: the path, or "the audio")."""
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        label = name or f"the file {path}"
        if not path.is_file():
            raise AudioInputError(f"No audio file at {path}.")
        samples = _decode(path, label, max_seconds)
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        label = name or "the audio"
        if not len(audio):
            raise AudioInputError(f"{_capital(label)} is empty (0 bytes).")
        samples = _decode(io.BytesIO(bytes(audio)), label, max_seconds)
    elif isinstance(audio, tuple) and len(audio) == 2:
        label = name or "the audio"
        samples = _from_array(audio[0], audio[1], label)
    elif isinstance(audio, np.ndarray):
        raise AudioInputError("Samples need their rate: pass (array, sample_rate), e.g. (samples, 16000).")
    else:
        raise AudioInputError(
            f"Audio must be a file path, the file's bytes, or (samples, sample_rate); got {type(audio).__name__}."
        )
    check_samples(samples, label, max_seconds)
    return samples


def check_samples(samples: np.ndarray, label: str, max_seconds: float | None) -> None:
    if samples.size == 0:
        raise AudioInputError(f"{_capital(label)} holds no sound (0 samples).")
    seconds = samples.size / SAMPLE_RATE
    if max_seconds is not None and seconds > max_seconds:
        # Decoding stopped just past the limit, so the length is a lower bound.
        raise AudioInputError(f"{_capital(label)} is longer than the {max_seconds:g}-second limit.")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioInputError(f"{_capital(label)} is silent ({seconds:.1f} s without sound): is the microphone muted?")


def _decode(source, label: str, max_seconds: float | None) -> np.ndarray:
    """Decode with FFmpeg's libraries (PyAV): wav, mp3, ogg/opus, webm, m4a and whatever else FFmpeg reads. Stops
    as soon as the audio is longer than ``max_seconds``, so an hour-long file is not decoded to be refused."""
    import av

    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE) + 1
    pieces: list[np.ndarray] = []
    total = 0
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.audio:
                raise AudioInputError(f"{_capital(label)} has no sound track (it is not an audio file).")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for piece in _resampled(resampler, frame):
                    pieces.append(piece)
                    total += piece.size
                if limit is not None and total > limit:
                    break
            else:
                pieces.extend(_resampled(resampler, None))
    except AudioInputError:
        raise
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise AudioInputError(f"{_capital(label)} could not be read as audio ({_reason(exc)}).") from exc
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _resampled(resampler, frame) -> list[np.ndarray]:
    return [out.to_ndarray().reshape(-1).astype(np.float32, copy=False) for out in resampler.resample(frame)]


def _from_array(array, rate, label: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise AudioInputError(f"Samples must be a numpy array; got {type(array).__name__}.")
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 1000 <= int(rate) <= 384_000:
        raise AudioInputError(f"The sample rate must be a whole number of Hz between 1000 and 384000; got {rate!r}.")
    if array.ndim == 2:
        array = array.mean(axis=1) if array.dtype.kind == "f" else array.astype(np.float64).mean(axis=1).astype(array.dtype)
    elif array.ndim != 1:
        raise AudioInputError(f"Samples must be 1-D (mono) or 2-D (samples, channels); got {array.ndim} dimensions.")
    if array.dtype.kind == "i":
        samples = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    elif array.dtype.kind == "f":
        samples = array.astype(np.float32)
    else:
        raise AudioInputError(f"Samples must be float or integer PCM; got {array.dtype}.")
    if samples.size and not np.all(np.isfinite(samples)):
        raise AudioInputError(f"{_capital(label)} holds NaN or infinite samples.")
    return _resample(samples, int(rate))


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """To 16 kHz with FFmpeg's resampler (the same as for files, so a file and its samples give the same input)."""
    if rate == SAMPLE_RATE or samples.size == 0:
        return samples
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces = _resampled(resampler, frame) + _resampled(resampler, None)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.strip()[:200]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
