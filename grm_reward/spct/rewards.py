"""The SPCT rule reward (paper Eq. 10-11), read strictly.

A judge sample is **correct** when its parsed scores

- pick the labelled best response strictly above every other (n >= 2): ``S_best > S_i`` for all
  ``i != best`` — a tie at the top is wrong;
- agree with the 0/1 label of a single response (n = 1). The paper rates single responses 0/1
  in training (``S_1 = r_1``, label 1 = correct, 0 = incorrect) but 1-10 at evaluation (App.
  D.1), so one rule covers both: with threshold ``t``, a correct response (label 1) must score
  **above** ``t`` and an incorrect one (label 0) **at or below** ``t``. ``t`` defaults to the
  lower midpoint of the score range, ``lo + (hi - lo) // 2``: 5 on 1-10 (6..10 passes a correct
  response, 1..5 fails an incorrect one) and 0 on 0-1, where the rule is exactly ``S_1 = r_1``.

The rule reward is +1 for a correct sample and -1 otherwise, unreadable output included. It is
read strictly: never through the format guarantee, since the judge is being taught the format.
``best`` is the position the judge *saw* the best response at (1st shown = 0), since the judge's
scores are in its shown order.
"""

from __future__ import annotations

from collections.abc import Sequence

from grm_reward.parsing import parse_judgement

__all__ = ["default_threshold", "is_correct", "rule_reward"]


def default_threshold(score_range: tuple[int, int]) -> int:
    """The single-response threshold for a score range: its lower midpoint.

    >>> default_threshold((1, 10)), default_threshold((0, 1)), default_threshold((1, 5))
    (5, 0, 3)
    """
    lo, hi = score_range
    return lo + (hi - lo) // 2


def is_correct(
    scores: Sequence[int] | None,
    *,
    best: int | None = None,
    label: int | None = None,
    score_range: tuple[int, int] = (1, 10),
    threshold: int | None = None,
) -> bool:
    """Eq. 10 on already-parsed scores (None = unreadable = wrong).

    ``label`` (n = 1) is 1 for a correct response, 0 for an incorrect one; ``threshold``
    (default :func:`default_threshold` of ``score_range``) splits the judge's scale.

    >>> is_correct([3, 8], best=1), is_correct([8, 8], best=1)
    (True, False)
    >>> is_correct([7], label=1), is_correct([5], label=1), is_correct([5], label=0)
    (True, False, True)
    >>> is_correct([1], label=1, score_range=(0, 1)), is_correct([0], label=0, score_range=(0, 1))
    (True, True)
    """
    if scores is None:
        return False
    if len(scores) == 1:
        if label is None:
            raise ValueError("a single response needs its label (1 = correct, 0 = incorrect)")
        if isinstance(label, bool) or label not in (0, 1):
            raise ValueError(f"a single response's label must be 0 (incorrect) or 1 (correct), got {label!r}")
        cut = default_threshold(score_range) if threshold is None else threshold
        return scores[0] > cut if label == 1 else scores[0] <= cut
    if best is None:
        raise ValueError("several responses need the index of the best one")
    if not 0 <= best < len(scores):
        raise ValueError(f"best={best} is not a response index for {len(scores)} responses")
    top = scores[best]
    return all(top > s for i, s in enumerate(scores) if i != best)


def rule_reward(
    text: str,
    num_responses: int,
    *,
    best: int | None = None,
    label: int | None = None,
    score_range: tuple[int, int] = (1, 10),
    threshold: int | None = None,
) -> float:
    """+1.0 if the judge's text scores the labelled best strictly highest (or agrees with the label), else -1.0.

    >>> rule_reward("Analysis: ...\\nScores: \\\\boxed{3, 8}", 2, best=1)
    1.0
    >>> rule_reward("Scores: \\\\boxed{8, 8}", 2, best=1)   # a tie is wrong
    -1.0
    >>> rule_reward("I like both.", 2, best=0)              # unreadable is wrong
    -1.0
    >>> rule_reward("Scores: \\\\boxed{9}", 1, label=1)      # a correct response scored above 5
    1.0
    """
    judgement = parse_judgement(text, num_responses, score_range)
    correct = is_correct(judgement.scores, best=best, label=label, score_range=score_range, threshold=threshold)
    return 1.0 if correct else -1.0
