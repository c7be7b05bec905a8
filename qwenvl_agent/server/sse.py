"""Server-sent events: one event's text, the closing ``[DONE]``, and a stream that frees its request's place."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

DONE = "data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def releasing(stream: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """``stream``, releasing the request's place when it ends, fails, is closed, or is dropped unstarted (a
    client that left before the first byte)."""

    async def body() -> AsyncIterator[str]:
        try:
            async for item in stream:
                yield item
        finally:
            release()

    wrapped = body()
    weakref.finalize(wrapped, release)
    return wrapped
