"""Speech in and out, on the CPU and offline: ``transcribe`` (Whisper through faster-whisper) and ``speak``
(a Piper voice where one is on the machine, espeak-ng otherwise). Beside ``tools``; it depends on ``vlm``'s
error types only."""

from .audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, load_audio
from .errors import AudioInputError
from .recognize import DEFAULT_ASR_MODEL, Recognizer, Segment, Transcript, load_recognizer, transcribe
from .speak import Speech, Voice, choose_voice, speak, synthesize, text_language

__all__ = [
    "DEFAULT_ASR_MODEL",
    "DEFAULT_MAX_SECONDS",
    "SAMPLE_RATE",
    "AudioInputError",
    "Recognizer",
    "Segment",
    "Speech",
    "Transcript",
    "Voice",
    "choose_voice",
    "load_audio",
    "load_recognizer",
    "speak",
    "synthesize",
    "text_language",
    "transcribe",
]
