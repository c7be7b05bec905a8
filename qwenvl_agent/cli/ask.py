"""``qwenvl ask``: the agent's answer to a question about files, its steps printed as they happen."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..samples import SAMPLES
from .options import backend_options, chat_model, model_options, status
from .voice import add_ask_options, question_of, speak_answer


def add_parser(commands) -> None:
    ask = commands.add_parser("ask", help="answer a question about images and PDFs")
    ask.add_argument("files", nargs="*", help="images (png, jpg, webp, …) or PDFs")
    ask.add_argument("--sample", action="append", default=[], choices=SAMPLES, metavar="NAME",
                     help=f"add a sample document drawn on the spot, after the files (may repeat): {', '.join(SAMPLES)}")
    ask.add_argument("-q", "--question", help="what you want to know (or speak it: --audio FILE)")
    model_options(ask)
    ask.add_argument("--max-steps", type=int, default=8, help="most planner steps (default 8)")
    ask.add_argument("--json", action="store_true", help="print the result as JSON instead of the steps")
    backend_options(ask)
    add_ask_options(ask)
    ask.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..agent import Answer, DocumentAssistant
    from ..agent.api import new_thread_id
    from ..samples import sample
    from ..vlm import ChatQwenVL, QwenVLError

    if not args.files and not args.sample:
        print("error: name the files to ask about, or try a sample: --sample invoice", file=sys.stderr)
        return 2
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if (args.question is None) == (args.audio is None):
        print("error: give the question as text (-q) or spoken (--audio FILE), one of them", file=sys.stderr)
        return 2
    try:
        model = chat_model(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assistant = DocumentAssistant(model, max_steps=args.max_steps, ocr_engine=args.ocr_engine)
    thread_id = new_thread_id()
    try:
        for path in args.files:
            status(f"Adding {path}")
            assistant.add_images([Path(path)], thread_id, progress=_page_progress(path))
        for name in args.sample:
            label, content = sample(name)
            status(f"Adding the sample {label}")
            assistant.store(thread_id).add(content, name=label, progress=_page_progress(label))
        question = question_of(args)
        if isinstance(model, ChatQwenVL):
            status(f"Loading {args.model} …")
            _ = model.runtime  # load before the run, so a missing model is reported as such
    except (QwenVLError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assistant.store(thread_id).index.on_progress(_index_progress)
    printer = _JsonCollector() if args.json else _StepPrinter()
    answer = None
    for event in assistant.stream(question, thread_id=thread_id):
        printer.show(event)
        answer = event.text if isinstance(event, Answer) else answer
    code = printer.finish(assistant.store(thread_id))
    if args.speak and answer:
        code = speak_answer(args.speak, answer) or code
    return code


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
        from ..agent import Answer, AnswerToken, Error, StepStarted, ToolCall, ToolResult

        if isinstance(event, AnswerToken):
            print(event.text if self.writing else f"  {event.text.lstrip()}", end="", file=sys.stderr, flush=True)
            self.writing = True
            return
        if self.writing:
            print(file=sys.stderr, flush=True)
            self.writing = False
        if isinstance(event, StepStarted):
            status(f"[step {event.step}] thinking …")
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
        from ..agent import Answer, Error

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
