"""Voice on the page: a question asked into the microphone, answers read aloud.

The recording (``st.audio_input``, beside the chat box) is transcribed in this run of the page and sent as the
question, shown as text with a note that it came from speech. Transcription runs beside the vision model and
never under its generation gate: the recogniser has a lock of its own. A recording that cannot be used says why,
and the question box stays open for typing. Each answer has a "Read aloud" button that puts a player with the
spoken answer under it; the sidebar's "Read answers aloud" plays each new answer by itself.

The recogniser is ``--asr-model`` after ``--`` of ``streamlit run app.py``, else ``$QWENVL_ASR_MODEL``, else
``DEFAULT_ASR_MODEL``; ``--max-audio-seconds`` bounds a recording.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

import streamlit as st

from qwenvl_agent.vlm.errors import QwenVLError
from qwenvl_agent.voice import DEFAULT_ASR_MODEL, DEFAULT_MAX_SECONDS, synthesize, transcribe

LANGUAGES = {"Detect": None, "English": "en", "中文": "zh"}


@dataclass(frozen=True)
class SpokenQuestion:
    text: str
    note: str  # how it was heard, shown under the question


@dataclass(frozen=True)
class VoiceSettings:
    asr_model: str = DEFAULT_ASR_MODEL
    max_audio_seconds: float = DEFAULT_MAX_SECONDS


def voice_settings(argv: list[str] | None = None) -> VoiceSettings:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--asr-model", default=os.environ.get("QWENVL_ASR_MODEL") or DEFAULT_ASR_MODEL)
    parser.add_argument("--max-audio-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return VoiceSettings(args.asr_model, args.max_audio_seconds)


def sidebar() -> None:
    with st.sidebar:
        st.header("Voice")
        st.selectbox("Spoken language", list(LANGUAGES), key="voice_language",
                     help="The language questions are asked in; Detect lets the recogniser tell.")
        st.toggle("Read answers aloud", key="voice_autoplay", help="Each new answer plays by itself as speech.")


def spoken_question(enabled: bool) -> SpokenQuestion | None:
    """The microphone. A new recording is transcribed and returned as the question; one that cannot be used
    shows why and None is returned, so the question can be typed instead. Either way the recorder starts afresh
    on the next run of the page."""
    round_ = st.session_state.get("voice_round", 0)
    recording = st.audio_input("Ask by voice", key=f"voice-{round_}", disabled=not enabled,
                               help="Record your question; it is transcribed on this machine and sent.")
    if recording is None or not enabled:
        return None
    st.session_state["voice_round"] = round_ + 1
    settings = voice_settings()
    language = LANGUAGES.get(st.session_state.get("voice_language", "Detect"))
    try:
        with st.spinner("Transcribing the recording…"):
            heard = transcribe(recording.getvalue(), language, model=settings.asr_model,
                               max_seconds=settings.max_audio_seconds)
        if not heard.text.strip():
            raise ValueError("No words were heard in it.")
    except (QwenVLError, ValueError) as exc:
        st.error(f"The recording could not be transcribed: {exc} Type the question instead, or record it again.",
                 icon=":material/mic_off:")
        return None
    return SpokenQuestion(heard.text.strip(), f"Asked by voice: transcribed from {heard.seconds:.1f} s of speech ({heard.language}).")


def read_aloud(turn: Any, latest: bool) -> None:
    """Under an answer: "Read aloud", and once spoken, the player. The ``latest`` answer plays by itself when
    the sidebar says so, once."""
    if turn.role != "assistant" or not turn.text.strip() or turn.state == "running":
        return
    spoken: dict[int, bytes] = st.session_state.setdefault("voice_spoken", {})
    played: set[int] = st.session_state.setdefault("voice_played", set())
    key = id(turn)  # the turn lives in the session's conversation, so its identity lasts across reruns
    autoplay = latest and st.session_state.get("voice_autoplay", False) and key not in played
    if key not in spoken and (autoplay or st.button("Read aloud", key=f"read-{key}", icon=":material/volume_up:")):
        try:
            with st.spinner("Speaking…"):
                spoken[key] = synthesize(turn.text).wav
        except (QwenVLError, ValueError) as exc:
            st.warning(f"The answer could not be read aloud: {exc}", icon=":material/volume_off:")
            return
    if key in spoken:
        st.audio(spoken[key], format="audio/wav", autoplay=autoplay)
        played.add(key)
