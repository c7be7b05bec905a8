"""The names a caller may choose for a model's engine and precision, and the one check of an engine name."""

from __future__ import annotations

DTYPES = ("auto", "bfloat16", "float32")
ENGINES = ("auto", "torch", "openvino")


def check_engine(engine: str) -> str:
    """``engine`` as a name of ``ENGINES`` (any case); ``ValueError`` naming the choices otherwise. The one
    check of an engine name: ``ChatQwenVL``, ``load_runtime`` and so every front end go through it."""
    name = str(engine).lower()
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}.")
    return name
