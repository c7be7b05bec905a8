"""Load Qwen3-VL once per (model, revision, engine, precision) and keep it: the engine, its processor, its
gate and its caches.

Every ``ChatQwenVL``, tool and planner that names the same model shares the one ``VLMRuntime`` returned
here, so the weights are in memory once. Loading is what takes time (download, export for OpenVINO,
reading ~4 GB); each shows progress.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

from . import registry
from .cpu import cpu_flags as _cpu_flags  # resolve_dtype reads it from here
from .cpu import cpu_has_fast_bf16, physical_cores
from .cpu import cpuinfo as _cpuinfo  # noqa: F401  (the bench imports it from here)
from .errors import EngineError, EngineFallbackWarning, ModelNotAvailableError, WrongModelError
from .choices import DTYPES, ENGINES, check_engine
from .gate import GenerationGate
from .hub import DEFAULT_MODEL, resolve_model_path
from .ir import check_model_type, is_openvino_ir
from .ir import ir_weights as _ir_weights
from .openvino_export import check_weights, ensure_exported, openvino_available
from .registry import loaded_runtimes, release_runtime
from .reuse import PrefixCache, VisionCache

log = logging.getLogger(__name__)

# The loader's public names; the CPU, hub, IR and registry ones live in modules of their own and are
# importable from here too.
__all__ = [
    "DEFAULT_MODEL", "DTYPES", "ENGINES", "VLMRuntime", "check_engine", "cpu_has_fast_bf16", "load_runtime", "loaded_runtimes",
    "physical_cores", "release_runtime", "resolve_dtype", "resolve_engine", "resolve_model_path",
]

@dataclass(eq=False)
class VLMRuntime:
    """A loaded model: its engine (torch or OpenVINO), processor, the gate that serialises generation, and
    the caches that let calls reuse each other's work."""

    engine: Any
    processor: Any
    model_id: str
    revision: str | None
    path: Path
    gate: GenerationGate
    vision_cache: VisionCache = field(default_factory=VisionCache)
    prefix_cache: PrefixCache = field(default_factory=PrefixCache)
    # The engines' extension point for steering replies; see ``logits_hook``.
    logits_hooks: list[Callable[[int], Any]] = field(default_factory=list)
    # Threads the engine computes with; fixed once the model is loaded.
    num_threads: int | None = None
    # What the model computes in, "bfloat16" or "float32" (on OpenVINO, its inference precision); set by the loader.
    precision: str = ""
    # The limits in force, each with who set it: {"vision_cache_mb": (512, None), …}.
    _limits: dict[str, tuple[float, Any]] = field(default_factory=dict, repr=False)
    _limits_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> Any:
        """The model object under ``generate`` (transformers' or optimum-intel's)."""
        return self.engine.model

    @property
    def engine_name(self) -> str:
        return self.engine.name

    @property
    def dtype(self) -> str:
        """The same as ``weights`` (what it returned before ``weights`` and ``precision`` were told apart):
        "bfloat16" or "float32" on torch, "int8" or "int4" on OpenVINO. Prefer ``weights`` for what the weights
        are stored as and ``precision`` for what the model computes in."""
        return self.weights

    def with_limits(
        self,
        max_waiting: int | None = None,
        vision_cache_mb: float | None = None,
        prefix_cache_mb: float | None = None,
        *,
        by: Any = None,
    ) -> VLMRuntime:
        """Apply the limits that are given (the others stay); returns self. A value equal to the one in force
        changes nothing (a cache is not re-bounded); a different one applies to every caller of this model
        from now on, with a warning when another caller (``by``: any identity, such as a ``ChatQwenVL``'s
        ``id``) had set it: the two disagree, and the last one wins."""
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}")
        given = {"max_waiting": max_waiting, "vision_cache_mb": vision_cache_mb, "prefix_cache_mb": prefix_cache_mb}
        with self._limits_lock:
            for name, value in given.items():
                if value is None:
                    continue
                current, setter = self._limits.get(name, (None, None))
                if current == value:
                    self._limits[name] = (value, by)
                    continue
                if name in self._limits and setter != by:
                    message = (
                        f"Two callers of the shared model {self.model_id} ({self.label}) ask for different "
                        f"{name}: {current:g} earlier, {value:g} now. The loaded model has one of these, so "
                        f"{value:g} applies to every caller from now on; give the same value to both to silence this."
                    )
                    log.warning("%s", message)
                    warnings.warn(message, RuntimeWarning, stacklevel=3)
                self._limits[name] = (value, by)
                if name == "max_waiting":
                    self.gate.max_waiting = int(value)
                else:
                    cache = self.vision_cache if name == "vision_cache_mb" else self.prefix_cache
                    cache.resize(int(value * 2**20))
        return self

    @property
    def weights(self) -> str:
        """What the weights are stored as: "int8" or "int4" on OpenVINO, "bfloat16" or "float32" on torch."""
        return self.engine.precision

    @property
    def label(self) -> str:
        """For people: "torch bfloat16", "OpenVINO int4"."""
        return f"{'OpenVINO' if self.engine_name == 'openvino' else 'torch'} {self.weights}"

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @functools.cached_property
    def opens_thinking(self) -> bool:
        """Whether the chat template opens the reply inside ``<think>`` (Qwen3-VL's Thinking models): the
        raw reply is then "reasoning…</think>\n\nanswer"."""
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], tokenize=False, add_generation_prompt=True
        )
        return prompt.rstrip().endswith("<think>")

    @contextlib.contextmanager
    def logits_hook(self, hook: Callable[[int], Any]) -> Iterator[None]:
        """Within the block, every generation of this model asks ``hook(prompt_length)`` for a logits
        processor (transformers' protocol: ``processor(input_ids, scores) -> scores``, ``input_ids`` the
        prompt and the reply so far) and runs it at each decode step, after the grammar's mask and before
        the sampling warpers; ``None`` adds nothing to that generation. Both engines honour it.

        This is how replies are forced: ``vlm.testing.scripted_replies`` (tests) and the benchmark (replies
        of set lengths through the real model) use it. A processor that forces a known token sequence can
        also have ``upcoming(step, count) -> list[int]`` (the tokens it forces at reply positions ``step``
        onwards): jump-forward then feeds what it and the grammar agree on in one pass, and where the grammar
        would refuse a forced token the grammar steps aside for the rest of that reply.
        Hooks live in ``logits_hooks``, in the order they were added."""
        self.logits_hooks.append(hook)
        try:
            yield
        finally:
            self.logits_hooks.remove(hook)

    def stream(self, prompt, settings):
        """Yield the reply as it is generated; see ``generation.stream``."""
        from .generation import stream

        return stream(self, prompt, settings)

    def warm_prefix(self, messages: list[dict], tools: list[dict] | None = None):
        """Have the KV state of ``messages`` with ``tools`` (a planner's system prompt and tool schemas) ready for
        the prompts that start with them, from memory, the cache folder or computed now; see ``warm.warm_prefix``."""
        from .warm import warm_prefix

        return warm_prefix(self, messages, tools)

    def prepare_grammars(self) -> None:
        """Build the grammar's view of the tokenizer (~2 s once per process) now, not in the first constrained reply."""
        from .grammar_match import prepare_environment
        from .run import grammar_widths
        prepare_environment(self.tokenizer, **grammar_widths(self))


