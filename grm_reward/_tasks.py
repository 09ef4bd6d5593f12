"""Task helpers for the async core."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["gather_cancelling"]


async def gather_cancelling(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Await all, results in order; when one fails, cancel the others and raise its error.

    Unlike ``asyncio.gather`` it does not leave siblings running after a failure, and it cancels
    them when the caller itself is cancelled.
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:  # also when the caller was cancelled: no failure is left "never retrieved"
            if task.done() and not task.cancelled():
                task.exception()
    # Retrieve every failure (so none is reported as never retrieved), raise the first in order.
    errors = [task.exception() for task in tasks if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error
    return [task.result() for task in tasks]
