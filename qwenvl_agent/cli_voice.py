"""Voice for ``qwenvl ask``, ``qwenvl ui``, ``qwenvl serve`` and ``qwenvl bench``: ``--audio question.wav`` (the question spoken, transcribed and
then asked), ``--speak answer.wav`` (the answer written as speech), and the server's speech options."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_ask_options(ask: argparse.ArgumentParser) -> None:
    from .voice.audio import DEFAULT_MAX_SECONDS

    ask.add_argument("--audio", metavar="AUDIO", help="the question spoken, in an audio file (wav, mp3, ogg, webm, m4a, …), "
                                                      "instead of -q")
    ask.add_argument("--speak", metavar="WAV", help="also write the answer as speech into this WAV file")
    ask.add_argument("--language", help="the spoken question's language, e.g. en or zh (default: detected)")
    _asr_model_option(ask)
    ask.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="longest question recording accepted")


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    from .voice.audio import DEFAULT_MAX_SECONDS

    _asr_model_option(serve)
    serve.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                       help=f"longest audio a request may send (default {DEFAULT_MAX_SECONDS:g})")


def add_ui_options(ui: argparse.ArgumentParser) -> None:
    add_serve_options(ui)


def add_bench_options(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--no-voice", action="store_true", help="skip the voice section (transcribing, speaking)")
    bench.add_argument("--asr-model", help="the speech recognition model to measure (default: the default one; a "
                                           "random-weight one of its size when it cannot be had)")


def page_arguments(args: argparse.Namespace) -> list[str]:
    """The page's speech options, for after ``--`` of ``streamlit run app.py``."""
    return ["--asr-model", args.asr_model, "--max-audio-seconds", str(args.max_audio_seconds)]


def _asr_model_option(parser: argparse.ArgumentParser) -> None:
    from .voice.recognize import DEFAULT_ASR_MODEL

    parser.add_argument("--asr-model", default=os.environ.get("QWENVL_ASR_MODEL", DEFAULT_ASR_MODEL),
                        help=f"speech recognition (faster-whisper): hub id or local folder (default {DEFAULT_ASR_MODEL})")


def question_of(args: argparse.Namespace) -> str:
    """The question ``ask`` was given: ``-q``, or what is said in ``--audio`` (shown on standard error, so the user sees
    what was heard). Raises ``ValueError`` (also ``AudioInputError``) or ``QwenVLError`` with a message for the user."""
    if args.audio is None:
        return args.question
    from .voice import transcribe

    _status(f"Transcribing {args.audio} …")
    transcript = transcribe(Path(args.audio), args.language, model=args.asr_model, max_seconds=args.max_audio_seconds)
    if not transcript.text.strip():
        raise ValueError(f"No words were heard in {args.audio}.")
    _status(f"Heard ({transcript.language}): {transcript.text}")
    return transcript.text


def speak_answer(path: str, answer: str) -> int:
    """Write ``answer`` as speech into ``path``; 0, or 1 with the reason on standard error."""
    from .vlm.errors import QwenVLError
    from .voice import synthesize

    try:
        speech = synthesize(answer)
        Path(path).write_bytes(speech.wav)
    except (QwenVLError, ValueError, OSError) as exc:
        print(f"error: the answer could not be spoken into {path}: {exc}", file=sys.stderr)
        return 1
    _status(f"{path}: the answer spoken, {speech.seconds:.1f} s, voice {speech.voice.name} ({speech.voice.engine})")
    return 0


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
