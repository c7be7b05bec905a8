"""Stopping work nobody waits for: a cancel signal that follows a request into every thread it uses.

A front end opens a ``cancel_scope`` around a request; the generations under it (in tools, in worker
threads that copied the context) watch its event and stop within a token or so once it is set: when
the caller closes a stream, an asyncio task is cancelled, or the page is rerun. Scopes nest: an inner
one (a model call inside an agent run) stops when either its own event or an outer one is set.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from contextvars import ContextVar

_scopes: ContextVar[tuple[threading.Event, ...]] = ContextVar("qwenvl_cancel", default=())


class CancelSignal:
    """Set once any of the enclosing scopes' events is set."""

    def __init__(self, events: tuple[threading.Event, ...]):
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


@contextlib.contextmanager
def cancel_scope(event: threading.Event | None = None) -> Iterator[threading.Event]:
    """Within the block, generations stop once ``event`` (a new one by default) or an outer scope's is set."""
    event = event or threading.Event()
    token = _scopes.set(_scopes.get() + (event,))
    try:
        yield event
    finally:
        _scopes.reset(token)


def current() -> CancelSignal | None:
    """The cancel signal of the request this code runs for, if any."""
    events = _scopes.get()
    return CancelSignal(events) if events else None


def scoped_context(event: threading.Event) -> contextvars.Context:
    """A copy of the current context with ``event`` added to its scopes: run a generator's steps in it
    (``context.run(next, iterator)``) to give them a scope without setting and resetting a context
    variable across ``yield`` s."""
    context = contextvars.copy_context()
    context.run(_scopes.set, _scopes.get() + (event,))
    return context
