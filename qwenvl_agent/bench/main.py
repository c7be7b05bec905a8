"""``qwenvl bench``: the runtime's speed on a full-size Qwen3-VL-2B-shaped model, against the naive pipeline.

Builds (once) a random-weight checkpoint with the real model's shapes, exports it for OpenVINO, then
runs each pipeline in its own process on the same inputs and writes the figures and their ratios to the
naive pipeline into docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qwenvl_agent.vlm.openvino_export import ensure_exported, export_folder, openvino_available

from .checkpoint import random_checkpoint, tokenizer_kind
from .machine import machine_facts
from .report import render_report
from .voice import run_voice_bench

ALL_PIPELINES = ["naive", "torch", "openvino-int8", "openvino-int4"]
AGENT_PIPELINES = ["naive", "torch", "openvino-int4"]


def run_bench(
    *,
    quick: bool = False,
    pipelines: list[str] | None = None,
    agent: bool = True,
    output: Path = Path("docs/PERFORMANCE.md"),
    voice: bool = True,
    asr_model: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    machine = machine_facts()
    print(f"Machine: {machine['cpu']} · {machine['cores']} cores · flags {', '.join(machine['flags'])}", file=sys.stderr)
    chosen = pipelines or (["naive", "torch", "openvino-int4"] if quick else ALL_PIPELINES)
    if not openvino_available():
        skipped = [p for p in chosen if p.startswith("openvino")]
        if skipped:
            print(f"OpenVINO is not installed: skipping {', '.join(skipped)} (pip install 'qwenvl-agent[openvino]').", file=sys.stderr)
        chosen = [p for p in chosen if not p.startswith("openvino")]
    checkpoint = random_checkpoint()
    spec = {
        "checkpoint": str(checkpoint),
        "budgets": [256] if quick else [256, 1024],
        "new_tokens": 16 if quick else 24,
        "runs": 1 if quick else 3,
    }
    results: dict[str, Any] = {}
    for name in chosen:
        if name.startswith("openvino"):
            results[f"start:{name}"] = _first_start(checkpoint, name, spec)
        results[name] = _worker({**spec, "pipeline": name})
    if agent and not quick:
        for name in AGENT_PIPELINES:
            if name in chosen:
                results[f"agent:{name}"] = _worker({**spec, "pipeline": name, "agent": True})
        if "openvino-int4" in chosen:  # the product's default: RapidOCR reads the invoice, the model the chart
            results["agent:openvino-int4+rapidocr"] = _worker(
                {**spec, "pipeline": "openvino-int4", "agent": True, "ocr": "rapidocr"}
            )
        fastest = next((name for name in ("openvino-int4", "torch") if name in chosen), None)
        for variant in ("text", "scanned") if fastest else ():
            results[f"long:{variant}"] = _worker({**spec, "pipeline": fastest, "long": variant})
    if voice:
        print("Running voice …", file=sys.stderr, flush=True)
        results["voice"] = run_voice_bench(asr_model, runs=1 if quick else 3)
    tokenizer = tokenizer_kind()
    report = render_report(results, machine, spec, tokenizer, quick)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report, encoding="utf-8")
    (output.parent / "performance.json").write_text(json.dumps({"machine": machine, "spec": spec, "tokenizer": tokenizer, "results": results}, indent=1))
    print(f"Wrote {output} ({time.perf_counter() - started:.0f} s in all).", file=sys.stderr)
    return results


def _first_start(checkpoint: Path, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Export if needed, then start once with OpenVINO's compiled-model cache as it is (empty on a first
    start), so the measured process starts the way every later start does."""
    weights = name.split("-")[-1]
    exported = time.perf_counter()
    ensure_exported(checkpoint, weights)
    export_s = time.perf_counter() - exported
    compiled = export_folder(checkpoint, weights) / "compiled"
    cold = not compiled.is_dir() or not any(compiled.iterdir())
    result = _worker({**spec, "pipeline": name, "load_only": True})
    result.update(export_s=export_s, cold_compile=cold)
    return result


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker process; its progress goes to our stderr, its result comes back as JSON."""
    command = [sys.executable, "-m", "qwenvl_agent.bench.worker", json.dumps(spec)]
    what = ("agent " if spec.get("agent") else "") + spec["pipeline"] + (" (start)" if spec.get("load_only") else "")
    print(f"Running {what} …", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"  {what} failed (exit code {done.returncode}).", file=sys.stderr)
        return {"error": f"exit code {done.returncode}"}
    return json.loads(lines[-1][len("RESULT ") :])
