"""What ``ChatQwenVL``'s fields mean beyond their types: which arguments exist (a typo is an error that names
it), which values the engine, weights and dtype may take, which fields decide a reply (LangChain's cache key
and LangSmith's parameters), and how an instance's limits reach the loaded model it shares."""

from __future__ import annotations

import difflib
import weakref
from typing import Any

from langchain_core.language_models import LangSmithParams

from .choices import check_engine
from .openvino_export import check_weights
from .runtime import VLMRuntime, resolve_dtype

# The fields that decide what a reply says (not how fast it comes or what may be read to make it).
REPLY_SETTINGS = (
    "model", "revision", "engine", "weights", "dtype", "max_tokens", "temperature", "top_p", "top_k", "sampling",
    "repetition_penalty", "seed", "repetition_guard", "stop", "max_image_tokens", "min_image_tokens", "constrain",
)
# The fields of the loaded model (shared by every instance of it) that an instance sets.
LIMITS = ("max_waiting", "vision_cache_mb", "prefix_cache_mb")


def refuse_unknown_arguments(model_fields: dict[str, Any], values: Any) -> Any:
    """``values`` if every name in it is a field or a field's alias; else a ``ValueError`` naming the unknown
    ones, each with the closest known name. A typo (or an argument of another version) must not quietly run
    something else."""
    if isinstance(values, dict):
        known = set(model_fields) | {f.alias for f in model_fields.values() if f.alias}
        unknown = [name for name in values if name not in known]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"ChatQwenVL got unknown argument{'s' if len(hints) > 1 else ''}: {', '.join(hints)}.")
    return values


def check_choice(field: str, value: str) -> str:
    """``value`` of the field ``engine``, ``weights`` or ``dtype`` if it is one it may take, else a
    ``ValueError`` saying which it may. A dtype of "auto" stays "auto" until the model loads."""
    if field == "engine":
        return check_engine(value)
    if field == "weights":
        return check_weights(value)
    resolve_dtype(value)  # refuses what it does not know
    return value


def identifying_params(fields: Any) -> dict[str, Any]:
    """Every setting that can change a reply: LangChain's cache keys its answers by these."""
    params = {name: getattr(fields, name) for name in REPLY_SETTINGS}
    params["stop_sequences"] = params.pop("stop")  # LangChain puts a call's own ``stop`` under "stop"
    return params


def ls_params(fields: Any, stop: list[str] | None, kwargs: dict[str, Any]) -> LangSmithParams:
    """LangSmith's parameters of one call: the fields, overridden by the call's own."""
    params = LangSmithParams(
        ls_provider="qwenvl",
        ls_model_name=kwargs.get("model", fields.model),
        ls_model_type="chat",
        ls_temperature=kwargs.get("temperature", fields.temperature),
        ls_max_tokens=kwargs.get("max_tokens", fields.max_tokens),
    )
    if stop or fields.stop:
        params["ls_stop"] = stop or fields.stop
    return params


def apply_limits(fields: Any, runtime: VLMRuntime, applied: weakref.WeakKeyDictionary) -> None:
    """Give ``runtime`` the limits of ``fields`` (an instance), unless ``applied`` (what this instance last gave
    each runtime) says it has them. Once, and again only when they change: applied on every call, two instances
    that disagree would flip them back and forth (a smaller cache evicting each time)."""
    limits = {name: getattr(fields, name) for name in LIMITS}
    if applied.get(runtime) != limits:
        runtime.with_limits(**limits, by=id(fields))
        applied[runtime] = limits
