"""Deadlines: how long the caller of a scoring call is still willing to wait.

The edge that knows (the server's ``request_timeout_s``, a trainer step, the CLI) opens a
:func:`deadline_scope`; the layers below read :func:`remaining` to size timeouts and stop
retrying once the time is spent. A context variable carries it through tasks without new
parameters; nested scopes only ever shorten it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_deadline", "deadline_at", "deadline_scope", "remaining"]

# Absolute time on the time.monotonic() clock, or None (no deadline).
_DEADLINE: ContextVar[float | None] = ContextVar("grm_reward_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline in force (``time.monotonic()`` clock), or None."""
    return _DEADLINE.get()


def remaining() -> float | None:
    """Seconds left before the deadline in force (at least 0), or None when there is none.

    >>> remaining() is None
    True
    >>> with deadline_scope(60):
    ...     0 < remaining() <= 60
    True
    """
    deadline = _DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@contextmanager
def deadline_at(deadline: float | None) -> Iterator[float | None]:
    """Run the block under an absolute deadline (``time.monotonic()``); the earlier one wins.

    ``None`` keeps the deadline in force. Yields the deadline now in force.
    """
    outer = _DEADLINE.get()
    effective = deadline if outer is None else (outer if deadline is None else min(outer, deadline))
    token = _DEADLINE.set(effective)
    try:
        yield effective
    finally:
        _DEADLINE.reset(token)


@contextmanager
def deadline_scope(seconds: float | None) -> Iterator[float | None]:
    """Run the block with at most ``seconds`` more to go (``None``: no new limit).

    >>> with deadline_scope(10), deadline_scope(100):
    ...     remaining() <= 10
    True
    """
    with deadline_at(None if seconds is None else time.monotonic() + seconds) as effective:
        yield effective
