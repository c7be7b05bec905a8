"""``qwenvl transcribe`` (speech to text) and ``qwenvl speak`` (text to a WAV file); the speech options of the
other commands: ``ask --audio question.wav`` (the question spoken, transcribed and then asked), ``ask --speak
answer.wav`` (the answer written as speech), ``ui``'s, ``serve``'s and ``bench``'s recognition model and audio bound."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .options import status


def add_parsers(commands) -> None:
    from ..voice.audio import DEFAULT_MAX_SECONDS
    from ..voice.recognize import DEFAULT_ASR_MODEL

    transcribe = commands.add_parser("transcribe", help="print what is said in an audio file (wav, mp3, ogg, webm, m4a, …)")
    transcribe.add_argument("audio", help="the audio file")
    transcribe.add_argument("--language", help="its language, e.g. en or zh (default: detected)")
    transcribe.add_argument("--model", default=os.environ.get("QWENVL_ASR_MODEL", DEFAULT_ASR_MODEL),
                            help=f"faster-whisper model: hub id or local folder (default {DEFAULT_ASR_MODEL})")
    transcribe.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="longest audio accepted")
    transcribe.add_argument("--json", action="store_true", help="print text, language, segments and seconds as JSON")
    transcribe.set_defaults(run=run_transcribe)

    speak = commands.add_parser("speak", help="say a text into a WAV file")
    speak.add_argument("text", help="what to say")
    speak.add_argument("-o", "--output", required=True, help="the WAV file to write")
    speak.add_argument("--voice", help="a Piper voice (name or .onnx path) or an espeak-ng voice (default: by language)")
    speak.add_argument("--language", help="the text's language, e.g. en or zh (default: from the text)")
    speak.set_defaults(run=run_speak)


def run_transcribe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..vlm.errors import QwenVLError
    from ..voice import transcribe

    try:
        transcript = transcribe(args.audio, args.language, model=args.model, max_seconds=args.max_audio_seconds)
    except (QwenVLError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(transcript), ensure_ascii=False, indent=2) if args.json else transcript.text)
    return 0


def run_speak(args: argparse.Namespace) -> int:
    from ..vlm.errors import QwenVLError
    from ..voice import synthesize

    try:
        speech = synthesize(args.text, args.voice, args.language)
        Path(args.output).write_bytes(speech.wav)
    except (QwenVLError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status(f"{args.output}: {speech.seconds:.1f} s, voice {speech.voice.name} ({speech.voice.engine})")
    return 0


# ----- the speech options of ask, ui, serve and bench ------------------------------------------------------

def add_ask_options(ask: argparse.ArgumentParser) -> None:
    from ..voice.audio import DEFAULT_MAX_SECONDS

    ask.add_argument("--audio", metavar="AUDIO", help="the question spoken, in an audio file (wav, mp3, ogg, webm, m4a, …), "
                                                      "instead of -q")
    ask.add_argument("--speak", metavar="WAV", help="also write the answer as speech into this WAV file")
    ask.add_argument("--language", help="the spoken question's language, e.g. en or zh (default: detected)")
    _asr_model_option(ask)
    ask.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="longest question recording accepted")


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    from ..voice.audio import DEFAULT_MAX_SECONDS

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
    from ..voice.recognize import DEFAULT_ASR_MODEL

    parser.add_argument("--asr-model", default=os.environ.get("QWENVL_ASR_MODEL", DEFAULT_ASR_MODEL),
                        help=f"speech recognition (faster-whisper): hub id or local folder (default {DEFAULT_ASR_MODEL})")


def question_of(args: argparse.Namespace) -> str:
    """The question ``ask`` was given: ``-q``, or what is said in ``--audio`` (shown on standard error, so the user sees
    what was heard). Raises ``ValueError`` (also ``AudioInputError``) or ``QwenVLError`` with a message for the user."""
    if args.audio is None:
        return args.question
    from ..voice import transcribe

    status(f"Transcribing {args.audio} …")
    transcript = transcribe(Path(args.audio), args.language, model=args.asr_model, max_seconds=args.max_audio_seconds)
    if not transcript.text.strip():
        raise ValueError(f"No words were heard in {args.audio}.")
    status(f"Heard ({transcript.language}): {transcript.text}")
    return transcript.text


def speak_answer(path: str, answer: str) -> int:
    """Write ``answer`` as speech into ``path``; 0, or 1 with the reason on standard error."""
    from ..vlm.errors import QwenVLError
    from ..voice import synthesize

    try:
        speech = synthesize(answer)
        Path(path).write_bytes(speech.wav)
    except (QwenVLError, ValueError, OSError) as exc:
        print(f"error: the answer could not be spoken into {path}: {exc}", file=sys.stderr)
        return 1
    status(f"{path}: the answer spoken, {speech.seconds:.1f} s, voice {speech.voice.name} ({speech.voice.engine})")
    return 0
