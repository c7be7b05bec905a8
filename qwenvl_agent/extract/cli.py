"""``qwenvl extract FILES_OR_FOLDERS... --fields "..." | --schema schema.json --output results.jsonl|.csv``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Options = Callable[[argparse.ArgumentParser], None]


def add_command(commands, model_options: Options, backend_options: Options, chat_model: Callable[[argparse.Namespace], Any]) -> None:
    """Register ``extract`` with the model and backend options the other commands take."""
    parser = commands.add_parser("extract", help="extract fields from many documents into a JSONL or CSV table")
    parser.add_argument("files", nargs="+", help="images and PDFs, or folders of them (searched in order of their paths)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--fields", help='the fields, e.g. "invoice_number, total:number, date:date" '
                                       "(types: string, number, integer, boolean, date; string by default)")
    what.add_argument("--schema", help="a JSON schema file of an object whose properties are the fields")
    parser.add_argument("-o", "--output", required=True, help="results.jsonl (a row per document) or results.csv; "
                                                              "documents already in it are skipped")
    parser.add_argument("--concurrency", type=int, default=1, help="documents read and asked at once (default 1; "
                                                                    "more helps a remote server)")
    parser.add_argument("--keep-unfound", action="store_true",
                        help="keep values the document's text does not contain (default: null, listed as dropped)")
    parser.add_argument("--max-pages", type=int, default=50, help="a longer PDF is an error in its row (default 50)")
    model_options(parser)
    backend_options(parser)
    parser.set_defaults(run=lambda args: run(args, chat_model))


def run(args: argparse.Namespace, chat_model: Callable[[argparse.Namespace], Any]) -> int:
    from ..vlm import ChatQwenVL, QwenVLError
    from . import DocumentInputError, Extractor, OutputError, ResultWriter, SchemaError, done_documents, expand_inputs, json_schema
    from .output import output_format

    output = Path(args.output)
    try:
        schema = json_schema(args.fields if args.fields is not None else _schema_file(args.schema))
        output_format(output)
        files = expand_inputs(args.files)
        if args.concurrency < 1 or args.max_pages < 1:
            raise ValueError("--concurrency and --max-pages must be at least 1")
        model = chat_model(args)
        extractor = Extractor(schema, model, concurrency=args.concurrency, keep_unfound=args.keep_unfound,
                              max_pages=args.max_pages)
        done = done_documents(output, extractor.fields)
    except (SchemaError, DocumentInputError, OutputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    todo = len({os.path.normpath(f) for f in files} - {os.path.normpath(d) for d in done})
    if done:
        print(f"{output} has {len(done)} documents already; {todo} to do.", file=sys.stderr, flush=True)
    if not todo:
        return 0
    if isinstance(model, ChatQwenVL):
        try:
            print(f"Loading {args.model} …", file=sys.stderr, flush=True)
            _ = model.runtime  # a model that cannot load is one error, not one per document
        except QwenVLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    failed = 0
    with ResultWriter(output, extractor.fields) as writer, _progress(todo) as bar:
        started = time.monotonic()
        for result in extractor.iter(files, skip=done):
            writer.write(result)
            failed += result.error is not None
            if result.error:
                bar.write(f"{result.document}: {result.error}", file=sys.stderr)
            bar.update(1)
            bar.set_postfix_str(f"{bar.n / max(time.monotonic() - started, 1e-9) * 60:.1f} docs/min"
                                + (f", {failed} failed" if failed else ""))
    print(f"{todo - failed} of {todo} documents extracted into {output}" + (f"; {failed} failed (see their rows)" if failed else ""),
          file=sys.stderr)
    return 1 if failed == todo else 0


def _schema_file(path: str) -> Any:
    from . import SchemaError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"--schema {path}: cannot read it ({exc.strerror or exc}).") from exc
    except ValueError as exc:
        raise SchemaError(f"--schema {path} is not JSON: {exc}") from exc


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc="extract", file=sys.stderr, dynamic_ncols=True)
