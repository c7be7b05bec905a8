"""``qwenvl transcribe`` (speech to text) and ``qwenvl speak`` (text to a WAV file)."""

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
