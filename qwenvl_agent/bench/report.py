"""docs/PERFORMANCE.md from the benchmark's results: figures, ratios to the naive pipeline, targets."""

from __future__ import annotations

import math
from typing import Any

NAMES = {
    "naive": "naive seed way (float32, 512 px, plain generate)",
    "torch": "torch engine (bfloat16 where the CPU has it)",
    "openvino-int8": "OpenVINO engine, int8 weights",
    "openvino-int4": "OpenVINO engine, int4 weights",
}
SHORT = {"naive": "naive", "torch": "torch", "openvino-int8": "OpenVINO int8", "openvino-int4": "OpenVINO int4"}


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{unit}"


def _ratio(naive: float | None, ours: float | None, higher_is_better: bool = False) -> float | None:
    if not naive or not ours or math.isnan(naive) or math.isnan(ours):
        return None
    return ours / naive if higher_is_better else naive / ours


def render_report(results: dict[str, Any], machine: dict, spec: dict, tokenizer: str, quick: bool) -> str:
    pipelines = [name for name in NAMES if name in results and "error" not in results[name]]
    lines = [
        "# Performance",
        "",
        "Written by `qwenvl bench`" + (" --quick" if quick else "") + f" on {machine['date']}. Machine: {machine['cpu']}, "
        f"{machine['cores']} cores, {machine['memory_gb']} GB; CPU flags that matter here: "
        f"{', '.join(machine['flags']) or 'none'}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
        + ".",
        "",
        "The model is a full-size Qwen3-VL-2B-shaped checkpoint with random weights (2.13 B parameters: the real "
        "model's compute) and " + ("Qwen's own tokenizer, so prompts have their real length in tokens." if tokenizer == "qwen"
                                   else "the tiny test tokenizer (Qwen's was not at hand), which makes prompts longer in tokens than they really are.")
        + " Each pipeline runs in its own process on the same inputs; replies are forced to exact lengths through "
        f"the real model. Time to first token includes preparing the image, the vision tower and the prompt. "
        f"Later-call figures are medians of {spec['runs']} calls.",
        "",
    ]
    lines += _single_image_table(results, pipelines, spec)
    lines += _ratio_table(results, pipelines)
    lines += _agent_section(results)
    return "\n".join(lines) + "\n"


