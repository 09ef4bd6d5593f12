"""A judge double for the Ray fleet's tests and benchmark, and a local Ray cluster that cleans up.

``SlowJudge`` stands in for one engine: each prompt costs a fixed latency and the replica judges
one prompt at a time (a lock), so throughput scales only with replicas. Its text names the
process and how many responses it was shown, so tests see which replica judged what.
Replicas load it through ``backend: tests.ray_support:slow_judge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from grm_reward.backends import GenerationOutput, GenerationRequest, ScriptedBackend
from grm_reward.backends.scripted import JudgeCall

ROOT = Path(__file__).resolve().parents[1]
#: Seconds one prompt costs the double (read in each replica's process).
LATENCY_ENV = "GRM_TEST_JUDGE_LATENCY"


def seeded_judge(call: JudgeCall) -> str:
    """Scores from the response text and the sample's seed only (same seed, same scores anywhere)."""
    scores = [1 + zlib.crc32(f"{call.seed}:{r}".encode()) % 10 for r in call.responses]
    return (
        f"judge pid={os.getpid()} shown={len(call.responses)}\n"
        f"Analysis: compared.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"
    )


class SlowJudge(ScriptedBackend):
    """One call at a time, ``latency`` seconds per prompt."""

    def __init__(self, latency: float) -> None:
        super().__init__(seeded_judge, record=False)
        self.latency = latency
        self._lock: asyncio.Lock | None = None

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await asyncio.sleep(self.latency * len(requests))
            return await super().generate(requests)


def slow_judge(config: Any) -> SlowJudge:
    return SlowJudge(float(os.environ.get(LATENCY_ENV, "0.1")))


@contextlib.contextmanager
def local_ray(num_cpus: int = 4, latency: float = 0.1) -> Iterator[None]:
    """A private local Ray cluster (no dashboard, loopback, auth off) that is shut down on exit."""
    import ray
    from ray import serve

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a head started here, joined only over loopback
    ray.init(
        num_cpus=num_cpus, include_dashboard=False, namespace="grm_reward", log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), LATENCY_ENV: str(latency), "RAY_AUTH_MODE": "disabled"}},
    )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
