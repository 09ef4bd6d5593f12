"""Chunk, then retry one by one: the one helper for "score these together; if that fails, alone".

The batcher, the eval runner and the SPCT builder score members (requests, items) in chunks. When a
chunk fails, each member is scored alone, so only the member at fault gets the error. Errors of the
whole run (:data:`RUN_ERRORS`) and cancellation are never retried one by one. docs/architecture.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from grm_reward.errors import (
    BackendCapabilityError,
    BackendUnavailableError,
    ConfigError,
    DeadlineExceededError,
    JudgeUnavailableError,
    TemplateError,
)

__all__ = ["RUN_ERRORS", "ascore_chunk", "raise_run_error", "score_chunk"]

M = TypeVar("M")
R = TypeVar("R")

#: Errors that are nobody's fault in particular: a deadline passed, the judge's circuit is open, the
#: backend is missing or cannot do what is asked, a setting or template is wrong. Scoring members one
#: by one cannot help (it would only multiply calls), so they propagate. Every other ``Exception``
#: (a bad input, a failed or malformed generation, a backend bug on one input) is a member's own.
RUN_ERRORS: tuple[type[Exception], ...] = (
    DeadlineExceededError,
    JudgeUnavailableError,
    BackendUnavailableError,
    BackendCapabilityError,
    ConfigError,
    TemplateError,
)

OnRetry = Callable[[Exception], None]


async def ascore_chunk(
    score: Callable[[list[M]], Awaitable[Sequence[R]]], members: Sequence[M], *, on_retry: OnRetry | None = None
) -> list[R | Exception]:
    """``score(members)``, one outcome per member; if it fails with a member's error (not in
    :data:`RUN_ERRORS`), each member is scored alone, concurrently, and gets its own result or error.

    ``score`` must return one result per member, in order. A run error from the whole chunk is
    raised; one from a member's own call is that member's outcome. ``on_retry`` hears the chunk's error.
    """
    try:
        return list(await score(list(members)))
    except Exception as exc:
        alone = _chunk_failed(exc, members, on_retry)
        if alone is not None:
            return list[R | Exception](alone)
    singles = await asyncio.gather(*(score([member]) for member in members), return_exceptions=True)
    outcomes: list[R | Exception] = []
    for single in singles:
        if isinstance(single, BaseException) and not isinstance(single, Exception):
            raise single  # cancelled (every caller gone, or shutting down)
        outcomes.append(single if isinstance(single, Exception) else single[0])
    return outcomes


def score_chunk(
    score: Callable[[list[M]], Sequence[R]], members: Sequence[M], *, on_retry: OnRetry | None = None
) -> list[R | Exception]:
    """Blocking twin of :func:`ascore_chunk` (the members' own calls run one after another)."""
    try:
        return list(score(list(members)))
    except Exception as exc:
        alone = _chunk_failed(exc, members, on_retry)
        if alone is not None:
            return list[R | Exception](alone)
    outcomes: list[R | Exception] = []
    for member in members:
        try:
            outcomes.append(score([member])[0])
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _chunk_failed(exc: Exception, members: Sequence[object], on_retry: OnRetry | None) -> list[Exception] | None:
    """A chunk's call failed with ``exc``: raise a run error, a lone member's outcome, or None: retry one by one."""
    if isinstance(exc, RUN_ERRORS):
        raise exc
    if len(members) == 1:
        return [exc]
    if on_retry is not None:
        on_retry(exc)
    return None


def raise_run_error(outcomes: Sequence[object]) -> None:
    """Raise the first :data:`RUN_ERRORS` among ``outcomes``: for callers that stop on those (eval, SPCT)."""
    for outcome in outcomes:
        if isinstance(outcome, RUN_ERRORS):
            raise outcome
