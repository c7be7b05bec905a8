"""The front ends: ``qwenvl ui`` (the Streamlit page) and ``qwenvl serve`` (the HTTP API)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .options import backend_options, model_options
from .voice import add_serve_options, add_ui_options, page_arguments


def add_ui_parser(commands) -> None:
    ui = commands.add_parser("ui", help="open the Streamlit assistant page")
    model_options(ui)
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ui.add_argument("--max-steps", type=int, default=8, help="most planner steps (default 8)")
    ui.add_argument("--lock-settings", action="store_true",
                    help="users of the page cannot change the model or the heavy settings (the default off this machine)")
    backend_options(ui)
    add_ui_options(ui)
    ui.set_defaults(run=run_ui)


def add_serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API, and the agent")
    model_options(serve)
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
    add_serve_options(serve)
    serve.set_defaults(run=run_serve)


def run_ui(args: argparse.Namespace) -> int:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("error: the page needs Streamlit: pip install 'qwenvl-agent[ui]'", file=sys.stderr)
        return 2
    app = Path(__file__).parent.parent / "ui" / "app.py"
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
        *page_arguments(args),
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


def run_serve(args: argparse.Namespace) -> int:
    try:
        from ..server.app import ServerSettings, run
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
        asr_model=args.asr_model, max_audio_seconds=args.max_audio_seconds,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it.", file=sys.stderr)
    if args.host in ("0.0.0.0", "::") and not settings.allowed_hosts:
        print("note: only requests whose Host is localhost, 127.0.0.1 or [::1] are answered; name the others clients "
              "use with --allowed-hosts (against DNS rebinding).", file=sys.stderr)
    print(f"Serving {args.model} on http://{args.host}:{args.port}/v1 (the model loads now; /health says when it is ready)", file=sys.stderr, flush=True)
    run(settings, host=args.host, port=args.port)
    return 0