def _single_image_table(results: dict[str, Any], pipelines: list[str], spec: dict) -> list[str]:
    lines = [
        f"## One image, one question ({spec['new_tokens']} new tokens)",
        "",
        "| pipeline | load | image tokens | first call: time to first token | later calls: time to first token | decode | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in pipelines:
        result = results[name]
        start = results.get(f"start:{name}", {})
        load = _num(result["load_s"], 0, " s")
        if start:
            load += f" (first start {_num(start.get('load_s'), 0, ' s')}" + (", compiling" if start.get("cold_compile") else "") + ")"
        for budget, figures in result["budgets"].items():
            tokens = figures["calls"][0]["image_tokens"]
            lines.append(
                f"| {NAMES[name]} | {load} | {tokens} | {_num(figures['first_ttft_s'], 2, ' s')} | "
                f"{_num(figures['ttft_s'], 2, ' s')} | {_num(figures['decode_tok_s'], 1, ' tok/s')} | "
                f"{_num(result['peak_rss_gb'], 1, ' GB')} |"
            )
            load = ""
    lines.append("")
    lines.append(f"Three questions about one image, one after the other ({spec['new_tokens']} new tokens each, 256 image tokens):")
    lines.append("")
    lines.append("| pipeline | without reuse | with reuse (vision cache, prompt-prefix reuse) |")
    lines.append("| --- | --- | --- |")
    for name in pipelines:
        result = results[name]
        plain = result.get("three_questions", {}).get("total_s")
        reused = result.get("three_questions_reuse", {}).get("total_s")
        lines.append(f"| {NAMES[name]} | {_num(plain, 1, ' s')} | {_num(reused, 1, ' s') if name != 'naive' else '–'} |")
    lines.append("")
    return lines


def ratios(results: dict[str, Any], name: str) -> dict[str, float | None]:
    """This pipeline against the naive one: speed-ups (higher is better) and the share of naive's memory."""
    naive, ours = results.get("naive"), results[name]
    if not naive or "error" in naive:
        return {}
    naive_budget = next(iter(naive["budgets"].values()))
    equal = ours["budgets"].get("256") or next(iter(ours["budgets"].values()))
    first_budget = next(iter(ours["budgets"].values()))
    return {
        "decode": _ratio(naive_budget["decode_tok_s"], equal["decode_tok_s"], higher_is_better=True),
        "ttft": _ratio(naive_budget["ttft_s"], equal["ttft_s"]),
        "three": _ratio(naive.get("three_questions", {}).get("total_s"), ours.get("three_questions", {}).get("total_s")),
        "three_reuse": _ratio(naive.get("three_questions", {}).get("total_s"), ours.get("three_questions_reuse", {}).get("total_s")),
        "rss_share": (ours["peak_rss_gb"] / naive["peak_rss_gb"]) if naive.get("peak_rss_gb") else None,
        "first_call_slower": (first_budget["first_ttft_s"] / first_budget["ttft_s"] - 1) if first_budget["ttft_s"] else None,
    }


def _ratio_table(results: dict[str, Any], pipelines: list[str]) -> list[str]:
    ours = [name for name in pipelines if name != "naive"]
    if "naive" not in pipelines or not ours:
        return []
    table = {name: ratios(results, name) for name in ours}
    rows = [
        ("decode speed", "decode", "×"),
        ("time to first token at an equal image budget (256 tokens)", "ttft", "×"),
        ("three questions about one image, without reuse", "three", "×"),
        ("three questions about one image, with reuse", "three_reuse", "×"),
        ("peak RSS, share of the naive pipeline's", "rss_share", "%"),
        ("first call after a start, slower than later calls by", "first_call_slower", "%"),
    ]
    lines = ["## Against the naive pipeline", "", "| | " + " | ".join(SHORT[n] for n in ours) + " |", "| --- |" + " --- |" * len(ours)]
    for label, key, unit in rows:
        cells = []
        for name in ours:
            value = table[name].get(key)
            cells.append("–" if value is None else (f"{value * 100:.0f} %" if unit == "%" else f"{value:.2f}×"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _agent_section(results: dict[str, Any]) -> list[str]:
    runs = {key.split(":", 1)[1]: value for key, value in results.items() if key.startswith("agent:") and "error" not in value}
    if not runs:
        return []
    naive = runs.get("naive", {}).get("agent_s")
    lines = [
        "## The realistic agent question",
        "",
        "The seed's scenario through the real `DocumentAssistant`: an invoice screenshot (1100×780 px) and a "
        "quarterly sales chart (800×520 px), \"What is the invoice total, and is it more than the best quarter in "
        "the chart?\". Planner tool calls about 40 tokens each, the OCR reply about 300, the chart about 200, the "
        "answer about 80; OCR and chart at their tools' own image budgets. The naive pipeline shrinks the images to "
        "512 px as the seed does (less vision work than the others do).",
        "",
        "| pipeline | end to end | against naive |",
        "| --- | --- | --- |",
    ]
    for name, run in runs.items():
        ratio = _ratio(naive, run["agent_s"])
        lines.append(f"| {NAMES.get(name, name)} | {_num(run['agent_s'], 1, ' s')} | {'–' if ratio is None else f'{ratio:.2f}×'} |")
    for name, run in runs.items():
        lines += [
            "",
            f"Steps on the {NAMES.get(name, name)}:",
            "",
            "| generation | input tokens | reused from a cached prefix | prefilled | vision | prefill | decode (tokens) | total |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for call in run["generations"]:
            lines.append(
                f"| {call.get('step', '')} | {call.get('input_tokens')} | {call.get('reused_tokens', 0)} | "
                f"{call.get('prefill_tokens', 0)} | {_num(call.get('vision_seconds'), 1, ' s')} | "
                f"{_num(call.get('prefill_seconds'), 1, ' s')} | {_num(call.get('decode_seconds'), 1, ' s')} "
                f"({call.get('output_tokens')}) | {_num(call.get('seconds'), 1, ' s')} |"
            )
    lines.append("")
    return lines
