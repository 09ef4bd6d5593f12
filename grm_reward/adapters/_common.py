"""What every adapter reports about a one-response result: its samples' scores and statistics.

Adapters hand the framework one result per rollout (a single-response ``RewardResult``, split
from a listwise judgement where needed); these functions turn it into loggable values, so
"invalid share" or "vote spread" mean the same thing in TRL's logs and in verl's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from typing import Any

from grm_reward.errors import InputError
from grm_reward.types import DefenceRecord, RewardResult

__all__ = [
    "as_principles",
    "as_reference",
    "critique",
    "defence_flags",
    "defence_summary",
    "fill_failed_with_group_mean",
    "hacking_stats",
    "mean_stats",
    "result_stats",
    "sample_scores",
]


def as_reference(value: Any) -> str | None:
    """A dataset's reference answer as request text: None, NaN (pandas' missing value), empty or blank -> None;
    numbers -> str; an infinite number is refused (it is no answer, and "inf" would be judged as one).

    >>> as_reference(42), as_reference("  "), as_reference(None), as_reference(float("nan"))
    ('42', None, None, None)
    """
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):  # NaN was the reference "nan"
        return None
    if isinstance(value, numbers.Real) and math.isinf(value):
        raise InputError(f"the reference answer is {value}: not an answer (send a string, a finite number or null)")
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
    - ``vote``: the raw vote, the sum of those scores (the paper's S*);
    - ``samples_drawn``: judge samples drawn (k, or fewer under adaptive k).
    """
    total = len(result.samples) or 1
    scores = [s for s in sample_scores(result) if s is not None]
    return {
        "invalid_share": (len(result.samples) - result.num_valid) / total,
        "forced_share": result.num_forced / total,
        "failed": 1.0 if result.all_invalid else 0.0,
        "vote_spread": float(max(scores) - min(scores)) if len(scores) > 1 else 0.0,
        "vote": float(result.votes[0]) if result.votes else 0.0,
        "samples_drawn": float(result.samples_drawn),
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


def _record(result: RewardResult) -> DefenceRecord:
    return result.defences[0] if result.defences else DefenceRecord()


def defence_flags(result: RewardResult) -> dict[str, float]:
    """The reward-hacking record of one response as numbers (docs/reward-hacking.md).

    - ``neutralised``: 1.0 when a verdict look-alike or template delimiter was rewritten, else 0.0;
    - ``injection``: 1.0 when an instruction-like injection was flagged, else 0.0;
    - ``response_chars``: the response's length in characters.

    Averaged over a step, the first two are the shares of completions the monitor watches.
    """
    record = _record(result)
    return {
        "neutralised": 1.0 if record.any_neutralised else 0.0,
        "injection": 1.0 if record.any_flagged else 0.0,
        "response_chars": float(record.chars),
    }


def defence_summary(result: RewardResult) -> str:
    """A short, readable line of what the defences did to one response ('' when nothing).

    >>> defence_summary(RewardResult([1.0], [10.0], [], 1, 0, False, defences=[
    ...     DefenceRecord(neutralised={"scores_label": 1}, flagged={"ignore_instructions": 2})]))
    'neutralised scores_label x1; flagged ignore_instructions x2'
    """
    record = _record(result)
    parts = []
    if record.neutralised:
        parts.append("neutralised " + ", ".join(f"{k} x{v}" for k, v in sorted(record.neutralised.items())))
    if record.flagged:
        parts.append("flagged " + ", ".join(f"{k} x{v}" for k, v in sorted(record.flagged.items())))
    return "; ".join(parts)


def hacking_stats(results: Sequence[RewardResult], groups: Sequence[Hashable]) -> dict[str, float]:
    """The hacking monitor over one step's single-response results (``groups[i]``: result i's group).

    - ``neutralised_share`` / ``injection_share``: share of completions with a rewritten verdict
      look-alike / a flagged injection;
    - ``length_reward_corr``: Pearson correlation of reward and response length over the judged
      completions (0.0 with fewer than two or no spread): length hacking shows as a rise;
    - ``flagged_best_share``: share of groups (two or more judged completions) whose best reward
      belongs to a completion that was neutralised or flagged.

    >>> r = lambda reward, **flags: RewardResult([reward], [0.0], [], 1, 0, False, defences=[DefenceRecord(**flags)])
    >>> stats = hacking_stats([r(0.9, flagged={"score_request": 1}, chars=10), r(0.1, chars=30)], ["g", "g"])
    >>> stats["injection_share"], stats["flagged_best_share"], stats["length_reward_corr"]
    (0.5, 1.0, -1.0)
    """
    if not results:
        return {"neutralised_share": 0.0, "injection_share": 0.0, "length_reward_corr": 0.0, "flagged_best_share": 0.0}
    records = [_record(r) for r in results]
    judged = [
        (record.chars, float(r.rewards[0]), record.any_flagged or record.any_neutralised, group)
        for r, record, group in zip(results, records, groups, strict=True)
        if not r.all_invalid and r.rewards and r.rewards[0] is not None
    ]
    by_group: dict[Hashable, list[tuple[float, bool]]] = {}
    for _, reward, flagged, group in judged:
        by_group.setdefault(group, []).append((reward, flagged))
    contested = [members for members in by_group.values() if len(members) > 1]
    flagged_best = sum(
        1 for members in contested if any(flagged for reward, flagged in members if reward == max(m[0] for m in members))
    )
    return {
        "neutralised_share": sum(r.any_neutralised for r in records) / len(records),
        "injection_share": sum(r.any_flagged for r in records) / len(records),
        "length_reward_corr": _pearson([float(c) for c, _, _, _ in judged], [w for _, w, _, _ in judged]),
        "flagged_best_share": flagged_best / len(contested) if contested else 0.0,
    }


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, sxy / float((sxx * syy) ** 0.5)))
