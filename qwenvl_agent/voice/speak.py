"""Text to speech: a neural Piper voice where one is on this machine, espeak-ng (Debian, no download) otherwise.

How the voice is chosen (``choose_voice``):
- ``voice`` names it: a path to a Piper ``.onnx`` voice (its ``.onnx.json`` beside it) or a folder holding one;
  a Piper voice name like ``en_US-lessac-medium`` (downloaded once from the hub's ``rhasspy/piper-voices``, a
  clear ``ModelNotAvailableError`` offline); ``espeak:NAME`` or any other name, an espeak-ng voice (``en-us``,
  ``cmn``, ``de``).
- No ``voice``: the language (``language``, else the text's own: Chinese characters → "zh", otherwise "en")
  picks Piper's default voice for it when that voice is already in the hub cache, and espeak-ng's voice for it
  when not. Nothing is downloaded without being asked for, so speaking never waits on the network.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

from ..vlm.errors import EngineError, ModelNotAvailableError
from .hub import cached_file, snapshot

PIPER_REPO = "rhasspy/piper-voices"
PIPER_VOICES = {"en": "en_US-lessac-medium", "zh": "zh_CN-huayan-medium"}
ESPEAK_VOICES = {"en": "en-us", "zh": "cmn"}
MAX_CHARS = 5000
_PIPER_NAME = re.compile(r"(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<name>[\w]+)-(?P<quality>x_low|low|medium|high)")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Voice:
    """A voice to speak with: ``engine`` "piper" (``path`` its .onnx file) or "espeak" (``name`` its voice)."""

    engine: str
    name: str
    language: str
    path: Path | None = None


@dataclass(frozen=True)
class Speech:
    wav: bytes
    voice: Voice
    seconds: float


def text_language(text: str) -> str:
    """"zh" when Chinese characters make up at least a third of the letters, else "en"."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk * 3 >= cjk + latin else "en"


def choose_voice(text: str, voice: str | None = None, language: str | None = None) -> Voice:
    """The voice ``speak`` uses for these arguments (the rule is in the module's docstring)."""
    lang = _language(language) if language else text_language(text)
    if voice:
        return _named_voice(voice.strip(), lang)
    if lang in PIPER_VOICES:
        cached = _piper_from_hub(PIPER_VOICES[lang], download=False)
        if cached is not None and _piper_installed():
            return Voice("piper", PIPER_VOICES[lang], lang, cached)
    return Voice("espeak", _espeak_voice_for(lang), lang)


def speak(text: str, voice: str | None = None, language: str | None = None) -> bytes:
    """``text`` spoken, as the bytes of a WAV file (mono, 16-bit). The voice follows the text's language unless
    ``voice`` or ``language`` say otherwise (see ``choose_voice``)."""
    return synthesize(text, voice, language).wav


def synthesize(text: str, voice: str | None = None, language: str | None = None) -> Speech:
    """Like ``speak``, and says which voice spoke and for how long."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Nothing to speak: the text is empty.")
    if len(text) > MAX_CHARS:
        raise ValueError(f"The text is {len(text)} characters long, above the {MAX_CHARS}-character limit of one call.")
    chosen = choose_voice(text, voice, language)
    wav = _piper(chosen, text) if chosen.engine == "piper" else _espeak(chosen.name, text)
    with wave.open(io.BytesIO(wav)) as reader:
        seconds = reader.getnframes() / reader.getframerate()
    return Speech(wav, chosen, round(seconds, 3))


def _language(language: str) -> str:
    return str(language).strip().lower().replace("_", "-").split("-")[0]


def _named_voice(voice: str, lang: str) -> Voice:
    path = Path(voice).expanduser()
    if voice.endswith(".onnx") or (("/" in voice or "\\" in voice) and path.is_dir()):
        return Voice("piper", path.stem, lang, _local_piper(path))
    match = _PIPER_NAME.fullmatch(voice)
    if match:
        return Voice("piper", voice, match["lang"], _piper_from_hub(voice, download=True))
    name = voice.removeprefix("espeak:")
    if name.lower() not in espeak_voices():
        raise ValueError(
            f"Unknown voice {voice!r}: give an espeak-ng voice (e.g. en-us, cmn; `espeak-ng --voices` lists them), "
            "a Piper voice name like en_US-lessac-medium, or the path of a Piper .onnx voice."
        )
    return Voice("espeak", name, lang)


def _espeak_voice_for(lang: str) -> str:
    name = ESPEAK_VOICES.get(lang, lang)
    if name not in espeak_voices():
        raise ValueError(f"No espeak-ng voice speaks {lang!r}: give a language like en or zh, or a voice.")
    return name


# ----- espeak-ng -------------------------------------------------------------------------------------------

_espeak_lock = threading.Lock()
_espeak_names: frozenset[str] | None = None


def espeak_voices() -> frozenset[str]:
    """The voice and language names espeak-ng knows (lowercase), read once per process."""
    global _espeak_names
    with _espeak_lock:
        if _espeak_names is None:
            listing = _run([_espeak_binary(), "--voices"], b"").decode("utf-8", "replace")
            names = set()
            for line in listing.splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 5:
                    names.add(fields[1].lower())
                    names.add(fields[4].rsplit("/", 1)[-1].lower())
            _espeak_names = frozenset(names)
        return _espeak_names


def _espeak(voice: str, text: str) -> bytes:
    """espeak-ng's WAV of ``text``. The text goes through standard input, so nothing in it is read as an option."""
    with tempfile.TemporaryDirectory(prefix="qwenvl-speak-") as folder:
        out = Path(folder) / "speech.wav"
        _run([_espeak_binary(), "-v", voice, "-b", "1", "-w", str(out), "--stdin"], text.encode("utf-8"))
        return out.read_bytes()


