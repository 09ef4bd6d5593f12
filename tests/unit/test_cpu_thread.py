"""CPU-bound work off the event loop runs in one thread (grm_reward._sync.run_cpu)."""

from __future__ import annotations

import asyncio
import threading

from grm_reward._sync import prestart_worker_threads, run_cpu
from grm_reward.deadlines import deadline_scope, remaining


def test_cpu_work_runs_in_one_thread_off_the_loop_with_the_callers_deadline() -> None:
    async def main() -> tuple[int, set[int], float | None]:
        loop_thread = threading.get_ident()
        with deadline_scope(30.0):
            results = await asyncio.gather(*(run_cpu(lambda: (threading.get_ident(), remaining())) for _ in range(8)))
        return loop_thread, {ident for ident, _ in results}, min(left for _, left in results if left is not None)

    loop_thread, threads, left = asyncio.run(main())
    # one thread for every call (more threads only compete with the loop for the GIL), never the loop's
    assert len(threads) == 1 and loop_thread not in threads
    assert left is not None and 0 < left <= 30.0  # the deadline scope travelled with the work


def test_prestart_starts_every_worker_thread_before_the_first_request() -> None:
    async def main() -> tuple[int, int]:
        before = threading.active_count()
        workers = await prestart_worker_threads(4)
        return workers, threading.active_count() - before

    workers, started = asyncio.run(main())
    assert workers == 4 and started >= 4  # (asyncio.run shuts the pool down afterwards)
