"""``qwenvl bench``'s voice section on a tiny configuration: offline, the default recognition model cannot be had,
so a random Whisper stands in and the report says so; speaking is measured sentence by sentence with espeak-ng."""

from __future__ import annotations

import shutil

import pytest

from qwenvl_agent.bench.machine import machine_facts
from qwenvl_agent.bench.report import render_report
from qwenvl_agent.bench.voice import ANSWERS, run_voice_bench

pytest.importorskip("faster_whisper", reason="pip install '.[voice]'")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_the_voice_section_offline_on_a_random_whisper(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    results = run_voice_bench(runs=1, speech_seconds=3.0, random_size="tiny-random", cache=tmp_path)

    heard = results["transcribe"]
    assert heard["random"] is True and heard["audio_s"] == 3.0, heard
    assert heard["model"].startswith("a random-weight Whisper tiny-random (Systran/faster-whisper-base is not on this machine")
    assert (tmp_path / "whisper-tiny-random-random" / "ct2" / "model.bin").is_file()
    assert 0 < heard["transcribe_s"] and 0 < heard["first_call_s"]
    english, chinese = results["speak:en"], results["speak:zh"]
    assert english["voice"] == "en-us (espeak)" and chinese["voice"] == "cmn (espeak)"
    assert english["sentences"] == ANSWERS["en"].count(". ") + 1
    assert 0 < english["first_audio_s"] < english["total_s"]
    assert english["audio_s"] > 10 and english["real_time_factor"] == pytest.approx(english["total_s"] / english["audio_s"])

    spec = {"budgets": [256], "new_tokens": 16, "runs": 1, "checkpoint": "x"}
    report = render_report({"voice": results}, machine_facts(), spec, "tiny", True)
    section = report[report.index("## Voice"):]
    assert "**Transcribing 3 s of espeak-ng speech** with a random-weight Whisper tiny-random" in section
    assert "The weights are random" in section
    assert "**Speaking an 80-token answer (en)** with en-us (espeak)" in section and "real-time factor" in section
    assert "**Speaking an 80-token answer (zh)** with cmn (espeak)" in section
