"""The results file: JSONL (one row per document, as ``ExtractionResult.to_dict``) or CSV (a column per field,
its page and box, then the error). Rows are appended and flushed one by one, so a stopped run keeps what it
did, and a rerun reads the documents already there to skip them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .run import ExtractionResult

FORMATS = (".jsonl", ".csv")


class OutputError(ValueError):
    """An output file that cannot be used: an unknown format, or a CSV written for other fields."""


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise OutputError(f"--output {path}: name a .jsonl or a .csv file.")
    return suffix


def csv_columns(fields: list[str]) -> list[str]:
    columns = ["document"]
    for name in fields:
        columns += [name, f"{name}_page", f"{name}_box"]
    return columns + ["error"]


def csv_row(result: ExtractionResult, fields: list[str]) -> dict[str, object]:
    """A result as a CSV row: each value (empty for null), its page and box ("x1 y1 x2 y2"), then the error."""
    row: dict[str, object] = {"document": result.document}
    for name in fields:
        value, source = result.values.get(name), result.sources.get(name)
        row[name] = "" if value is None else (json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value)
        row[f"{name}_page"] = source.page if source else ""
        row[f"{name}_box"] = " ".join(f"{v:g}" for v in source.box) if source and source.box else ""
    row["error"] = result.error or ""
    return row


def csv_text(results: list[ExtractionResult], fields: list[str]) -> str:
    """Results as a whole CSV file (header first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, csv_columns(fields))
    writer.writeheader()
    writer.writerows(csv_row(result, fields) for result in results)
    return buffer.getvalue()


def done_documents(path: Path, fields: list[str]) -> list[str]:
    """The documents the output already has a row for (none if it does not exist yet)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    if output_format(path) == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != csv_columns(fields):
                raise OutputError(f"{path} holds other columns than these fields give ({', '.join(reader.fieldnames or [])}); "
                                  "write to another file, or extract the same fields.")
            return [row["document"] for row in reader]
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                documents.append(json.loads(line)["document"])
            except (ValueError, KeyError, TypeError):  # a line cut short when a run was stopped: done again
                continue
    return documents


class ResultWriter:
    """Appends results to ``path`` (a header first, for a new CSV)."""

    def __init__(self, path: Path, fields: list[str]):
        self.format = output_format(path)
        self.fields = fields
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        if self.format == ".jsonl" and not fresh and not path.read_bytes().endswith(b"\n"):
            with path.open("a", encoding="utf-8") as handle:  # a row cut short: the next row starts on its own line
                handle.write("\n")
        self._handle = path.open("a", newline="" if self.format == ".csv" else None, encoding="utf-8")
        self._csv = csv.DictWriter(self._handle, csv_columns(fields)) if self.format == ".csv" else None
        if self._csv is not None and fresh:
            self._csv.writeheader()

    def write(self, result: ExtractionResult) -> None:
        if self._csv is None:
            self._handle.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        else:
            self._csv.writerow(csv_row(result, self.fields))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
