"""Scripted judges shared by the tests (and usable as a `--backend tests.helpers:...` factory)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from grm_reward import GenerativeRewardModel
from grm_reward.backends.scripted import FillCall, JudgeCall, ScriptedBackend


def judge_text(scores: list[int], analysis: str = "Compared the responses.") -> str:
    return (
        "Specific Criteria: 1. Accuracy (Weight: 60%) 2. Clarity (Weight: 40%)\n"
        f"Analysis: {analysis}\n"
        f"Scores: \\boxed{{{', '.join(map(str, scores))}}}"
    )


def quality_judge(quality: Mapping[str, int]) -> Callable[[JudgeCall], str]:
    """Scores each shown response by its hidden quality, whatever position it is shown in."""

    def judge(call: JudgeCall) -> str:
        return judge_text([quality[r] for r in call.responses], analysis=f"{len(call.responses)} responses.")

    return judge


def length_judge(call: JudgeCall) -> str:
    """Longer is better (1..10), whatever the position."""
    return judge_text([max(1, min(10, len(r) // 4)) for r in call.responses])


def position_biased_judge(call: JudgeCall) -> str:
    """Always prefers whatever is shown first: 9 for position 1, 3 for the others."""
    return judge_text([9] + [3] * (len(call.responses) - 1))


def middle_fill(call: FillCall) -> tuple[list[int], list[float]]:
    lo, hi = call.score_range
    mid = (lo + hi) // 2
    return [mid] * call.num_scores, [mid + 0.25] * call.num_scores


def length_backend(config: object) -> ScriptedBackend:
    """Backend factory for CLI tests: `--backend tests.helpers:length_backend`."""
    return ScriptedBackend(length_judge, fill=middle_fill)


def silent_backend(config: object) -> ScriptedBackend:
    """A judge that never writes a score block (with a fill, so the format guarantee can work)."""
    return ScriptedBackend(["I think both are nice."], fill=middle_fill)


# --- evaluation harness ------------------------------------------------------------------------

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
    """Backend factory for eval CLI tests: `--backend tests.helpers:noisy_quality_backend`."""
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
