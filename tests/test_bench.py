"""The benchmark's mechanics on the tiny checkpoint: the worker, the agent scenario, the report, the tokenizer."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from qwenvl_agent.bench.agent_run import FOLLOW_UP_ANSWER, run_agent_scenario, scripted_texts
from qwenvl_agent.bench.report import render_report
from qwenvl_agent.bench.tokenizer import tokenizer_from_tiktoken


MACHINE = {"date": "2026-11-26", "cpu": "Test CPU", "cores": 2, "memory_gb": 24, "flags": ["avx512_bf16"], "versions": {}}


def test_a_worker_measures_one_pipeline_in_its_own_process(tiny_model):
    spec = {"pipeline": "torch", "checkpoint": tiny_model, "budgets": [16], "new_tokens": 4, "runs": 1}
    done = subprocess.run([sys.executable, "-m", "qwenvl_agent.bench.worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1].removeprefix("RESULT "))
    figures = result["budgets"]["16"]
    assert figures["ttft_s"] > 0 and figures["decode_tok_s"] > 0 and result["peak_rss_gb"] > 0
    assert all(call["output_tokens"] == 4 for call in figures["calls"])
    with_reuse = result["three_questions_reuse"]["calls"]
    assert with_reuse[0]["reused"] == 0 and with_reuse[1]["reused"] > 0 and with_reuse[1]["vision_s"] == 0


def test_the_naive_pipeline_generates_exactly_the_asked_tokens(tiny_model):
    from qwenvl_agent.samples import invoice_screenshot
    from qwenvl_agent.bench.worker import Naive

    call = Naive(tiny_model).ask(invoice_screenshot((1536, 1536)), "Read it.", 5)
    assert call["output_tokens"] == 5 and call["image_tokens"] == 256  # 512 x 512 px after the seed's shrink


def test_the_agent_scenario_runs_end_to_end_with_realistic_replies(tiny_model):
    result = run_agent_scenario("torch", tiny_model)
    assert [step["tool"] for step in result["steps"]] == ["ocr_image", "read_chart"]
    assert not any(step["is_error"] for step in result["steps"])
    assert result["answer"] == scripted_texts()[-1]
    steps = [call["step"] for call in result["generations"]]
    # Two planner calls: both tools in the first turn, then the answer.
    assert steps == ["planner: call ocr_image and read_chart", "ocr_image", "read_chart", "planner: answer",
                     "follow-up: answer"]
    # The follow-up is answered in the same conversation: its prompt continues the first question's.
    assert result["follow_up_answer"] == FOLLOW_UP_ANSWER and result["generations"][-1]["reused_tokens"] > 0
    planner = [call for call in result["generations"] if call["step"].startswith("planner")]
    assert planner[1]["reused_tokens"] > 0
    # The planner's prefix was warmed before the question: its first call reused all of it.
    assert result["warm_tokens"] > 0 and planner[0]["reused_tokens"] >= result["warm_tokens"]
    assert 0 < result["first_answer_token_s"] < result["agent_s"]
    report = render_report({"agent:torch": result}, MACHINE, {"runs": 1, "new_tokens": 4}, "qwen", quick=True)
    row = next(line for line in report.splitlines() if line.startswith("| torch"))
    assert f"| {result['first_answer_token_s']:.1f} s |" in row and f"({result['warm_tokens']} tokens)" in row


def test_with_the_default_ocr_engine_the_model_reads_only_the_chart(tiny_model):
    result = run_agent_scenario("torch", tiny_model, "rapidocr")
    assert [step["tool"] for step in result["steps"]] == ["ocr_image", "read_chart"]
    assert not any(step["is_error"] for step in result["steps"])
    steps = [call["step"] for call in result["generations"]]
    assert steps == ["planner: call ocr_image and read_chart", "read_chart", "planner: answer", "follow-up: answer"]
    assert result["answer"] == scripted_texts("rapidocr")[-1] and result["ocr_engine"] == "rapidocr"
    report = render_report({"agent:openvino-int4+rapidocr": result}, MACHINE, {"runs": 1, "new_tokens": 4}, "qwen",
                           quick=False)
    row = next(line for line in report.splitlines() if line.startswith("| OpenVINO engine, int4 weights, RapidOCR"))
    assert f"| {result['follow_up_s']:.1f} s | {result['peak_rss_gb']:.1f} GB |" in row


def test_the_report_gives_ratios_to_the_naive_pipeline():
    def pipeline(ttft, decode, three, rss):
        call = {"image_tokens": 256}
        return {"load_s": 10.0, "peak_rss_gb": rss, "three_questions": {"total_s": three},
                "budgets": {"256": {"first_ttft_s": ttft, "ttft_s": ttft, "decode_tok_s": decode, "calls": [call]}}}

    results = {"naive": pipeline(10.0, 2.0, 60.0, 13.0), "torch": pipeline(5.0, 4.0, 20.0, 6.5)}
    report = render_report(results, MACHINE, {"runs": 3, "new_tokens": 24}, "qwen", quick=False)
    assert "| decode speed | 2.00× |" in report
    assert "| time to first token at an equal image budget (256 tokens) | 2.00× |" in report
    assert "| three questions about one image, without reuse | 3.00× |" in report
    assert "| peak RSS, share of the naive pipeline's | 50 % |" in report
    assert "Test CPU" in report and "avx512_bf16" in report


def test_a_tiktoken_rank_file_becomes_a_byte_level_tokenizer(tmp_path):
    pieces = [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w", b"or", b" wor", b"ld", b" world"]
    path = tmp_path / "ranks.tiktoken"
    path.write_bytes(b"\n".join(base64.b64encode(p) + b" " + str(rank).encode() for rank, p in enumerate(pieces)))
    tokenizer = tokenizer_from_tiktoken(path)
    ids = tokenizer.encode("hello world", add_special_tokens=False)
    assert ids == [pieces.index(b"hello"), pieces.index(b" world")]
    assert tokenizer.decode(tokenizer.encode("héllo 发票", add_special_tokens=False)) == "héllo 发票"
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == len(pieces)
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == len(pieces) + 12
    assert tokenizer.convert_tokens_to_ids("</think>") == len(pieces) + 25
