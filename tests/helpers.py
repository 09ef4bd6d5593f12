"""Scripted judges shared by the tests (and usable as a `--backend tests.helpers:...` factory)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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


def checksum_score(response: str, score_range: tuple[int, int] = (1, 10)) -> int:
    """A score that depends only on the response text (not its position): varied and repeatable."""
    lo, hi = score_range
    return lo + sum(map(ord, response)) % (hi - lo + 1)


def checksum_judge(call: JudgeCall) -> str:
    """Scores each shown response by :func:`checksum_score`; refuses prompts containing UNJUDGEABLE."""
    if "UNJUDGEABLE" in call.prompt:
        return "I cannot judge this conversation."
    return judge_text([checksum_score(r) for r in call.responses], analysis=f"Checked {len(call.responses)}.")


def checksum_backend(config: object) -> ScriptedBackend:
    """Backend factory for adapter tests (TRL trainer, verl reward workers): `tests.helpers:checksum_backend`."""
    return ScriptedBackend(checksum_judge)


def stuck_backend(config: object) -> ScriptedBackend:
    """A judge that takes a minute per call: for shutdown and timeout tests."""
    return ScriptedBackend(length_judge, delay=60.0)
