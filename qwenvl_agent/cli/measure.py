"""``qwenvl download`` (the weights ahead of time), ``qwenvl eval`` (answer quality) and ``qwenvl bench``
(the engines' speed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..vlm.openvino_export import WEIGHTS
from ..vlm.runtime import DEFAULT_MODEL
from .options import backend_options, chat_model, model_options, status
from .voice import add_bench_options


def add_download_parser(commands) -> None:
    download = commands.add_parser("download", help="download the weights (and export them for OpenVINO) ahead of time")
    download.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    download.add_argument("--revision")
    download.add_argument("--engine", default="torch", choices=("torch", "openvino"), help="openvino: also export the IR")
    download.add_argument("--weights", default="int8", choices=WEIGHTS, help="OpenVINO weights (default int8)")
    download.set_defaults(run=run_download)


def add_eval_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="measure answer quality and speed on the generated evaluation set")
    evaluate.add_argument("--set", dest="set_name", default="quick", choices=("quick", "full"), help="quick: 24 items; full: about 470")
    model_options(evaluate)
    mode = evaluate.add_mutually_exclusive_group()
    mode.add_argument("--tools-only", dest="mode", action="store_const", const="tools", help="one tool or model call per item (default)")
    mode.add_argument("--agent", dest="mode", action="store_const", const="agent", help="questions go through the agent")
    backend_options(evaluate)
    evaluate.add_argument("--lang", nargs="+", default=["en", "zh"], choices=("en", "zh"), help="languages of the documents")
    evaluate.add_argument("--only", nargs="+", default=["ocr", "chart", "qa", "search"], choices=("ocr", "chart", "qa", "search"), help="tasks to run")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", help="folder for summary.md and items.jsonl (default eval-results/SET-TIME)")
    evaluate.set_defaults(run=run_eval, mode="tools")


def add_bench_parser(commands) -> None:
    bench = commands.add_parser("bench", help="measure the engines on a full-size random-weight model")
    bench.add_argument("--quick", action="store_true", help="fewer pipelines and calls: a few minutes")
    bench.add_argument("--pipelines", nargs="+", choices=("naive", "torch", "openvino-int8", "openvino-int4"))
    bench.add_argument("--no-agent", action="store_true", help="skip the realistic agent question")
    bench.add_argument("--output", default="docs/PERFORMANCE.md", help="where to write the report")
    add_bench_options(bench)
    bench.set_defaults(run=run_bench)


def run_download(args: argparse.Namespace) -> int:
    from ..vlm.errors import QwenVLError
    from ..vlm.openvino_export import ensure_exported, is_openvino_ir
    from ..vlm.runtime import resolve_model_path

    try:
        path = resolve_model_path(args.model, args.revision)
        if args.engine == "openvino" and not is_openvino_ir(path):
            path = ensure_exported(path, args.weights)
    except QwenVLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.model} is ready in {path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import time

    from ..eval.dataset import build_set
    from ..eval.runner import EvalSettings
    from ..eval.runner import run_eval as evaluate
    from ..samples.fonts import FontMissingError
    from ..vlm import QwenVLError

    try:
        items = build_set(args.set_name, seed=args.seed, langs=tuple(args.lang))
        # OCR by RapidOCR and page search need no vision model: none is loaded, and the report says so.
        model_free = set(args.only) <= {"ocr", "search"} and args.ocr_engine == "rapidocr" and args.mode == "tools"
        vlm = None if model_free else chat_model(args)
    except (FontMissingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = f"{args.backend} backend at {args.base_url}"
    if vlm is not None and args.backend == "local":
        try:  # load before the run: a model that cannot load is one clear error, not every item failing
            status(f"Loading {args.model} …")
            runtime = vlm.runtime
        except QwenVLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        where = f"engine {runtime.engine_name}, {runtime.weights}"
    what = "no vision model (RapidOCR and the page index only)" if model_free else f"model {args.model} ({where})"
    settings = EvalSettings(args.set_name, args.mode, args.ocr_engine, what, tuple(args.only))
    output = Path(args.output or f"eval-results/{args.set_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = evaluate(items, vlm, settings, output)
    print((output / "summary.md").read_text(encoding="utf-8"))
    print(f"Per-item results: {output / 'items.jsonl'}", file=sys.stderr)
    return 0 if results else 1


def run_bench(args: argparse.Namespace) -> int:
    from ..bench.main import run_bench as bench

    results = bench(quick=args.quick, pipelines=args.pipelines, agent=not args.no_agent, output=Path(args.output),
                    voice=not args.no_voice, asr_model=args.asr_model)
    return 1 if any("error" in value for value in results.values()) else 0
