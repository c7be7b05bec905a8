"""Speech to text: Whisper through faster-whisper (CTranslate2, int8 on the CPU), loaded once per process.

Runs beside the vision model, never under its generation gate: a recogniser has its own lock, so two
transcriptions take turns with each other, not with answers being written."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..vlm.errors import EngineError, ModelNotAvailableError
from .audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, Audio, load_audio
from .hub import looks_like_hub_id, snapshot

DEFAULT_ASR_MODEL = "Systran/faster-whisper-base"
_MODEL_FILES = ["config.json", "model.bin", "tokenizer.json", "vocabulary.*", "preprocessor_config.json"]
# Whisper writes about 3 tokens a second of English and up to 8 of fast Chinese; a 30-second window that
# asks for more is a hallucination loop, which on a CPU costs seconds. The bound is per window.
_TOKENS_PER_SECOND = 16
_MIN_TOKENS = 32


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What was said (``text``), in which ``language`` (ISO 639-1, given or detected), its timed ``segments``
    and the audio's length in ``seconds``."""

    text: str
    language: str
    segments: tuple[Segment, ...]
    seconds: float


class Recognizer:
    """A loaded faster-whisper model. Use ``load_recognizer`` to share one per process."""

    def __init__(self, model, name: str, path: Path):
        self.model, self.name, self.path = model, name, path
        self._lock = threading.Lock()

    @property
    def languages(self) -> list[str]:
        return list(self.model.supported_languages)

    def transcribe(self, samples: np.ndarray, language: str | None = None, *, decode_tokens: int | None = None) -> Transcript:
        """``samples``: mono float32 at 16 kHz (see ``load_audio``). ``decode_tokens``: decode exactly this many
        tokens per window, in one pass with no temperature fallback (the benchmark's random weights write noise,
        which would run to the budget and re-decode at every fallback temperature; a real model reading 10 s of
        speech writes about 40 tokens once)."""
        code = self.language_code(language)
        seconds = samples.size / SAMPLE_RATE
        window = min(seconds, 30.0)
        options = {"max_new_tokens": int(_MIN_TOKENS + _TOKENS_PER_SECOND * window)}
        if decode_tokens is not None:
            options = {"max_new_tokens": decode_tokens, "temperature": 0.0, "without_timestamps": True}
        with self._lock:
            pieces, info = self.model.transcribe(
                samples, language=code, beam_size=1, condition_on_previous_text=False, **options
            )
            segments = tuple(
                Segment(round(min(s.start, seconds), 2), round(min(s.end, seconds), 2), s.text.strip()) for s in pieces
            )
        text = _join([s.text for s in segments], info.language)
        return Transcript(text, info.language, segments, round(seconds, 3))

    def language_code(self, language: str | None) -> str | None:
        """"zh-CN", "ZH", "zh_Hant" → "zh"; None stays None (detect). A language Whisper lacks is a ``ValueError``."""
        if language is None or not str(language).strip():
            return None
        code = str(language).strip().lower().replace("_", "-").split("-")[0]
        if code not in self.languages:
            raise ValueError(f"Unknown language {language!r} for speech recognition: use a code like en, zh, de, fr, ja.")
        return code


def _join(texts: list[str], language: str) -> str:
    """Segments joined as text: with spaces, but not between Chinese, Japanese or Cantonese segments."""
    separator = "" if language in ("zh", "ja", "yue") else " "
    return separator.join(t for t in texts if t).strip()


_recognizers: dict[tuple, Recognizer] = {}
_registry_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}


def load_recognizer(model: str | Path = DEFAULT_ASR_MODEL, *, compute_type: str = "int8", threads: int = 0) -> Recognizer:
    """The recogniser for ``model`` (a hub id like ``Systran/faster-whisper-small`` or a local folder holding a
    faster-whisper model), loaded on first use and shared afterwards. ``threads``: 0 lets CTranslate2 choose."""
    ref = str(model)
    path = Path(ref).expanduser()
    key = (str(path.resolve()) if path.is_dir() else ref, compute_type, threads)
    with _registry_lock:
        if key in _recognizers:
            return _recognizers[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # two first callers must not load the same model twice
        if key not in _recognizers:
            folder = resolve_asr_model(ref)
            recognizer = Recognizer(_load(folder, compute_type, threads), ref, folder)
            with _registry_lock:
                _recognizers[key] = recognizer
    return _recognizers[key]


def resolve_asr_model(model: str) -> Path:
    """The folder of a faster-whisper model: ``model`` itself, or the hub cache (downloading it once)."""
    path = Path(model).expanduser()
    how_local = (
        "pass the path of a local folder that holds a faster-whisper (CTranslate2) model: "
        "transcribe(audio, model='/path/to/folder') or `qwenvl transcribe AUDIO --model /path/to/folder`"
    )
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelNotAvailableError(
                f"{path} has no model.bin: it is not a faster-whisper model. Convert a Whisper checkpoint with "
                "`ct2-transformers-converter --model openai/whisper-base --output_dir FOLDER --copy_files tokenizer.json "
                "preprocessor_config.json --quantization int8`, or give a hub id like " + DEFAULT_ASR_MODEL + "."
            )
        return path
    if not looks_like_hub_id(model):
        raise ModelNotAvailableError(f"No speech recognition model folder at {path}. Give an existing folder or a hub id like {DEFAULT_ASR_MODEL}.")
    return snapshot(model, _MODEL_FILES, "speech recognition model", how_local)


def _load(folder: Path, compute_type: str, threads: int):
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise EngineError("Speech recognition needs faster-whisper: pip install 'qwenvl-agent[voice]'.") from exc
    try:
        return WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads)
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError(f"The speech recognition model in {folder} could not be loaded: {exc}") from exc


def transcribe(
    audio: Audio,
    language: str | None = None,
    *,
    model: str | Path = DEFAULT_ASR_MODEL,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> Transcript:
    """What is said in ``audio``: a path, the bytes of a file (wav, mp3, ogg/opus, webm, m4a, …) or
    ``(samples, sample_rate)``. ``language``: a code like "en" or "zh" (also "zh-CN"), None to detect it.
    ``model``: a hub id or a local folder of a faster-whisper model, loaded once per process.
    Bad audio (empty, silent, corrupt, not audio, longer than ``max_seconds``) is an ``AudioInputError``."""
    recognizer = load_recognizer(model)
    code = recognizer.language_code(language)  # a wrong code fails before the audio is decoded
    return recognizer.transcribe(load_audio(audio, max_seconds=max_seconds), code)
