"""What every adapter reports about a one-response result: its samples' scores and statistics.

Adapters hand the framework one result per rollout (a single-response ``RewardResult``, split
from a listwise judgement where needed); these functions turn it into loggable values, so
"invalid share" or "vote spread" mean the same thing in TRL's logs and in verl's.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from grm_reward.errors import InputError
from grm_reward.types import RewardResult

__all__ = [
    "as_principles",
    "as_reference",
    "critique",
    "fill_failed_with_group_mean",
    "mean_stats",
    "result_stats",
    "sample_scores",
]


def as_reference(value: Any) -> str | None:
    """A dataset's reference answer as request text: None, empty or blank -> None; numbers -> str.

    >>> as_reference(42), as_reference("  "), as_reference(None)
    ('42', None, None)
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def as_principles(value: Any) -> str | list[str] | None:
    """A dataset's principles (a string, or a list / numpy array of strings); empty -> None.

    >>> as_principles(["Be correct.", ""]), as_principles("")
    (['Be correct.'], None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    items = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(items, Sequence) and all(isinstance(p, str) for p in items):
        return [p for p in items if p.strip()] or None
    raise InputError(f"principles must be a string or a list of strings, got {type(value).__name__}")


def sample_scores(result: RewardResult) -> list[int | None]:
    """The score each judge sample gave the (single) response; None where the sample was invalid.

    >>> from grm_reward.types import Judgement
    >>> samples = [Judgement("", [7], [0]), Judgement("", None, [0], reason="no_score_block")]
    >>> sample_scores(RewardResult([0.67], [7.0], samples, num_voted=1, best=0, tie=False))
    [7, None]
    """
    return [None if s.scores is None else s.scores[0] for s in result.samples]


def critique(result: RewardResult) -> str:
    """The critique of the first readable sample ('' when none could be read)."""
    return next((s.critique for s in result.samples if s.valid), "")


def result_stats(result: RewardResult) -> dict[str, float]:
    """Numbers describing how the judge voted on one response.

    - ``invalid_share``: share of its judge samples whose scores could not be read;
    - ``forced_share``: share of its samples whose scores were filled under the format guarantee;
    - ``failed``: 1.0 when no sample could be read (the reward is the failure value), else 0.0;
    - ``vote_spread``: max - min of the scores its readable samples gave (0 with fewer than two),
      i.e. how much the k samples disagree;
    - ``vote``: the raw vote, the sum of those scores (the paper's S*).
    """
    total = len(result.samples) or 1
    scores = [s for s in sample_scores(result) if s is not None]
    return {
        "invalid_share": (len(result.samples) - result.num_valid) / total,
        "forced_share": result.num_forced / total,
        "failed": 1.0 if result.all_invalid else 0.0,
        "vote_spread": float(max(scores) - min(scores)) if len(scores) > 1 else 0.0,
        "vote": float(result.votes[0]) if result.votes else 0.0,
    }


def mean_stats(results: Sequence[RewardResult]) -> dict[str, float]:
    """:func:`result_stats` averaged over rollouts (``failed`` becomes ``failed_share``; no ``vote``)."""
    if not results:
        return {}
    per_result = [result_stats(r) for r in results]
    means = {key: sum(stats[key] for stats in per_result) / len(per_result) for key in per_result[0] if key != "vote"}
    means["failed_share"] = means.pop("failed")
    return means


def fill_failed_with_group_mean(
    rewards: Sequence[float | None], failed: Sequence[bool], groups: Sequence[Hashable]
) -> list[float | None]:
    """Give each failed reward the mean of its group's successful rewards (kept as is when none succeeded).

    A failed completion then sits at its group's baseline, so its group-relative advantage from
    this reward is ~0: a judge failure does not read as a bad answer. See docs/trl.md.

    >>> fill_failed_with_group_mean([0.2, None, 0.6, None], [False, True, False, True], ["p", "p", "p", "q"])
    [0.2, 0.4, 0.6, None]
    """
    sums: dict[Hashable, list[float]] = {}
    for reward, bad, group in zip(rewards, failed, groups, strict=True):
        if not bad and reward is not None:
            sums.setdefault(group, []).append(reward)
    return [
        sum(sums[group]) / len(sums[group]) if bad and group in sums else reward
        for reward, bad, group in zip(rewards, failed, groups, strict=True)
    ]
