"""How many requests reach the model: one running, a few queued, the rest ``503`` at once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from qwenvl_agent.vlm.gate import busy_error


class Admission:
    """The requests this server lets at the model: one running and ``max_waiting`` queued. Counted when a
    request is let in, before its images are decoded or its response starts, so concurrent requests cannot
    all pass the check and then meet a full queue inside a streamed 200."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> Callable[[], None]:
        """Let one request in, or ``BusyError``; returns its release (which may be called more than once)."""
        with self._lock:
            if self.count >= self.limit:
                raise busy_error(self.count - 1, self.limit - 1)
            self.count += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.count -= 1

        return release

