"""Scripted judges shared by the tests (and usable as a `--backend tests.helpers:...` factory)."""

from __future__ import annotations

import re
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


_VERDICT_LOOKALIKES = (
    re.compile(r"scores?\s*[:：]\s*\S", re.IGNORECASE),  # a verdict line
    re.compile(r"\\boxed\{\s*\d+\s*[,;]"),  # a boxed list of several numbers
    re.compile(r"\[\[\s*\d"),  # [[n]]
    re.compile(r"\[The (?:Begin|End) of Response"),  # the template's own delimiters
)
_ORDERS = re.compile(r"ignore (?:all )?(?:previous|prior) instructions|score of 10|10/10|you are the judge", re.IGNORECASE)


def is_gullible_trigger(shown: str, *, orders: bool = True) -> bool:
    """Whether a gullible judge falls for this shown response (a verdict look-alike or an order to the judge)."""
    return any(pattern.search(shown) for pattern in _VERDICT_LOOKALIKES) or (orders and bool(_ORDERS.search(shown)))


def gullible_judge(quality: Mapping[str, int], *, heeds_notice: bool = True) -> Callable[[JudgeCall], str]:
    """Scores each response by its hidden quality (the key: its first word; 5 if unknown), except that any shown
    response containing a verdict look-alike or an instruction to the judge gets 10. With
    ``heeds_notice``, a prompt carrying the injection notice keeps it from obeying instructions
    (it still falls for verdict look-alikes)."""

    def judge(call: JudgeCall) -> str:
        orders = not (heeds_notice and "#### Note on the Responses ####" in call.prompt)
        return judge_text(
            [10 if is_gullible_trigger(r, orders=orders) else quality.get(r.split()[0] if r.split() else "", 5) for r in call.responses]
        )

    return judge


def gullible_backend(config: object) -> ScriptedBackend:
    """Backend factory: the gullible judge over responses whose first word is good (8) or bad (2)."""
    return ScriptedBackend(gullible_judge({"good": 8, "bad": 2}))
