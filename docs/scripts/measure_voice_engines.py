"""Speech recognition engines side by side, and what a transcription costs an answer being written.

Run alone (it is a timing), in the OpenVINO environment with OpenVINO GenAI added (not a dependency of the
project): ``pip install openvino-genai==<the installed openvino's version>``, then
``python docs/scripts/measure_voice_engines.py``.

1. Whisper base with random weights (the benchmark's, ``qwenvl bench`` builds it; real compute per token),
   10 s of espeak-ng speech, 40 tokens decoded (what a real model writes for 10 s of English):
   faster-whisper (CTranslate2 int8, the default) against the same checkpoint exported by optimum-intel
   (int8 weights) and run by OpenVINO GenAI's ``WhisperPipeline``, end of text suppressed so it decodes 40.
2. The full-size random-weight Qwen3-VL on the OpenVINO int4 engine writing a forced 150-token answer, alone
   and with the same transcription started in another thread at its 20th token: the answer's tokens per
   second while the transcription runs, and the transcription's time beside it.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from qwenvl_agent.bench.checkpoint import random_checkpoint
from qwenvl_agent.bench.machine import machine_facts
from qwenvl_agent.bench.voice import REALISTIC_TOKENS_PER_SECOND, _random_whisper, _speech
from qwenvl_agent.vlm.generation import GenerationSettings, Prompt, stream
from qwenvl_agent.vlm.runtime import load_runtime
from qwenvl_agent.vlm.testing import scripted_replies
from qwenvl_agent.voice import load_recognizer, synthesize

SECONDS = 10.0
TOKENS = int(REALISTIC_TOKENS_PER_SECOND * SECONDS)
ANSWER = " ".join(f"Line {n} of the answer about the invoice total." for n in range(1, 30))


def median_time(run, times: int = 3) -> tuple[float, float]:
    """The first call's seconds (it loads what it needs) and the median of ``times`` more."""
    started = time.perf_counter()
    run()
    first = time.perf_counter() - started
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        taken.append(time.perf_counter() - started)
    return first, statistics.median(taken)


def openvino_whisper(hf_folder: Path, output: Path) -> Path:
    """The random Whisper exported to OpenVINO IR with int8 weights and its tokenizer models (once)."""
    if (output / "openvino_encoder_model.xml").is_file():
        return output
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    work = output.parent / "hf-with-processor"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(hf_folder, work)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(work / "tokenizer.json"))
    WhisperProcessor(WhisperFeatureExtractor.from_pretrained(work), tokenizer).save_pretrained(work)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(work),
                    "--task", "automatic-speech-recognition-with-past", "--weight-format", "int8", str(output)],
                   check=True)
    print(f"exported in {time.perf_counter() - started:.1f} s")
    return output


def main() -> None:
    print(machine_facts())
    audio = _speech(SECONDS, synthesize).astype(np.float32)
    ct2 = _random_whisper("base", None)
    recognizer = load_recognizer(str(ct2))
    first, fw = median_time(lambda: recognizer.transcribe(audio, "en", decode_tokens=TOKENS))
    print(f"faster-whisper int8: {fw:.3f} s for {SECONDS:g} s of speech (first call {first:.2f} s)")

    import openvino_genai

    folder = openvino_whisper(ct2.parent / "hf", ct2.parent / "openvino-int8")
    started = time.perf_counter()
    pipe = openvino_genai.WhisperPipeline(str(folder), "CPU")
    loaded = time.perf_counter() - started
    config = pipe.get_generation_config()
    config.max_new_tokens, config.language, config.task, config.return_timestamps = TOKENS, "<|en|>", "transcribe", False
    config.suppress_tokens = list(config.suppress_tokens) + [config.eos_token_id]
    first, ov = median_time(lambda: pipe.generate(audio, config))
    print(f"OpenVINO GenAI WhisperPipeline int8: {ov:.3f} s (first call {first:.2f} s, load {loaded:.2f} s); "
          f"{fw / ov:.2f}x faster-whisper")

    runtime = load_runtime(random_checkpoint(), engine="openvino", weights="int4")

    def answer(beside: threading.Thread | None = None) -> np.ndarray:
        stamps = []
        with scripted_replies(runtime, [ANSWER]):
            prompt = Prompt([{"role": "user", "content": "Tell me about the invoice."}])
            for piece in stream(runtime, prompt, GenerationSettings(max_new_tokens=200, reuse_prefix=False)):
                if isinstance(piece, str):
                    stamps.append(time.perf_counter())
                    if beside is not None and len(stamps) == 20:
                        beside.start()
        return np.diff(stamps)

    answer()
    alone = answer()
    took: dict[str, float] = {}

    def hear() -> None:
        started = time.perf_counter()
        recognizer.transcribe(audio, "en", decode_tokens=TOKENS)
        took["s"] = time.perf_counter() - started

    thread = threading.Thread(target=hear)
    gaps = answer(thread)
    thread.join()
    after_start = np.cumsum(gaps[19:])
    during = gaps[19 : 19 + max(int(np.searchsorted(after_start, took["s"])), 1)]
    print(f"answer alone: {1 / np.median(alone):.1f} tok/s; beside a transcription: {1 / np.median(during):.1f} tok/s "
          f"for the {len(during)} tokens it overlapped; the transcription beside it {took['s']:.2f} s (alone {fw:.2f} s)")


if __name__ == "__main__":
    main()