def load_runtime(
    model: str | os.PathLike = DEFAULT_MODEL,
    revision: str | None = None,
    dtype: str = "auto",
    *,
    engine: str = "auto",
    weights: str = "int8",
    num_threads: int | None = None,
    max_waiting: int | None = None,
    vision_cache_mb: float | None = None,
    prefix_cache_mb: float | None = None,
) -> VLMRuntime:
    """Return the runtime for ``model`` (hub id or local folder), loading it on first use.

    ``engine``: "torch", "openvino" (exported once into a cache folder; a folder holding an IR loads as it is) or
    "auto" (OpenVINO where it is installed, else torch; if OpenVINO fails, torch with a warning). ``weights``:
    "int8" (closest to the original) or "int4" (fastest), OpenVINO only. ``dtype``: "auto" (bfloat16 where the CPU
    has AMX-BF16 or AVX512-BF16, else float32), "bfloat16" or "float32"; on OpenVINO the precision of the
    computation, "auto" keeping the language model in float32 (``ov_load.LANGUAGE_MODEL_AUTO``).
    ``num_threads``: threads, all physical cores by default; fixed once the model is loaded (a different value
    later is a ``ValueError``). ``max_waiting`` (callers that may queue behind a running generation before
    ``BusyError``; default 3), ``vision_cache_mb`` and ``prefix_cache_mb`` (memory for the vision-feature cache and
    for the KV caches of recent prompts; default 512 and 1024) belong to the loaded copy, which every caller shares:
    when given and different from the values in force, they apply to it from now on (a smaller cache evicts what no
    longer fits), with a warning if another caller had set them otherwise.
    """
    resolved_engine = resolve_engine(engine)
    resolved_dtype = resolve_dtype(dtype)
    check_weights(weights)  # a typo is an error on every engine
    model_ref = str(model)
    stored = weights if resolved_engine == "openvino" else resolved_dtype  # what the weights are stored as
    language = "auto" if resolved_engine == "openvino" and str(dtype).lower() == "auto" else resolved_dtype  # see above
    key = (_cache_key_model(model_ref), revision, resolved_engine, stored, resolved_dtype, language)
    fell_back = ("fell back to torch", *key)  # where "auto" settled on torch after OpenVINO failed
    limits = {"max_waiting": max_waiting, "vision_cache_mb": vision_cache_mb, "prefix_cache_mb": prefix_cache_mb}
    # Where "auto" fell back to torch once, that copy serves it from then on.
    keys = (fell_back, key) if engine == "auto" else (key,)
    loaded = registry.find(*keys)
    if loaded is not None:
        return _reuse(loaded, num_threads, limits)
    with registry.key_lock(key):  # two first callers must not load the same weights twice
        loaded = registry.find(key, *keys)
        if loaded is not None:
            return _reuse(loaded, num_threads, limits)
        options = _Options(
            resolved_dtype, language, weights, num_threads,
            3 if max_waiting is None else max_waiting,
            512 if vision_cache_mb is None else vision_cache_mb,
            1024 if prefix_cache_mb is None else prefix_cache_mb,
        )
        try:
            runtime = _load(model_ref, revision, resolved_engine, options).with_limits(**limits)
        except EngineError as exc:
            if engine != "auto" or resolved_engine != "openvino" or isinstance(exc, WrongModelError):
                raise
            message = f"The OpenVINO engine is not available, using torch: {str(exc).splitlines()[0]}"
            log.warning("%s", message)
            warnings.warn(message, EngineFallbackWarning, stacklevel=2)
            runtime = load_runtime(model, revision, dtype, engine="torch", num_threads=num_threads, **limits)
            key = fell_back
        registry.remember(key, runtime)
    return runtime


