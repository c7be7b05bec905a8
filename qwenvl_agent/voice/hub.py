"""Model files from a local folder or the Hugging Face hub cache, downloaded once with a progress bar; a clear
``ModelNotAvailableError`` when neither has them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..vlm.errors import ModelNotAvailableError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(ref: str) -> bool:
    """True for ``owner/name`` that is not an existing path (``./x``, ``/x``, ``~/x`` are always paths)."""
    return not ref.startswith((".", "/", "~", "\\")) and _HUB_ID.fullmatch(ref) is not None and not Path(ref).exists()


def snapshot(repo_id: str, patterns: list[str], what: str, how_local: str, *, whole_repo: bool = True) -> Path:
    """The hub cache's folder of ``repo_id`` holding the files matching ``patterns`` (downloading them if needed)."""
    from huggingface_hub import constants, snapshot_download

    command = f"hf download {repo_id}" + ("" if whole_repo else " " + " ".join(patterns))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unreachable, unknown repo, disk full…
        raise ModelNotAvailableError(_message(f"{what} {repo_id!r}", constants.HF_HUB_CACHE, exc, command, how_local)) from exc


def cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of ``repo_id`` if the hub cache holds it (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    return Path(cached) if isinstance(cached, str) else None


def _message(what: str, cache: str, exc: Exception, command: str, how_local: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return (
        f"The {what} is not in the local cache ({cache}) and could not be downloaded ({why}). "
        f"Download it once where the Hugging Face hub is reachable (`{command}`), or {how_local}."
    )
