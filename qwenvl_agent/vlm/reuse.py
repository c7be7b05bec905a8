"""Work kept across calls: the vision tower's output per image, and the KV cache of recent prompts.

An agent question is many model calls over the same few images and the same long system prompt. Two
bounded caches let a call skip what an earlier one already computed:

- ``VisionCache``: the vision tower's features (for Qwen3-VL also the deepstack features) per image,
  keyed by the image's content hash (of its own pixels, never inherited from the image it was cut from)
  and its pixel budget, so one image at two budgets is two entries. The cache lives on one runtime, so
  the model and the engine are part of every key by construction.
- ``PrefixCache``: the KV cache of recent prompts (with their replies) and the tokens and images they
  hold. A new prompt reuses the longest shared prefix and prefills only what follows it. Two prompts
  whose tokens agree but whose images differ share nothing from the first differing image on: image
  placeholders are the same token whatever the picture, so images are compared by their keys.

A prefix without images (a planner's system prompt and tool schemas) can be saved to a file and loaded
in another process (``PrefixCache.save``/``load``; see ``warm.py``).

Both are bounded in bytes and evict the least recently used entry first. The bytes are those the entries
keep alive (whole buffers, state copies, token ids), and entries are kept compact, so a bound is a bound.
"""

from __future__ import annotations

import array
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def image_key(image: Image.Image) -> str:
    """A hash of the image's own decoded pixels, mode, size (and palette), computed afresh on every call.

    Nothing is kept on the image object: Pillow copies ``image.info`` to every crop, resize, copy and
    conversion, and an image drawn on in place keeps its object, so a stored key would be inherited by
    images it does not describe. Hashing costs milliseconds beside a vision pass of seconds.
    """
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    if image.mode in ("P", "PA"):
        digest.update(bytes(image.getpalette() or ()))
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageSpan:
    """Where one image's placeholder tokens sit in a prompt, and which image (at which budget) it is."""

    start: int
    end: int
    key: Any


def find_image_spans(tokens: Sequence[int], image_token_id: int, keys: Sequence[Any]) -> list[ImageSpan]:
    """The runs of image placeholder tokens in ``tokens``, in order, each with the key of its image."""
    spans: list[ImageSpan] = []
    index, length = 0, len(tokens)
    while index < length:
        if tokens[index] != image_token_id:
            index += 1
            continue
        start = index
        while index < length and tokens[index] == image_token_id:
            index += 1
        if len(spans) >= len(keys):
            raise ValueError(f"The prompt holds more image placeholders than the {len(keys)} images given.")
        spans.append(ImageSpan(start, index, keys[len(spans)]))
    if len(spans) != len(keys):
        raise ValueError(f"The prompt holds {len(spans)} image placeholders for {len(keys)} images.")
    return spans


class _BoundedLRU:
    """An LRU map whose values have a size in bytes; the total stays under ``max_bytes``.

    Not ``cachetools.LRUCache(getsizeof=...)``: its bound cannot change once made (a runtime's cache limits
    do), it lists entries in insertion order rather than by use (``PrefixCache`` evicts and breaks ties by
    use), and it raises on an entry larger than the whole bound (which is here simply not kept)."""

    def __init__(self, max_bytes: int, size_of: Callable[[Any], int]):
        self.max_bytes = max(0, int(max_bytes))
        self._size_of = size_of
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Any, value: Any) -> None:
        size = self._size_of(value)
        with self._lock:
            self._remove(key)
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._remove(next(iter(self._items)))

    def resize(self, max_bytes: int) -> None:
        """A new bound; what no longer fits is evicted, oldest first."""
        with self._lock:
            self.max_bytes = max(0, int(max_bytes))
            while self._bytes > self.max_bytes:
                self._remove(next(iter(self._items)))

    def remove(self, key: Any) -> None:
        with self._lock:
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def items(self) -> list[tuple[Any, Any]]:
        with self._lock:
            return [(key, value) for key, (value, _) in self._items.items()]

    def _remove(self, key: Any) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]