def _reuse(runtime: VLMRuntime, num_threads: int | None, limits: dict[str, Any]) -> VLMRuntime:
    """The loaded ``runtime`` for a later caller: its threads cannot change (OpenVINO fixes them when it compiles
    the model, and torch's setting is the whole process's), its limits can."""
    if num_threads is not None and num_threads != runtime.num_threads:
        raise ValueError(
            f"num_threads={num_threads} cannot apply: {runtime.model_id} is already loaded ({runtime.label}) and "
            f"computes with {runtime.num_threads} threads, which every caller of it shares. Leave num_threads unset "
            f"(or give {runtime.num_threads}), or release the loaded model first "
            "(qwenvl_agent.vlm.runtime.release_runtime)."
        )
    return runtime.with_limits(**limits)


def resolve_engine(engine: str) -> str:
    """Turn "auto" into "openvino" where OpenVINO is installed, else "torch"; validate the others."""
    name = check_engine(engine)
    if name == "auto":
        return "openvino" if openvino_available() else "torch"
    return name


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
        return "bfloat16" if cpu_has_fast_bf16(_cpu_flags()) else "float32"
    return name


@dataclass(frozen=True)
class _Options:
    dtype: str
    language_dtype: str  # "auto": the OpenVINO engine's own choice for its language model
    weights: str
    num_threads: int | None
    max_waiting: int
    vision_cache_mb: float
    prefix_cache_mb: float


