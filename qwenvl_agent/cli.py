"""The ``qwenvl`` command: ``ask`` questions about files, ``ui`` opens the assistant page, ``download`` the
weights (and export them for OpenVINO), ``bench`` measures the engines."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from .samples import SAMPLES
from .tools.ocr import DEFAULT_OCR_ENGINE, OCR_ENGINES
from .vlm.openvino_export import WEIGHTS
from .vlm.runtime import DEFAULT_MODEL, DTYPES, ENGINES


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from .vlm import EngineFallbackWarning

    warnings.simplefilter("ignore", EngineFallbackWarning)  # its one-line log record says it already
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwenvl", description="Qwen3-VL on a CPU: document questions, tools, agent.")
    commands = parser.add_subparsers(dest="command", required=True)

    ask = commands.add_parser("ask", help="answer a question about images and PDFs")
    ask.add_argument("files", nargs="*", help="images (png, jpg, webp, …) or PDFs")
    ask.add_argument("--sample", action="append", default=[], choices=SAMPLES, metavar="NAME",
                     help=f"add a sample document drawn on the spot, after the files (may repeat): {', '.join(SAMPLES)}")
    ask.add_argument("-q", "--question", required=True, help="what you want to know")
    _model_options(ask)
    ask.add_argument("--max-steps", type=int, default=8, help="most planner steps (default 8)")
    ask.add_argument("--json", action="store_true", help="print the result as JSON instead of the steps")
    _backend_options(ask)
    ask.set_defaults(run=_ask)

    ui = commands.add_parser("ui", help="open the Streamlit assistant page")
    _model_options(ui)
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ui.add_argument("--max-steps", type=int, default=8, help="most planner steps (default 8)")
    ui.add_argument("--lock-settings", action="store_true",
                    help="users of the page cannot change the model or the heavy settings (the default off this machine)")
    _backend_options(ui)
    ui.set_defaults(run=_ui)

    download = commands.add_parser("download", help="download the weights (and export them for OpenVINO) ahead of time")
    download.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    download.add_argument("--revision")
    download.add_argument("--engine", default="torch", choices=("torch", "openvino"), help="openvino: also export the IR")
    download.add_argument("--weights", default="int8", choices=WEIGHTS, help="OpenVINO weights (default int8)")
    download.set_defaults(run=_download)

    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API, and the agent")
    _model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("QWENVL_API_KEY"),
                       help="require 'Authorization: Bearer KEY' (or $QWENVL_API_KEY); several keys: comma-separated, "
                            "each with conversations of its own")
    serve.add_argument("--allowed-hosts", default="", metavar="HOSTS",
                       help="Host header names to answer besides localhost, 127.0.0.1, [::1] and --host: comma-separated, "
                            "'*' for any (against DNS rebinding; needed when serving on 0.0.0.0 or behind a proxy)")
    serve.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs (public addresses only)")
    serve.add_argument("--allow-local-files", metavar="DIR", help="let requests name image files inside DIR")
    serve.add_argument("--max-waiting", type=int, default=3, help="requests that may queue behind the running one (default 3)")
    serve.add_argument("--max-body-mb", type=float, default=25.0)
    serve.add_argument("--max-images", type=int, default=8, help="images or files per request")
    serve.add_argument("--max-image-pixels", type=int, default=40_000_000)
    serve.add_argument("--max-pdf-pages", type=int, default=20)
    serve.add_argument("--max-tokens", type=int, default=2048, help="largest max_tokens a request may ask for")
    serve.set_defaults(run=_serve)

    evaluate = commands.add_parser("eval", help="measure answer quality and speed on the generated evaluation set")
    evaluate.add_argument("--set", dest="set_name", default="quick", choices=("quick", "full"), help="quick: 24 items; full: about 470")
    _model_options(evaluate)
    mode = evaluate.add_mutually_exclusive_group()
    mode.add_argument("--tools-only", dest="mode", action="store_const", const="tools", help="one tool or model call per item (default)")
    mode.add_argument("--agent", dest="mode", action="store_const", const="agent", help="questions go through the agent")
    _backend_options(evaluate)
    evaluate.add_argument("--lang", nargs="+", default=["en", "zh"], choices=("en", "zh"), help="languages of the documents")
    evaluate.add_argument("--only", nargs="+", default=["ocr", "chart", "qa", "search"], choices=("ocr", "chart", "qa", "search"), help="tasks to run")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", help="folder for summary.md and items.jsonl (default eval-results/SET-TIME)")
    evaluate.set_defaults(run=_eval, mode="tools")

    bench = commands.add_parser("bench", help="measure the engines on a full-size random-weight model")
    bench.add_argument("--quick", action="store_true", help="fewer pipelines and calls: a few minutes")
    bench.add_argument("--pipelines", nargs="+", choices=("naive", "torch", "openvino-int8", "openvino-int4"))
    bench.add_argument("--no-agent", action="store_true", help="skip the realistic agent question")
    bench.add_argument("--output", default="docs/PERFORMANCE.md", help="where to write the report")
    bench.set_defaults(run=_bench)
    _voice_commands(commands)
    return parser


def _backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local", choices=("local", "openai"),
                        help="local: this machine; openai: an OpenAI-compatible server (vLLM, llama.cpp, Ollama, qwenvl serve)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="the server for --backend openai, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", help="its key (or $OPENAI_API_KEY)")


def _model_options(parser: argparse.ArgumentParser) -> None:
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


def _ask(args: argparse.Namespace) -> int:
    from .agent import DocumentAssistant
    from .agent.api import new_thread_id
    from .samples import sample
    from .vlm import ChatQwenVL, QwenVLError

    if not args.files and not args.sample:
        print("error: name the files to ask about, or try a sample: --sample invoice", file=sys.stderr)
        return 2
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        model = _chat_model(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assistant = DocumentAssistant(model, max_steps=args.max_steps, ocr_engine=args.ocr_engine)
    thread_id = new_thread_id()
    try:
        for path in args.files:
            _status(f"Adding {path}")
            assistant.add_images([Path(path)], thread_id, progress=_page_progress(path))
        for name in args.sample:
            label, content = sample(name)
            _status(f"Adding the sample {label}")
            assistant.store(thread_id).add(content, name=label, progress=_page_progress(label))
        if isinstance(model, ChatQwenVL):
            _status(f"Loading {args.model} …")
            _ = model.runtime  # load before the run, so a missing model is reported as such
    except (QwenVLError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assistant.store(thread_id).index.on_progress(_index_progress)
    printer = _JsonCollector() if args.json else _StepPrinter()
    for event in assistant.stream(args.question, thread_id=thread_id):
        printer.show(event)
    return printer.finish(assistant.store(thread_id))


def _chat_model(args: argparse.Namespace):
    """The chat model the options name: ChatQwenVL here, or ChatOpenAI at --base-url for --backend openai."""
    from .agent.backends import chat_model

    if args.backend != "local":
        return chat_model(args.backend, model=args.model, base_url=args.base_url, api_key=args.api_key,
                          max_tokens=args.max_new_tokens)
    local: dict[str, Any] = {"engine": args.engine, "weights": args.weights, "dtype": args.dtype}
    if args.max_image_tokens:
        local["max_image_tokens"] = args.max_image_tokens
    if args.max_new_tokens:
        local["max_tokens"] = args.max_new_tokens
    return chat_model("local", model=args.model, **local)


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _index_progress(done: int, total: int) -> None:
    """The pages' text being read for search, in the background while the agent works: whole lines, a few
    times over (the steps are printed meanwhile, so no line is rewritten in place)."""
    if done >= total or done % max(1, total // 4) == 0:
        print(f"  (text of pages and images read for search: {done} of {total})", file=sys.stderr, flush=True)


def _page_progress(path: str):
    def progress(done: int, total: int) -> None:
        print(f"\r  rendering {Path(path).name}: page {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return progress


class _StepPrinter:
    """Prints each step as it happens, then the answer. The planner's text is shown on stderr as it is written
    (the answer starts appearing at once); stdout gets the steps and the final answer."""

    def __init__(self) -> None:
        self.failed = False
        self.writing = False  # a line of the planner's text is open on stderr

    def show(self, event) -> None:
        from .agent import Answer, AnswerToken, Error, StepStarted, ToolCall, ToolResult

        if isinstance(event, AnswerToken):
            print(event.text if self.writing else f"  {event.text.lstrip()}", end="", file=sys.stderr, flush=True)
            self.writing = True
            return
        if self.writing:
            print(file=sys.stderr, flush=True)
            self.writing = False
        if isinstance(event, StepStarted):
            _status(f"[step {event.step}] thinking …")
        elif isinstance(event, ToolCall):
            print(f"[step {event.step}] {event.name}({json.dumps(event.args, ensure_ascii=False)})", flush=True)
        elif isinstance(event, ToolResult):
            mark = "error" if event.is_error else f"{event.seconds:.1f}s"
            print(f"  -> ({mark}) {_indent(event.output)}", flush=True)
        elif isinstance(event, Answer):
            print(f"\nAnswer: {event.text}", flush=True)
        elif isinstance(event, Error):
            self.failed = True
            print(f"error: {event.message}", file=sys.stderr, flush=True)

    def finish(self, store) -> int:
        return 1 if self.failed else 0


class _JsonCollector:
    """Collects the run and prints one JSON document at the end."""

    def __init__(self) -> None:
        self.answer = None
        self.error = None

    def show(self, event) -> None:
        from .agent import Answer, Error

        if isinstance(event, Answer):
            self.answer = event
        elif isinstance(event, Error):
            self.error = event.message

    def finish(self, store) -> int:
        from dataclasses import asdict

        document = {
            "answer": self.answer.text if self.answer else None,
            "steps": [asdict(step) for step in self.answer.steps] if self.answer else [],
            "stopped_early": bool(self.answer and self.answer.stopped_early),
            "images": {image_id: store.info(image_id).label for image_id in store.ids()},
            "error": self.error,
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 1 if self.error else 0


def _indent(text: str, limit: int = 2000) -> str:
    text = text if len(text) <= limit else text[:limit] + " …"
    return text.replace("\n", "\n     ")


def _ui(args: argparse.Namespace) -> int:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("error: the page needs Streamlit: pip install 'qwenvl-agent[ui]'", file=sys.stderr)
        return 2
    app = Path(__file__).parent / "ui" / "app.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(args.port),
        "--server.address", args.host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--",
        "--model", args.model,
        "--engine", args.engine,
        "--weights", args.weights,
        "--dtype", args.dtype,
        "--ocr-engine", args.ocr_engine,
        "--backend", args.backend,
        "--max-steps", str(args.max_steps),
    ]
    if args.base_url:
        command += ["--base-url", args.base_url]
    if args.lock_settings or args.host not in ("127.0.0.1", "localhost", "::1"):
        command += ["--lock-settings"]
    if args.max_image_tokens:
        command += ["--max-image-tokens", str(args.max_image_tokens)]
    if args.max_new_tokens:
        command += ["--max-new-tokens", str(args.max_new_tokens)]
    print(f"Opening the assistant at http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if args.api_key:  # the remote server's key travels in the environment, not on the command line
        env["OPENAI_API_KEY"] = args.api_key
    return subprocess.call(command, env=env)


def _download(args: argparse.Namespace) -> int:
    from .vlm.errors import QwenVLError
    from .vlm.openvino_export import ensure_exported, is_openvino_ir
    from .vlm.runtime import resolve_model_path

    try:
        path = resolve_model_path(args.model, args.revision)
        if args.engine == "openvino" and not is_openvino_ir(path):
            path = ensure_exported(path, args.weights)
    except QwenVLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.model} is ready in {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server.app import ServerSettings, run
    except ImportError:
        print("error: the server needs FastAPI and uvicorn: pip install 'qwenvl-agent[server]'", file=sys.stderr)
        return 2
    settings = ServerSettings(
        model=args.model, engine=args.engine, weights=args.weights, dtype=args.dtype, api_key=args.api_key,
        allow_remote_images=args.allow_remote_images, allow_local_files=args.allow_local_files or False,
        max_body_mb=args.max_body_mb, max_images=args.max_images, max_image_pixels=args.max_image_pixels,
        max_pdf_pages=args.max_pdf_pages, max_tokens=args.max_tokens, max_waiting=args.max_waiting,
        ocr_engine=args.ocr_engine, max_new_tokens=args.max_new_tokens, max_image_tokens=args.max_image_tokens,
        allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip()),
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it.", file=sys.stderr)
    if args.host in ("0.0.0.0", "::") and not settings.allowed_hosts:
        print("note: only requests whose Host is localhost, 127.0.0.1 or [::1] are answered; name the others clients "
              "use with --allowed-hosts (against DNS rebinding).", file=sys.stderr)
    print(f"Serving {args.model} on http://{args.host}:{args.port}/v1 (the model loads now; /health says when it is ready)", file=sys.stderr, flush=True)
    run(settings, host=args.host, port=args.port)
    return 0


def _eval(args: argparse.Namespace) -> int:
    import time

    from .eval.dataset import build_set
    from .samples.fonts import FontMissingError
    from .eval.runner import EvalSettings, run_eval
    from .vlm import QwenVLError

    try:
        items = build_set(args.set_name, seed=args.seed, langs=tuple(args.lang))
        # OCR by RapidOCR and page search need no vision model: none is loaded, and the report says so.
        model_free = set(args.only) <= {"ocr", "search"} and args.ocr_engine == "rapidocr" and args.mode == "tools"
        vlm = None if model_free else _chat_model(args)
    except (FontMissingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = f"{args.backend} backend at {args.base_url}"
    if vlm is not None and args.backend == "local":
        try:  # load before the run: a model that cannot load is one clear error, not every item failing
            _status(f"Loading {args.model} …")
            runtime = vlm.runtime
        except QwenVLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        where = f"engine {runtime.engine_name}, {runtime.dtype}"
    what = "no vision model (RapidOCR and the page index only)" if model_free else f"model {args.model} ({where})"
    settings = EvalSettings(args.set_name, args.mode, args.ocr_engine, what, tuple(args.only))
    output = Path(args.output or f"eval-results/{args.set_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = run_eval(items, vlm, settings, output)
    print((output / "summary.md").read_text(encoding="utf-8"))
    print(f"Per-item results: {output / 'items.jsonl'}", file=sys.stderr)
    return 0 if results else 1


def _bench(args: argparse.Namespace) -> int:
    from .bench.main import run_bench

    results = run_bench(quick=args.quick, pipelines=args.pipelines, agent=not args.no_agent, output=Path(args.output))
    return 1 if any("error" in value for value in results.values()) else 0


def _voice_commands(commands) -> None:
    from .voice.audio import DEFAULT_MAX_SECONDS
    from .voice.recognize import DEFAULT_ASR_MODEL

    transcribe = commands.add_parser("transcribe", help="print what is said in an audio file (wav, mp3, ogg, webm, m4a, …)")
    transcribe.add_argument("audio", help="the audio file")
    transcribe.add_argument("--language", help="its language, e.g. en or zh (default: detected)")
    transcribe.add_argument("--model", default=os.environ.get("QWENVL_ASR_MODEL", DEFAULT_ASR_MODEL),
                            help=f"faster-whisper model: hub id or local folder (default {DEFAULT_ASR_MODEL})")
    transcribe.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="longest audio accepted")
    transcribe.add_argument("--json", action="store_true", help="print text, language, segments and seconds as JSON")
    transcribe.set_defaults(run=_transcribe)

    speak = commands.add_parser("speak", help="say a text into a WAV file")
    speak.add_argument("text", help="what to say")
    speak.add_argument("-o", "--output", required=True, help="the WAV file to write")
    speak.add_argument("--voice", help="a Piper voice (name or .onnx path) or an espeak-ng voice (default: by language)")
    speak.add_argument("--language", help="the text's language, e.g. en or zh (default: from the text)")
    speak.set_defaults(run=_speak)


def _transcribe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .vlm.errors import QwenVLError
    from .voice import transcribe

    try:
        transcript = transcribe(args.audio, args.language, model=args.model, max_seconds=args.max_audio_seconds)
    except (QwenVLError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(transcript), ensure_ascii=False, indent=2) if args.json else transcript.text)
    return 0


def _speak(args: argparse.Namespace) -> int:
    from .vlm.errors import QwenVLError
    from .voice import synthesize

    try:
        speech = synthesize(args.text, args.voice, args.language)
        Path(args.output).write_bytes(speech.wav)
    except (QwenVLError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _status(f"{args.output}: {speech.seconds:.1f} s, voice {speech.voice.name} ({speech.voice.engine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