def held_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of memory ``value`` keeps alive: the whole buffer behind each tensor or array (a view keeps all
    of its base), counted once, looking into lists, tuples, dicts and KV caches (``layers`` of keys and
    values); an ``array.array`` by its buffer."""
    seen = set() if seen is None else seen
    if isinstance(value, np.ndarray):
        root = value
        while isinstance(root.base, np.ndarray):
            root = root.base
        address = root.__array_interface__["data"][0]
        if address in seen:
            return 0
        seen.add(address)
        return int(root.nbytes)
    if hasattr(value, "untyped_storage"):  # a torch tensor
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return int(storage.nbytes())
    if isinstance(value, array.array):
        return value.itemsize * len(value)
    if isinstance(value, dict):
        return sum(held_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(held_bytes(v, seen) for v in value)
    if hasattr(value, "layers"):
        return sum(held_bytes(layer.keys, seen) + held_bytes(layer.values, seen) for layer in value.layers)
    return 0


def compact(value: Any) -> Any:
    """``value`` with every view replaced by a copy of just its data, so that keeping it keeps no more than
    it shows (a slice of a prompt's KV state, a row of a batch). A KV cache's layers are compacted in place."""
    if isinstance(value, np.ndarray):
        whole = value.base is None and value.flags.c_contiguous
        return value if whole else np.array(value, order="C", copy=True)
    if hasattr(value, "untyped_storage"):
        whole = value.untyped_storage().nbytes() == value.nbytes and value.is_contiguous()
        return value if whole else value.contiguous().clone()
    if isinstance(value, tuple):
        return tuple(compact(v) for v in value)
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    if hasattr(value, "layers"):
        for layer in value.layers:
            layer.keys, layer.values = compact(layer.keys), compact(layer.values)
    return value


class VisionCache(_BoundedLRU):
    """Vision-tower outputs per image, at most ``max_mb`` megabytes of what they hold. Keys come from
    ``ImageSpan.key``."""

    def __init__(self, max_mb: float = 512):
        super().__init__(int(max_mb * 2**20), held_bytes)
        self.hits = 0
        self.misses = 0

    def put(self, key: Any, value: Any) -> None:
        super().put(key, compact(value))

    def lookup(self, key: Any) -> Any:
        value = self.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value


@dataclass
class PrefixEntry:
    """A KV cache and what it holds: the token ids and the images among them. ``nbytes`` is set by the cache:
    the memory the entry keeps alive (its KV tensors' buffers and its token ids)."""

    tokens: Sequence[int]
    spans: tuple[ImageSpan, ...]
    kv: Any
    nbytes: int = 0


class PrefixCache:
    """The KV caches of recent prompts, at most ``max_mb`` megabytes and ``max_entries`` entries.

    ``match`` finds the entry sharing the longest prefix with a new prompt. Entries are never modified:
    the engine builds a fresh KV cache from the shared part. A new entry replaces those it extends.
    """

    def __init__(self, max_mb: float = 1024, max_entries: int = 6):
        self.max_entries = max_entries
        self._lru = _BoundedLRU(int(max_mb * 2**20), lambda entry: entry.nbytes)
        self._next_id = 0

    @property
    def bytes(self) -> int:
        return self._lru.bytes

    @property
    def max_bytes(self) -> int:
        return self._lru.max_bytes

    def resize(self, max_bytes: int) -> None:
        self._lru.resize(max_bytes)

    def __len__(self) -> int:
        return len(self._lru)

    def match(self, tokens: Sequence[int], spans: Sequence[ImageSpan], limit: int) -> tuple[PrefixEntry | None, int]:
        """The entry with the longest reusable prefix of ``tokens`` and that prefix's length (at most
        ``limit``). A prefix never ends inside an image, and never covers an image the entry does not hold."""
        best, best_length = None, 0
        for entry_id, entry in self._lru.items():
            length = shared_prefix(entry.tokens, entry.spans, tokens, spans, limit)
            if length > best_length:
                best, best_length = (entry_id, entry), length
        if best is None:
            return None, 0
        self._lru.get(best[0])  # mark as recently used
        return best[1], best_length

    def add(self, entry: PrefixEntry) -> PrefixEntry:
        """Keep ``entry``; entries whose tokens and images it extends are dropped, being of no more use. The
        entry is kept compact (token ids as 4-byte integers, no view of a larger buffer) and sized by what it
        holds. Returns the entry as kept."""
        tokens = array.array("i", entry.tokens)
        kv = compact(entry.kv)
        entry = replace(entry, tokens=tokens, kv=kv, nbytes=held_bytes(tokens) + held_bytes(kv))
        for entry_id, old in self._lru.items():
            if _extends(entry, old):
                self._lru.remove(entry_id)
        self._next_id += 1
        self._lru.put(self._next_id, entry)
        while len(self._lru) > self.max_entries:
            oldest = self._lru.items()[0][0]
            self._lru.remove(oldest)
        return entry

    def discard(self, entry: PrefixEntry) -> None:
        """Forget ``entry`` (as ``add`` returned it), if it is still kept."""
        for entry_id, kept in self._lru.items():
            if kept is entry:
                self._lru.remove(entry_id)

    def clear(self) -> None:
        self._lru.clear()

    def save(self, tokens: Sequence[int], path: Path, metadata: dict[str, str] | None = None) -> bool:
        """Write the KV state of ``tokens`` (a prompt without images, held whole by an entry) to ``path``, in
        the precision it is kept in; False if no entry holds them. The file appears whole or not at all."""
        from safetensors.torch import save_file

        entry, length = self.match(tokens, (), limit=len(tokens))
        if entry is None or length < len(tokens):
            return False
        tensors, kind = _kv_tensors_to_save(entry.kv, length)
        tensors["tokens"] = _torch_tensor(np.asarray(tokens[:length], dtype=np.int32))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        save_file(tensors, str(partial), metadata={**(metadata or {}), "kv": kind})
        os.replace(partial, path)
        return True

    def load(self, path: Path) -> int:
        """Keep the prefix saved in ``path`` (by ``save``); returns its length in tokens."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as saved:
            kind = (saved.metadata() or {}).get("kv")
            tensors = {name: saved.get_tensor(name) for name in saved.keys()}
        tokens = tensors.pop("tokens").tolist()
        count = len(tensors) // 2 if kind == "layers" else len(tensors)
        if kind == "layers":
            kv: Any = KeptKV([KeptLayer(tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(count)])
        elif kind == "states":
            kv = [tensors[f"s.{i}"].numpy() for i in range(count)]
        else:
            raise ValueError(f"{path} is not a saved prompt prefix (kv={kind!r}).")
        self.add(PrefixEntry(tokens, (), kv))
        return len(tokens)


@dataclass
class KeptLayer:
    keys: Any
    values: Any


@dataclass
class KeptKV:
    """A torch KV cache as read from a file: one ``KeptLayer`` (keys and values) per layer. The torch engine
    copies what it needs out of it into a cache of its own, as from any kept entry."""

    layers: list[KeptLayer] = field(default_factory=list)


def _kv_tensors_to_save(kv: Any, length: int) -> tuple[dict[str, Any], str]:
    """The first ``length`` positions of a kept KV state as named tensors: a torch cache's layers (keys and
    values), or the OpenVINO engine's state arrays (sequence on axis 2 in both)."""
    if hasattr(kv, "layers"):
        tensors = {}
        for index, layer in enumerate(kv.layers):
            tensors[f"k.{index}"] = layer.keys[:, :, :length].contiguous()
            tensors[f"v.{index}"] = layer.values[:, :, :length].contiguous()
        return tensors, "layers"
    return {f"s.{index}": _torch_tensor(np.ascontiguousarray(state[:, :, :length])) for index, state in enumerate(kv)}, "states"


def _torch_tensor(array_: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array_)


def shared_prefix(
    old_tokens: Sequence[int], old_spans: Sequence[ImageSpan], tokens: Sequence[int], spans: Sequence[ImageSpan], limit: int
) -> int:
    """Length of the prefix two prompts share, counting an image as shared only if it is the same image."""
    most = min(len(old_tokens), len(tokens), limit)
    length = 0
    while length < most and old_tokens[length] == tokens[length]:
        length += 1
    old_by_start = {span.start: span for span in old_spans}
    for span in spans:
        if span.start >= length:
            break
        old = old_by_start.get(span.start)
        if old is None or old.key != span.key or old.end != span.end or span.end > length:
            return span.start
    return length


def _extends(new: PrefixEntry, old: PrefixEntry) -> bool:
    return len(old.tokens) <= len(new.tokens) and shared_prefix(
        new.tokens, new.spans, old.tokens, old.spans, len(old.tokens)
    ) == len(old.tokens)