def _load(model_ref: str, revision: str | None, engine: str, options: _Options) -> VLMRuntime:
    import torch

    path = resolve_model_path(model_ref, revision)
    threads = options.num_threads or physical_cores()
    torch.set_num_threads(threads)
    if engine == "openvino":
        runtime = _load_openvino(model_ref, revision, path, options)
    else:
        runtime = _load_torch(model_ref, revision, path, options)
    runtime.num_threads = runtime.num_threads or threads
    _warm_up(runtime)
    return runtime


def _warm_up(runtime: VLMRuntime) -> None:
    """One tiny generation before the runtime is handed out. An engine's first inference prepares its
    kernels (OpenVINO: seconds for the 2B model, even with its compiled-model cache), which would
    otherwise make the user's first question the slowest."""
    import torch
    from PIL import Image

    from .generation import GenerationSettings, Prompt, StepTimes, build_inputs

    prompt = Prompt(
        messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hello"}]}],
        images=[Image.new("RGB", (64, 64), "white")],
    )
    settings = GenerationSettings(max_new_tokens=2, max_image_tokens=16, cache_images=False, reuse_prefix=False)
    inputs, spans = build_inputs(runtime, prompt, settings)
    with torch.inference_mode():
        runtime.engine.generate(inputs, spans, settings, {"max_new_tokens": 2, "do_sample": False}, StepTimes())


def _load_torch(model_ref: str, revision: str | None, path: Path, options: _Options) -> VLMRuntime:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .engine_torch import TorchEngine

    if is_openvino_ir(path) and not any(path.glob("*.safetensors")):
        check_model_type(path)  # an IR of another model is named as such first
        raise EngineError(
            f"{path} holds an OpenVINO IR, which the torch engine cannot run: use engine='openvino' (with "
            "pip install 'qwenvl-agent[openvino]'), or give the original checkpoint."
        )
    log.info("Loading %s (torch, %s) from %s", model_ref, options.dtype, path)
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=getattr(torch, options.dtype), attn_implementation="sdpa"
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailableError(f"Could not load a Qwen3-VL checkpoint from {path}: {exc}") from exc
    model.eval()
    return _runtime(lambda caches: TorchEngine(model, *caches), processor, model_ref, revision, path, options)


def _load_openvino(model_ref: str, revision: str | None, path: Path, options: _Options) -> VLMRuntime:
    from transformers import AutoProcessor

    from .engine_openvino import OpenVINOEngine
    from .ov_load import load_openvino_model
    from .openvino_export import require_openvino

    if is_openvino_ir(path):
        check_model_type(path)
    require_openvino()
    ir_path = path if is_openvino_ir(path) else ensure_exported(path, options.weights)
    log.info("Loading %s (OpenVINO, %s weights) from %s", model_ref, options.weights, ir_path)
    processor_path = ir_path if (ir_path / "preprocessor_config.json").is_file() else path
    try:
        processor = AutoProcessor.from_pretrained(processor_path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailableError(f"Could not load the processor of {model_ref} from {processor_path}: {exc}") from exc
    weights = _ir_weights(ir_path, options.weights)
    model = load_openvino_model(ir_path, options.dtype, options.num_threads, options.language_dtype)
    threads = int(model.language_model.request.get_compiled_model().get_property("INFERENCE_NUM_THREADS"))
    return _runtime(
        lambda caches: OpenVINOEngine(model, *caches, weights), processor, model_ref, revision, ir_path, options,
        num_threads=threads or None,  # as OpenVINO chose them where none were asked for
    )


def _runtime(
    make_engine: Callable[[tuple[VisionCache, PrefixCache]], Any], processor: Any, model_ref: str,
    revision: str | None, path: Path, options: _Options, num_threads: int | None = None,
) -> VLMRuntime:
    """A loaded model's runtime: its caches (sized by ``options``), the engine ``make_engine`` builds over
    them, its gate, and the precision it computes in."""
    caches = (VisionCache(options.vision_cache_mb), PrefixCache(options.prefix_cache_mb))
    return VLMRuntime(
        engine=make_engine(caches),
        processor=processor,
        model_id=model_ref,
        revision=revision,
        path=path,
        gate=GenerationGate(max_waiting=options.max_waiting),
        vision_cache=caches[0],
        prefix_cache=caches[1],
        precision=options.dtype,
        num_threads=num_threads,
    )
