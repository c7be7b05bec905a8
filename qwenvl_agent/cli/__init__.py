"""The ``qwenvl`` command: ``ask`` questions about files, ``ui`` opens the assistant page, ``serve`` the HTTP
API, ``download`` the weights (and export them for OpenVINO), ``eval`` and ``bench`` measure, ``transcribe``
and ``speak`` for voice. Each group of commands has a module of its own, with its options and its runs."""

from __future__ import annotations

import argparse
import sys
import warnings

from . import ask, measure, options, serve, voice


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from ..vlm import EngineFallbackWarning

    warnings.simplefilter("ignore", EngineFallbackWarning)  # its one-line log record says it already
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwenvl", description="Qwen3-VL on a CPU: document questions, tools, agent.")
    commands = parser.add_subparsers(dest="command", required=True)
    ask.add_parser(commands)
    serve.add_ui_parser(commands)
    measure.add_download_parser(commands)
    serve.add_serve_parser(commands)
    measure.add_eval_parser(commands)
    measure.add_bench_parser(commands)
    voice.add_parsers(commands)  # transcribe and speak
    from ..extract.cli import add_command as add_extract_command

    add_extract_command(commands, options.model_options, options.backend_options, options.chat_model)
    return parser
