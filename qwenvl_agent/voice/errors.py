"""The voice layer's error type. Missing models reuse the runtime's ``ModelNotAvailableError``, missing
engines its ``EngineError``."""

from ..vlm.errors import QwenVLError


class AudioInputError(QwenVLError, ValueError):
    """Audio could not be used: empty, silent, corrupt, not audio, or longer than the limit."""
