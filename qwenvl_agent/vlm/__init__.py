"""The model runtime: load Qwen3-VL on the CPU, bound image tokens, generate, and ChatQwenVL over it."""

from .chat_model import ChatQwenVL
from .constrain import ConstraintError
from .errors import (
    BusyError,
    EngineError,
    EngineFallbackWarning,
    GenerationCancelled,
    GenerationError,
    GenerationTimeout,
    ImageInputError,
    ModelNotAvailableError,
    PixelLimitError,
    PromptTooLongError,
    QwenVLError,
    WrongModelError,
)
from .generation import GenerationSettings, GenerationStats, Prompt
from .images import load_image
from .runtime import DEFAULT_MODEL, VLMRuntime, load_runtime, resolve_dtype
from .tool_calls import parse_tool_calls

__all__ = [
    "DEFAULT_MODEL",
    "BusyError",
    "EngineError",
    "EngineFallbackWarning",
    "ChatQwenVL",
    "ConstraintError",
    "GenerationCancelled",
    "GenerationError",
    "GenerationTimeout",
    "GenerationSettings",
    "GenerationStats",
    "ImageInputError",
    "ModelNotAvailableError",
    "PixelLimitError",
    "Prompt",
    "PromptTooLongError",
    "QwenVLError",
    "VLMRuntime",
    "WrongModelError",
    "load_image",
    "load_runtime",
    "parse_tool_calls",
    "resolve_dtype",
]
