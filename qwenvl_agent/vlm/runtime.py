"""Load Qwen3-VL once per (model, revision, dtype) and keep it: the model, its processor and its gate.

Every ``ChatQwenVL``, tool and planner that names the same model shares the one ``VLMRuntime`` returned
here, so the weights are in memory once. Loading is what takes time (download, then reading ~4 GB);
both show progress bars.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ModelNotAvailableError
from .gate import GenerationGate

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
DTYPES = ("auto", "bfloat16", "float32")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_WEIGHT_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


@dataclass(eq=False)
class VLMRuntime:
    """A loaded model with its processor, settings and the gate that serialises generation."""

    model: Any
    processor: Any
    model_id: str
    revision: str | None
    dtype: str
    path: Path
    gate: GenerationGate
    # Each hook gets the prompt length and may return a logits processor (used by vlm.testing).
    logits_hooks: list[Callable[[int], Any]] = field(default_factory=list)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def stream(self, prompt, settings):
        """Yield the reply as it is generated; see ``generation.stream``."""
        from .generation import stream

        return stream(self, prompt, settings)


_cache: dict[tuple, VLMRuntime] = {}
_cache_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}


def load_runtime(
    model: str | os.PathLike = DEFAULT_MODEL,
    revision: str | None = None,
    dtype: str = "auto",
    *,
    num_threads: int | None = None,
    max_waiting: int = 3,
) -> VLMRuntime:
    """Return the runtime for ``model`` (hub id or local folder), loading it on first use.

    ``dtype``: "auto" (bfloat16 where the CPU has AMX-BF16 or AVX512-BF16, else float32), "bfloat16" or
    "float32". ``num_threads``: torch threads, all physical cores by default. ``max_waiting``: callers that
    may queue behind a running generation before the next one gets ``BusyError`` (set by the first load).
    """
    resolved_dtype = resolve_dtype(dtype)
    model_ref = str(model)
    key = (_cache_key_model(model_ref), revision, resolved_dtype)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # two first callers must not load the same weights twice
        if key not in _cache:
            runtime = _load(model_ref, revision, resolved_dtype, num_threads, max_waiting)
            with _cache_lock:
                _cache[key] = runtime
    return _cache[key]


def loaded_runtimes() -> list[VLMRuntime]:
    """The runtimes loaded in this process."""
    with _cache_lock:
        return list(_cache.values())


def _cache_key_model(model_ref: str) -> str:
    path = Path(model_ref).expanduser()
    return str(path.resolve()) if path.is_dir() else model_ref


def resolve_dtype(dtype: str) -> str:
    """Turn "auto" into "bfloat16" or "float32" for this CPU; validate the others."""
    name = str(dtype).replace("torch.", "").lower()
    aliases = {"bf16": "bfloat16", "fp32": "float32", "float": "float32"}
    name = aliases.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}.")
    if name == "auto":
        return "bfloat16" if cpu_has_fast_bf16() else "float32"
    return name


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bfloat16 natively (AMX-BF16 or AVX512-BF16)."""
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _cpuinfo() -> list[tuple[str, str]]:
    """(name, value) pairs of /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in handle)]
    except OSError:
        return []


def _cpu_flags() -> set[str]:
    return next((set(value.split()) for name, value in _cpuinfo() if name == "flags"), set())


def physical_cores() -> int:
    """Physical cores (hyper-threads share their core's matrix units, so they add nothing here)."""
    cores: set[tuple[str, str]] = set()
    physical = "0"
    for name, value in _cpuinfo():
        if name == "physical id":
            physical = value
        elif name == "core id":
            cores.add((physical, value))
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(cores) or available, available))


def resolve_model_path(model: str, revision: str | None = None) -> Path:
    """A local folder holding the checkpoint: ``model`` itself, or the hub cache (downloading if needed)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} is a folder but has no config.json: it is not a model checkpoint.")
        return path
    if _looks_like_path(model):
        raise ModelNotAvailableError(f"No model folder at {path}. Give an existing folder or a hub id like {DEFAULT_MODEL}.")
    return _download(model, revision)


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~", "\\")) or _HUB_ID.fullmatch(model) is None


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        # Shows a progress bar per file while downloading; returns at once when the cache is complete.
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_WEIGHT_FILES))
    except Exception as exc:  # offline, unreachable, unknown repo, gated repo, disk full…
        raise ModelNotAvailableError(_not_available_message(repo_id, revision, constants.HF_HUB_CACHE, exc)) from exc


def _not_available_message(repo_id: str, revision: str | None, cache: str, exc: Exception) -> str:
    rev = f" --revision {revision}" if revision else ""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return (
        f"Model {repo_id!r} is not in the local cache ({cache}) and could not be downloaded ({why}). "
        f"Download it once where the Hugging Face hub is reachable with `qwenvl download {repo_id}{rev}` "
        f"(or `hf download {repo_id}{rev}`), or pass the path of a local folder that holds the checkpoint."
    )


def _load(model_ref: str, revision: str | None, dtype: str, num_threads: int | None, max_waiting: int) -> VLMRuntime:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model_path(model_ref, revision)
    torch.set_num_threads(num_threads or physical_cores())
    log.info("Loading %s (%s) from %s", model_ref, dtype, path)
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation="sdpa"
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailableError(f"Could not load a Qwen3-VL checkpoint from {path}: {exc}") from exc
    model.eval()
    return VLMRuntime(
        model=model,
        processor=processor,
        model_id=model_ref,
        revision=revision,
        dtype=dtype,
        path=path,
        gate=GenerationGate(max_waiting=max_waiting),
    )