def _espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise EngineError("Speech needs espeak-ng (or a Piper voice): install it with `apt-get install espeak-ng`.")
    return binary


def _run(command: list[str], stdin: bytes) -> bytes:
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"espeak-ng failed: {exc}") from exc
    if done.returncode != 0:
        raise EngineError(f"espeak-ng failed: {done.stderr.decode('utf-8', 'replace').strip()[:300]}")
    return done.stdout


# ----- Piper -----------------------------------------------------------------------------------------------

_piper_voices: dict[Path, object] = {}
_piper_lock = threading.Lock()


def _piper_installed() -> bool:
    try:
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def _local_piper(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            raise ModelNotAvailableError(f"{path} should hold one Piper voice (.onnx with its .onnx.json); it holds {len(found)}.")
        path = found[0]
    if not path.is_file():
        raise ModelNotAvailableError(f"No Piper voice at {path}.")
    if not Path(f"{path}.json").is_file():
        raise ModelNotAvailableError(f"The Piper voice {path} has no {path.name}.json beside it (its settings).")
    return path


def _piper_from_hub(name: str, *, download: bool) -> Path | None:
    """The .onnx file of a Piper voice from the hub cache (with its .onnx.json), downloading both if allowed."""
    match = _PIPER_NAME.fullmatch(name)
    folder = f"{match['lang']}/{match['lang']}_{match['region']}/{match['name']}/{match['quality']}"
    files = [f"{folder}/{name}.onnx", f"{folder}/{name}.onnx.json"]
    if all(cached_file(PIPER_REPO, file) for file in files):
        return cached_file(PIPER_REPO, files[0])
    if not download:
        return None
    how_local = "pass the path of a Piper .onnx voice (with its .onnx.json beside it) as the voice"
    return snapshot(PIPER_REPO, files, f"Piper voice {name!r} from", how_local, whole_repo=False) / files[0]


def _piper(voice: Voice, text: str) -> bytes:
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise EngineError("Piper voices need piper-tts: pip install 'qwenvl-agent[voice]'.") from exc
    with _piper_lock:
        loaded = _piper_voices.get(voice.path)
        if loaded is None:
            loaded = _piper_voices[voice.path] = _load_piper(PiperVoice, voice.path)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        loaded.synthesize_wav(text, writer)
    return buffer.getvalue()


def _load_piper(piper_voice, path: Path):
    """``PiperVoice.load(path)``, its settings checked first: a broken voice is a clear error, not a traceback."""
    from piper.config import PiperConfig

    settings = Path(f"{path}.json")
    try:
        PiperConfig.from_dict(json.loads(settings.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotAvailableError(f"The Piper voice's settings {settings} are broken: not JSON ({exc}).") from exc
    except KeyError as exc:
        raise ModelNotAvailableError(f"The Piper voice's settings {settings} are broken: they lack the key {exc}.") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelNotAvailableError(f"The Piper voice's settings {settings} are broken: {exc}.") from exc
    try:
        return piper_voice.load(path)
    except Exception as exc:  # ONNX Runtime's load errors (InvalidProtobuf, Fail, ...) share no narrower base
        raise ModelNotAvailableError(f"{path} is not a Piper voice ONNX Runtime can load: {str(exc).strip()[:300]}") from exc
