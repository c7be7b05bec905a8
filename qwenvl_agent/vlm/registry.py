"""The runtimes loaded in this process, by what identifies them (model, revision, engine, precision, dtype).

``runtime.load_runtime`` looks here first and puts what it loads here; one lock per key keeps two first
callers from loading the same weights twice.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

_loaded: dict[tuple, Any] = {}
_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}


def find(*keys: tuple) -> Any | None:
    """The runtime loaded under the first of ``keys`` that has one, else None."""
    with _lock:
        return next((_loaded[key] for key in keys if key in _loaded), None)


def key_lock(key: tuple) -> threading.Lock:
    """The lock a first load under ``key`` holds."""
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


def remember(key: tuple, runtime: Any) -> None:
    with _lock:
        _loaded[key] = runtime


def loaded_runtimes() -> list:
    """The runtimes loaded in this process."""
    with _lock:
        return list(_loaded.values())


def release_runtime(runtime: Any) -> bool:
    """Forget ``runtime`` (under every key it is cached by), so its memory is freed once nothing else holds
    it: a page that switched models, for example. True if it was loaded."""
    with _lock:
        keys = [key for key, cached in _loaded.items() if cached is runtime]
        for key in keys:
            del _loaded[key]
    gc.collect()
    return bool(keys)
