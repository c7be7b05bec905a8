"""Where a model's files come from: a local folder, or the Hugging Face hub's cache (downloading once)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelNotAvailableError

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_WEIGHT_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "openvino_*.xml", "openvino_*.bin"]


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
