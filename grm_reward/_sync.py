"""Run the async core from sync code: one private event loop in a daemon thread.

A persistent loop (rather than ``asyncio.run`` per call) lets backends keep loop-bound
resources such as HTTP connection pools between calls, and works when the caller is itself
inside a running loop (Jupyter, an async framework calling sync code).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["LoopThread", "prestart_worker_threads", "run_cpu"]

_cpu_executor: ThreadPoolExecutor | None = None
_cpu_lock = threading.Lock()


async def run_cpu(func: Callable[..., T], /, *args: Any) -> T:
    """Run CPU-bound Python work (decoding, splitting, planning, encoding a huge request) off the
    event loop, in the one CPU thread of this process, with the caller's context (its deadline).

    Under the GIL more threads add no throughput, only competitors for the loop's next turn: with
    six such threads a server's ``/health`` waited up to 0.6 s for the GIL (measured); with one, the
    loop gets it back within a switch interval. Blocking I/O and torch (which releases the GIL)
    keep ``asyncio.to_thread``.
    """
    global _cpu_executor
    if _cpu_executor is None:
        with _cpu_lock:
            if _cpu_executor is None:
                _cpu_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grm-cpu")
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_cpu_executor, functools.partial(context.run, func, *args))


async def prestart_worker_threads(workers: int | None = None) -> int:
    """Give the running loop a default executor whose threads are all started now, and start the
    CPU thread of :func:`run_cpu`; returns how many worker threads.

    ``asyncio.to_thread`` starts executor threads lazily, and the loop waits for each new thread to
    run: while other threads hold the GIL with CPU work (a huge request being decoded and planned),
    that wait froze a server's loop, its ``/health`` included, for 0.8 s (measured). Started at
    start-up, the threads are there before any such request.
    """
    loop = asyncio.get_running_loop()
    workers = workers or min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's own default
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grm-worker"))
    barrier = threading.Barrier(workers)  # every task waits for all: each needs a thread of its own
    await asyncio.gather(*(loop.run_in_executor(None, barrier.wait, 10.0) for _ in range(workers)))
    await run_cpu(int)  # and the CPU thread
    return workers


class LoopThread:
    """A lazily started event loop running in its own daemon thread."""

    def __init__(self, name: str = "grm-reward-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (exceptions propagate)."""
        if self._thread is not None and threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync grm-reward call was made from its own event loop; await the async method instead")
        loop = self._ensure_started()
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            if loop.is_running() and threading.current_thread() is not thread:  # as asyncio.run: close async generators (HTTP sessions)
                with contextlib.suppress(Exception):  # best effort: the loop is stopped below anyway
                    asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
