"""Options several commands share (the model, the backend), the chat model they name, and status lines."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..tools.ocr import DEFAULT_OCR_ENGINE, OCR_ENGINES
from ..vlm.openvino_export import WEIGHTS
from ..vlm.runtime import DEFAULT_MODEL, DTYPES, ENGINES


def backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local", choices=("local", "openai"),
                        help="local: this machine; openai: an OpenAI-compatible server (vLLM, llama.cpp, Ollama, qwenvl serve)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="the server for --backend openai, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", help="its key (or $OPENAI_API_KEY)")


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=os.environ.get("QWENVL_MODEL", DEFAULT_MODEL), help="hub id or local folder")
    parser.add_argument("--engine", default="auto", choices=ENGINES, help="auto: OpenVINO where installed, else torch")
    parser.add_argument("--weights", default="int8", choices=WEIGHTS, help="OpenVINO weights: int8 (quality) or int4 (speed)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument(
        "--ocr-engine", default=DEFAULT_OCR_ENGINE, choices=OCR_ENGINES,
        help="how ocr_image reads: rapidocr (fast, the default), vlm (the model reads the page), hybrid",
    )
    parser.add_argument("--max-image-tokens", type=int, default=None, help="visual tokens per image at most")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="longest planner reply in tokens")


def chat_model(args: argparse.Namespace):
    """The chat model the options name: ChatQwenVL here, or ChatOpenAI at --base-url for --backend openai."""
    from ..agent.backends import chat_model

    if args.backend != "local":
        return chat_model(args.backend, model=args.model, base_url=args.base_url, api_key=args.api_key,
                          max_tokens=args.max_new_tokens)
    local: dict[str, Any] = {"engine": args.engine, "weights": args.weights, "dtype": args.dtype}
    if args.max_image_tokens:
        local["max_image_tokens"] = args.max_image_tokens
    if args.max_new_tokens:
        local["max_tokens"] = args.max_new_tokens
    return chat_model("local", model=args.model, **local)


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
