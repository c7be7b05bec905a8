"""Error types of the runtime. Each message tells the user what to do next."""


class QwenVLError(Exception):
    """Base class of every error qwenvl-agent raises on purpose."""


class ImageInputError(QwenVLError, ValueError):
    """An image could not be read: wrong type, unreadable bytes, too large, fetch refused or failed."""


class PixelLimitError(ImageInputError):
    """An image, or a PDF page as it would be rendered, has more pixels than a limit allows. Says how large
    (``width``, ``height``), the ``limit``, and for a page its number and the ``dpi`` it would be rendered at,
    so a front end can word the refusal its own way."""

    def __init__(self, message: str, *, width: int, height: int, limit: int, page: int | None = None,
                 dpi: int | None = None):
        super().__init__(message)
        self.width, self.height, self.limit, self.page, self.dpi = width, height, limit, page, dpi


class ModelNotAvailableError(QwenVLError, RuntimeError):
    """The weights are neither in a local folder nor in the cache, and cannot be downloaded."""


class BusyError(QwenVLError, RuntimeError):
    """The model is generating and the queue of waiting callers is full."""


class GenerationError(QwenVLError, RuntimeError):
    """Generation failed for a reason other than the inputs (for example out of memory)."""


class EngineError(QwenVLError, RuntimeError):
    """An inference engine cannot run: not installed, its export failed, or its model files do not fit."""


class WrongModelError(EngineError):
    """The folder holds a model of another kind than Qwen3-VL: no engine can run it, so "auto" does not try
    another one."""


class GenerationTimeout(GenerationError, TimeoutError):
    """The call's time limit ran out before the model could start (it waited for another request)."""


class GenerationCancelled(GenerationError):
    """The request was cancelled (its stream closed, its task cancelled) before the model started on it."""


class PromptTooLongError(QwenVLError, ValueError):
    """The prompt is longer than the runtime reads in one call."""


class EngineFallbackWarning(UserWarning):
    """``engine="auto"`` could not use OpenVINO and runs on torch (also logged as one line)."""


def _short(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message, cut after ``limit`` characters (a path, a URL, base64 data)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")
