"""A prompt prefix paid once: the KV state of a prompt's opening (a planner's system prompt and tool schemas),
computed once and kept on disk, so a new process starts warm.

Every question to the agent starts with the same ~1,400 tokens of system prompt and tool schemas: read from
nothing, they are the slowest part of its first planner call. ``warm_prefix`` computes their KV state once
(or reads it from the cache folder), and puts it in the runtime's prefix cache, where the next prompt that
starts with them finds it and prefills only what follows.

A file is keyed by everything its content depends on: the model (name, revision, the weight files' names,
sizes and dates), the engine and its precision, and the exact prompt tokens (the prompt, the tools, the chat
template). A change to any of them is another key, so a stale state is never used.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GenerationCancelled, QwenVLError
from .openvino_export import cache_root

log = logging.getLogger(__name__)

FORMAT = "1"  # of the files: a change of layout is a change of key
KEEP_FILES = 4  # saved prefixes kept in the cache folder (each ~110 KB a token on the 2B model), newest first
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".xml", ".json")


@dataclass(frozen=True)
class WarmPrefix:
    """What ``warm_prefix`` did: ``source`` "memory" (already held), "disk" (read from ``path``) or "computed"
    (prefilled now, and saved to ``path`` unless the folder could not be written); ``tokens`` its length."""

    tokens: int
    source: str
    path: Path | None = None


def prefix_folder() -> Path:
    """Where saved prefixes live: ``prefixes`` in qwenvl-agent's cache folder."""
    return cache_root() / "prefixes"


def warm_prefix(runtime: Any, messages: list[dict], tools: list[dict] | None = None) -> WarmPrefix:
    """Make the KV state of ``messages`` (chat-template messages without images, ending where later prompts
    go on, such as a system message alone) with ``tools`` offered ready in ``runtime``'s prefix cache: kept
    already, read from the cache folder, or computed now (once the model is free) and saved there."""
    tokens = prefix_tokens(runtime, messages, tools)
    path = prefix_folder() / f"{prefix_key(runtime, tokens)}.safetensors"
    _, held = runtime.prefix_cache.match(tokens, (), limit=len(tokens))
    if held == len(tokens):
        if not path.is_file():  # held from a prompt that began with it (a first question): a new process wants it
            _save(runtime, tokens, path)
        return WarmPrefix(len(tokens), "memory")
    if path.is_file():
        try:
            runtime.prefix_cache.load(path)
            path.touch()  # recently used: the last to be pruned
            _hold(runtime, tokens)
            return WarmPrefix(len(tokens), "disk", path)
        except Exception as exc:  # noqa: BLE001 - a damaged file is computed again, not a failure
            log.warning("Could not read the saved prompt prefix %s (%s); computing it again.", path, exc)
    _compute(runtime, tokens)
    return WarmPrefix(len(tokens), "computed", path if _save(runtime, tokens, path) else None)


def prefix_tokens(runtime: Any, messages: list[dict], tools: list[dict] | None) -> list[int]:
    """The token ids ``messages`` and ``tools`` open every later prompt with (no generation prompt)."""
    text = runtime.processor.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=False)
    return runtime.tokenizer(text, add_special_tokens=False)["input_ids"]


def prefix_key(runtime: Any, tokens: list[int]) -> str:
    """The file name of a prefix: a hash of the model, its weight files, the engine, the precision and the tokens."""
    digest = hashlib.blake2b(digest_size=16)
    kv_format = getattr(runtime.engine, "kv_format", "")
    for part in (FORMAT, runtime.model_id, runtime.revision, runtime.engine_name, runtime.dtype, kv_format,
                 weights_fingerprint(runtime.path)):
        digest.update(f"{part}\0".encode())
    digest.update(b",".join(str(token).encode() for token in tokens))
    return digest.hexdigest()


def weights_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of the model folder's weight and config files: changed weights at
    the same path are another model."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def _compute(runtime: Any, tokens: list[int]) -> None:
    """Prefill ``tokens`` (and decode one token, thrown away) with prefix reuse on, so the prefix cache keeps
    their KV state. The engine is driven directly: no test's or bench's forced reply is spent on it."""
    import torch

    from . import cancel
    from .generation import GenerationSettings, StepTimes, Stopped

    ids = torch.tensor([tokens], dtype=torch.long)
    inputs = {"input_ids": ids.to(runtime.engine.device), "attention_mask": torch.ones_like(ids)}
    settings = GenerationSettings(max_new_tokens=1, cache_images=False, reuse_prefix=True)
    stop = cancel.current()  # a run stopped while its prefix is prepared stops this too
    kwargs = {"max_new_tokens": 1, "do_sample": False}
    with runtime.gate.hold(None, stop), torch.inference_mode():
        try:
            runtime.engine.generate(inputs, [], settings, kwargs, StepTimes(), lambda: stop is not None and stop.is_set())
        except Stopped as exc:
            raise GenerationCancelled("Stopped while the prompt prefix was being prepared.") from exc


def _hold(runtime: Any, tokens: list[int]) -> None:
    """Have the engine hold the prefix read from disk where it computes (``hold``), if the model is free now: the
    first prompt then goes on from it. A busy model is left alone; that prompt puts the prefix in itself."""
    hold = getattr(runtime.engine, "hold", None)
    if hold is None:
        return
    try:
        with runtime.gate.hold(deadline=time.monotonic()):
            hold(tokens)
    except QwenVLError as exc:  # busy: not worth waiting for
        log.info("The saved prompt prefix stays in memory until a prompt uses it: %s", exc)


def _save(runtime: Any, tokens: list[int], path: Path) -> bool:
    """Save the held prefix ``tokens`` to ``path`` and prune the folder; False if it could not be written."""
    try:
        getattr(runtime.engine, "settle", lambda: None)()  # the kept KV state copied out of the engine's blocks
        saved = runtime.prefix_cache.save(tokens, path, {"model": runtime.model_id, "engine": runtime.label})
    except OSError as exc:
        log.warning("Could not save the prompt prefix to %s: %s", path, exc)
        return False
    if saved:
        _prune(path.parent)
    return saved


def _prune(folder: Path) -> None:
    """Keep the newest ``KEEP_FILES`` saved prefixes: old prompts' states are of no more use."""
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in files[KEEP_FILES:]:
        old.unlink(missing_ok=True)
