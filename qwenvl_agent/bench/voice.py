"""The benchmark's voice section: transcribing 10 s of espeak-ng speech, and speaking an 80-token answer (time to
the first audio, and the real-time factor of the whole).

Recognition uses the default model (or the one given); when it cannot be had here (offline, not in the cache) a
random-weight Whisper of the same size stands in, built once into the cache, and the report says so: its
compute per token is the real model's, but the text it writes (and so how many tokens it decodes) is noise.
Speech uses the voice ``speak`` picks for the answer's language (a Piper voice in the cache, else espeak-ng), one
sentence at a time, as a page or a client plays it: the first sentence's audio is what a listener waits for.
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from qwenvl_agent.vlm.errors import ModelNotAvailableError
from qwenvl_agent.vlm.openvino_export import cache_root

from .common import log

SPEECH = ("The invoice was issued on the third of March by a hardware store in the city centre. It lists twelve "
          "items, from screws and hinges to a power drill, with a total amount of four hundred and twenty dollars. ")
# About 80 tokens each: what a short answer on the page is.
ANSWERS = {
    "en": "The invoice total is 1,234.56 dollars, due on the 15th of March. It was issued by Acme Supplies to "
          "Northwind Traders for twelve items: screws, hinges, two power drills and a set of shelves. The largest "
          "line is the drills, at 398 dollars. Tax is included at twenty percent, and no discount was given.",
    "zh": "这张发票的总金额是一千二百三十四元五角六分，付款期限是三月十五日。开票方是艾克美供应公司，收票方是北风贸易公司，"
          "共有十二项商品，包括螺丝、合页、两台电钻和一套货架。金额最大的一项是电钻，三百九十八元。税率为百分之二十，已含在总额中，没有折扣。",
}
# Tokens Whisper writes per second of English speech (about 2.5 words a second, 1.5 tokens a word).
REALISTIC_TOKENS_PER_SECOND = 4
TARGETS = {"transcribe_s": 2.0, "first_audio_s": 1.5, "real_time_factor": 1.0}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")  # "1,234.56" is not two sentences


def run_voice_bench(asr_model: str | None = None, *, runs: int = 3, speech_seconds: float = 10.0,
                    random_size: str = "base", cache: Path | None = None) -> dict[str, Any]:
    """The voice figures: ``transcribe`` (``speech_seconds`` of speech, ``runs`` times after a first, loading
    call) and ``speak`` (each of ``ANSWERS``). ``random_size``: the random Whisper's size when the model cannot
    be had (``tiny-random`` for tests)."""
    from qwenvl_agent.voice import DEFAULT_ASR_MODEL

    results: dict[str, Any] = {}
    if shutil.which("espeak-ng") is None:
        return {"error": "espeak-ng is not installed (apt-get install espeak-ng): it makes the speech to transcribe"}
    try:
        results["transcribe"] = _transcribe(asr_model or DEFAULT_ASR_MODEL, runs, speech_seconds, random_size, cache)
    except Exception as exc:  # noqa: BLE001 - one failed part is reported, the rest still measured
        results["transcribe"] = {"error": f"{type(exc).__name__}: {exc}"}
    for language, text in ANSWERS.items():
        try:
            results[f"speak:{language}"] = _speak(text)
        except Exception as exc:  # noqa: BLE001
            results[f"speak:{language}"] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def _transcribe(model: str, runs: int, seconds: float, random_size: str, cache: Path | None) -> dict[str, Any]:
    from qwenvl_agent.voice import SAMPLE_RATE, load_recognizer, synthesize, transcribe

    audio = _speech(seconds, synthesize)
    note = None
    try:
        load_recognizer(model)
    except ModelNotAvailableError:
        note = f"a random-weight Whisper {random_size} ({model} is not on this machine and could not be downloaded)"
        log(f"  {model} is not available here; measuring a random-weight Whisper {random_size} instead.")
        model = str(_random_whisper(random_size, cache))
    recognizer = load_recognizer(model)
    # Random weights write noise: they decode the words 10 s of speech hold (about 40 tokens), once.
    tokens = REALISTIC_TOKENS_PER_SECOND * seconds if note is not None else None

    def heard():
        if tokens is None:
            return transcribe((audio, SAMPLE_RATE), "en", model=model, max_seconds=None)
        return recognizer.transcribe(audio, "en", decode_tokens=int(tokens))

    started = time.perf_counter()
    first = heard()
    first_s = time.perf_counter() - started
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        transcript = heard()
        times.append(time.perf_counter() - started)
    log(f"  transcribed {seconds:g} s of speech in {statistics.median(times):.2f} s: {transcript.text[:80]!r}")
    return {"model": model if note is None else note, "random": note is not None, "audio_s": round(seconds, 2),
            "first_call_s": first_s, "transcribe_s": statistics.median(times), "runs": runs,
            "text": first.text[:200]}


def _speech(seconds: float, synthesize):
    """``seconds`` of English speech by espeak-ng, as 16 kHz samples."""
    import numpy as np

    from qwenvl_agent.voice import SAMPLE_RATE, load_audio

    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        pieces.append(load_audio(synthesize(SPEECH, voice="espeak:en-us").wav, max_seconds=None))
        total += pieces[-1].size
    return np.concatenate(pieces)[: int(seconds * SAMPLE_RATE)]


def _random_whisper(size: str, cache: Path | None) -> Path:
    from qwenvl_agent.voice.testing import make_random_whisper

    folder = (cache or cache_root() / "bench") / f"whisper-{size}-random"
    done = folder / "ct2" / "model.bin"
    if not done.is_file():
        log(f"  building a random Whisper {size} (once) in {folder} …")
        make_random_whisper(folder, size)
    return folder / "ct2"


def _speak(text: str) -> dict[str, Any]:
    from qwenvl_agent.voice import synthesize

    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    started = time.perf_counter()
    first_audio_s, audio_s, voice = None, 0.0, None
    for sentence in sentences:
        speech = synthesize(sentence)
        first_audio_s = first_audio_s if first_audio_s is not None else time.perf_counter() - started
        audio_s += speech.seconds
        voice = f"{speech.voice.name} ({speech.voice.engine})"
    total_s = time.perf_counter() - started
    log(f"  spoke {len(sentences)} sentences ({audio_s:.1f} s of audio) in {total_s:.2f} s with {voice}")
    return {"voice": voice, "sentences": len(sentences), "first_audio_s": first_audio_s, "total_s": total_s,
            "audio_s": audio_s, "real_time_factor": total_s / audio_s if audio_s else None}


def voice_section(results: dict[str, Any] | None) -> list[str]:
    """The report's "Voice" section (nothing when the voice was not measured)."""
    if not results:
        return []
    lines = ["## Voice", ""]
    if "error" in results:
        return lines + [f"Not measured: {results['error']}.", ""]
    heard = results.get("transcribe", {})
    if "error" in heard:
        lines.append(f"- Transcription failed: {heard['error']}")
    else:
        lines.append(
            f"- **Transcribing {heard['audio_s']:g} s of espeak-ng speech** with {heard['model']}: "
            f"{heard['transcribe_s']:.2f} s (median of {heard['runs']}; the first call, loading the model, "
            f"{heard['first_call_s']:.1f} s). Target under {TARGETS['transcribe_s']:g} s: "
            f"{_met(heard['transcribe_s'] < TARGETS['transcribe_s'])}."
            + (" The weights are random: the compute per token is the real model's, and the number of tokens is "
               "forced to what 10 s of speech holds (about 4 a second, one pass, as a real model decodes it)."
               if heard["random"] else ""))
    for key, spoke in results.items():
        if not key.startswith("speak:"):
            continue
        language = key.split(":", 1)[1]
        if "error" in spoke:
            lines.append(f"- Speaking the {language} answer failed: {spoke['error']}")
            continue
        lines.append(
            f"- **Speaking an 80-token answer ({language})** with {spoke['voice']}, sentence by sentence: first audio "
            f"after {spoke['first_audio_s']:.2f} s (target under {TARGETS['first_audio_s']:g} s: "
            f"{_met(spoke['first_audio_s'] < TARGETS['first_audio_s'])}); all {spoke['audio_s']:.1f} s of it in "
            f"{spoke['total_s']:.2f} s, a real-time factor of {spoke['real_time_factor']:.2f} (target under 1: "
            f"{_met(spoke['real_time_factor'] < TARGETS['real_time_factor'])}).")
    return lines + [""]


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"
