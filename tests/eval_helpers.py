"""Scripted judges and reward models shared by the evaluation-harness tests
(`--backend tests.eval_helpers:noisy_quality_backend` for the CLI)."""

from __future__ import annotations

from collections.abc import Callable

from grm_reward import GenerativeRewardModel
from grm_reward.backends.scripted import JudgeCall, ScriptedBackend
from tests.helpers import judge_text


def marked(text: str, quality: int) -> str:
    """A response whose hidden quality a scripted judge can read: ``[q=7] text``."""
    return f"[q={quality}] {text}"


def _marked_quality(response: str) -> int:
    if response.startswith("[q="):
        return int(response[3 : response.index("]")])
    return 5


def noisy_quality_judge(noise: int = 3) -> Callable[[JudgeCall], str]:
    """Scores each response by its ``[q=N]`` mark plus seeded noise in [-noise, noise]: one sample is
    often wrong, the vote of many is usually right."""

    def judge(call: JudgeCall) -> str:
        rng = call.rng
        scores = [max(1, min(10, _marked_quality(r) + rng.randint(-noise, noise))) for r in call.responses]
        return judge_text(scores)

    return judge


def noisy_quality_backend(config: object) -> ScriptedBackend:
    """Backend factory for eval CLI tests: `--backend tests.eval_helpers:noisy_quality_backend`."""
    return ScriptedBackend(noisy_quality_judge())


class CountingScorer:
    """A reward model over a scripted judge that counts the requests it scores."""

    def __init__(self, k: int = 4, judge=None, **config) -> None:
        self.backend = ScriptedBackend(judge or noisy_quality_judge())
        self.rm = GenerativeRewardModel(backend=self.backend, k=k, **config)
        self.requests = 0
        self.calls = 0

    async def ascore_batch(self, requests):
        self.calls += 1
        self.requests += len(requests)
        return await self.rm.ascore_batch(requests)
