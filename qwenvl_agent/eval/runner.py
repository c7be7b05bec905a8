"""Run the evaluation: each item through the tools (or the agent), scored, timed, written down.

Writes ``items.jsonl`` (one line per item: question, truth, prediction, score, seconds, steps) and
``summary.md`` (scores and seconds per task, category and language) into the output folder.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage

from qwenvl_agent.tools import ImageStore, make_tools
from qwenvl_agent.tools.base import image_block

from .dataset import EvalItem
from .metrics import answer_metric, char_accuracy, chart_value_accuracy, exact_match, score_answer

QA_SUFFIX = " Answer briefly. If the image does not show it, say so."


@dataclass
class EvalSettings:
    set_name: str = "quick"
    mode: str = "tools"  # "tools": one tool or model call per item; "agent": questions go through the agent
    ocr_engine: str = "rapidocr"
    description: str = ""  # what ran: model, engine, backend
    tasks: tuple[str, ...] = ("ocr", "chart", "qa", "search")


@dataclass
class ItemResult:
    id: str
    category: str
    task: str
    lang: str
    question: str
    truth: Any
    prediction: str
    score: float
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    metric: str = ""  # what ``score`` measures
    exact_match: float | None = None  # text answers: the whole answer equal to the truth (normalised)


def run_eval(items: list[EvalItem], vlm: BaseChatModel, settings: EvalSettings, output: Path, progress: bool = True) -> list[ItemResult]:
    from tqdm.auto import tqdm

    output.mkdir(parents=True, exist_ok=True)
    chosen = [item for item in items if item.task in settings.tasks]
    results: list[ItemResult] = []
    documents = _Documents()
    with documents, open(output / "items.jsonl", "w", encoding="utf-8") as lines, tqdm(
        chosen, desc=f"qwenvl eval ({settings.set_name})", unit="item", disable=not progress
    ) as bar:
        for item in bar:
            result = _run_item(item, vlm, settings, documents)
            results.append(result)
            lines.write(json.dumps(result.__dict__, ensure_ascii=False, default=str) + "\n")
            lines.flush()
            bar.set_postfix(score=f"{statistics.fmean(r.score for r in results):.2f}")
    (output / "summary.md").write_text(summary(results, settings), encoding="utf-8")
    return results


def _run_item(item: EvalItem, vlm: BaseChatModel, settings: EvalSettings, documents: _Documents) -> ItemResult:
    started = time.perf_counter()
    prediction, steps, error, score = "", [], None, 0.0
    metric = {"ocr": "character accuracy", "chart": "values within 2 %", "search": "right page in the first three"}.get(
        item.task, answer_metric(item.answer_type))
    try:
        if item.task == "ocr":
            prediction, steps = _tool(item, vlm, settings, "ocr_image", {})
            score = char_accuracy(prediction, item.text)
        elif item.task == "chart":
            prediction, steps = _tool(item, vlm, settings, "read_chart", {})
            score = chart_value_accuracy(_chart_values(steps[-1].get("data")), item.values)
        elif item.task == "search":
            hits, steps = _search(item, documents)
            prediction = ", ".join(hits)
            score = 1.0 if item.answer in hits else 0.0
        elif settings.mode == "agent":
            prediction, steps = _agent(item, vlm, settings)
            score = score_answer(prediction, item.answer, item.answer_type)
        else:
            parts = [image_block(image, vlm) for image in item.images]
            reply = vlm.invoke([HumanMessage(content=parts + [{"type": "text", "text": item.question + QA_SUFFIX}])])
            prediction = reply.text.strip()
            score = score_answer(prediction, item.answer, item.answer_type)
    except Exception as exc:  # noqa: BLE001 - one failing item is scored 0 and recorded, the run goes on
        error = f"{type(exc).__name__}: {exc}"
    truth = item.text if item.task == "ocr" else (item.values if item.task == "chart" else item.answer)
    exact = exact_match(prediction, str(truth)) if item.task == "qa" and item.answer_type == "text" else None
    return ItemResult(item.id, item.category, item.task, item.lang, item.question, truth, prediction, score,
                      round(time.perf_counter() - started, 3), steps, error, metric, exact)


def _tool(item: EvalItem, vlm: BaseChatModel, settings: EvalSettings, name: str, args: dict[str, Any]):
    store = ImageStore(index_pages=False)  # no background OCR of the page competing with the timed call
    image_id = store.add(item.images[0])
    tool = next(t for t in make_tools(vlm, store, ocr_engine=settings.ocr_engine) if t.name == name)
    message = tool.invoke({"name": name, "args": {"image_id": image_id, **args}, "id": "eval", "type": "tool_call"})
    artifact = message.artifact if isinstance(message.artifact, dict) else {}
    step = {"tool": name, "seconds": artifact.get("seconds"), "is_error": message.status == "error", "data": artifact.get("data")}
    if message.status == "error":
        raise RuntimeError(message.text)
    return message.text, [step]


class _Documents:
    """The long documents of a run, each added and indexed once (one at a time in memory)."""

    def __init__(self):
        self.key: str | None = None
        self.store: ImageStore | None = None
        self.indexing = 0.0

    def get(self, pdf: bytes) -> tuple[ImageStore, float]:
        key = hashlib.sha256(pdf).hexdigest()
        if key != self.key:
            self.close()
            started = time.perf_counter()
            self.store = ImageStore(dpi=144, max_pages=50)
            self.store.add(pdf, name="document.pdf")
            self.store.index.wait()
            self.key, self.indexing = key, time.perf_counter() - started
        return self.store, self.indexing

    def close(self) -> None:
        if self.store is not None:
            self.store.index.close()
        self.key = self.store = None

    def __enter__(self) -> _Documents:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _search(item: EvalItem, documents: _Documents) -> tuple[list[str], list[dict[str, Any]]]:
    """The three pages ``search_document`` ranks first for the question."""
    store, indexing = documents.get(item.pdf)
    tool = next(t for t in make_tools(None, store) if t.name == "search_document")
    message = tool.invoke({"name": tool.name, "args": {"query": item.question, "k": 3}, "id": "eval", "type": "tool_call"})
    if message.status == "error":
        raise RuntimeError(message.text)
    hits = [hit["page_id"] for hit in message.artifact["data"]["hits"]]
    return hits, [{"tool": "search_document", "seconds": message.artifact["seconds"],
                   "indexing_seconds": round(indexing, 3), "hits": hits}]


def _chart_values(data: dict[str, Any] | None) -> dict[str, float]:
    chart = (data or {}).get("chart") or {}
    series = chart.get("series") or []
    if not series:
        return {}
    return {str(c): float(v) for c, v in zip(chart.get("categories") or [], series[0].get("values") or []) if v is not None}


def _agent(item: EvalItem, vlm: BaseChatModel, settings: EvalSettings):
    from qwenvl_agent.agent import DocumentAssistant

    assistant = DocumentAssistant(vlm, ocr_engine=settings.ocr_engine)
    result = assistant.ask(item.question, images=item.images)
    steps = [{"tool": s.tool, "args": s.args, "seconds": s.seconds, "is_error": s.is_error} for s in result.steps]
    return result.answer, steps


def summary(results: list[ItemResult], settings: EvalSettings) -> str:
    lines = [
        f"# qwenvl eval: {settings.set_name} set",
        "",
        f"What ran: {settings.description or 'not recorded'}; mode {settings.mode}; OCR engine {settings.ocr_engine}.",
        f"{len(results)} items, {sum(1 for r in results if r.error)} failed with an error (scored 0).",
        "",
        "| group | items | score | seconds per item (mean) | seconds (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    groups: dict[str, list[ItemResult]] = defaultdict(list)
    for result in results:
        groups[f"{result.task} (all)"].append(result)
        groups[result.category].append(result)
        if result.task == "ocr":
            groups[f"ocr, {result.lang}"].append(result)
    for name in sorted(groups, key=lambda g: (g.split("/")[0].split(",")[0].split(" ")[0], "(all)" not in g, g)):
        group = groups[name]
        lines.append(
            f"| {name} | {len(group)} | {statistics.fmean(r.score for r in group):.3f} | "
            f"{statistics.fmean(r.seconds for r in group):.2f} | {statistics.median(r.seconds for r in group):.2f} |"
        )
    lines += ["", "Scores: OCR, character accuracy; charts, share of values read within 2 %; questions, numbers "
              "within 1 %, text by ANLS, yes/no, and unanswerable questions by saying so; search, the right page "
              "among the first three.", ""]
    exact = [r.exact_match for r in results if r.exact_match is not None]
    if exact:
        lines += [f"Text answers ({len(exact)}): exact match {statistics.fmean(exact):.3f} (ANLS is their score above).", ""]
    for category in sorted({r.category for r in results if r.task == "search"}):
        seconds = {step["indexing_seconds"] for r in results if r.category == category for step in r.steps}
        if seconds:
            lines.append(f"Adding and indexing a 20-page PDF ({category}): {min(seconds):.1f} to {max(seconds):.1f} s.")
    lines.append("")
    lines += confidence_table(results)
    return "\n".join(lines)


CONFIDENCE_BUCKETS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.01)


def confidence_table(results: list[ItemResult]) -> list[str]:
    """For the OCR engine's lines: how often a line of each confidence was read exactly (found as written in
    the document's text). This is what the hybrid engine's threshold is chosen from."""
    from rapidfuzz import fuzz

    from .metrics import normalise_text

    counts = [[0, 0] for _ in CONFIDENCE_BUCKETS[:-1]]
    for result in results:
        if result.task != "ocr":
            continue
        truth = " ".join(normalise_text(str(result.truth)).split())
        for step in result.steps:
            for line in (step.get("data") or {}).get("lines") or []:
                bucket = next(i for i in range(len(counts)) if line["confidence"] < CONFIDENCE_BUCKETS[i + 1])
                counts[bucket][0] += 1
                counts[bucket][1] += fuzz.partial_ratio(" ".join(line["text"].split()), truth) == 100
    if not any(total for total, _ in counts):
        return []
    table = ["## OCR lines by confidence", "", "| confidence | lines | read exactly |", "| --- | --- | --- |"]
    for (low, high), (total, exact) in zip(zip(CONFIDENCE_BUCKETS, CONFIDENCE_BUCKETS[1:]), counts):
        if total:
            table.append(f"| {low:.2f} to {min(high, 1.0):.2f} | {total} | {exact / total:.3f} |")
    return table + [""]
