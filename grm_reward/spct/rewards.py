"""The SPCT rule reward (paper Eq. 10-11), read strictly.

A judge sample is **correct** when its parsed scores

- pick the labelled best response strictly above every other (n >= 2): ``S_best > S_i`` for all
  ``i != best`` — a tie at the top is wrong;
- equal the label (n = 1): ``S_1 = r_1`` (the paper rates single responses 0/1 for training).

The rule reward is +1 for a correct sample and -1 otherwise, unreadable output included. It is
read strictly: never through the format guarantee, since the judge is being taught the format.
``best`` is the position the judge *saw* the best response at (1st shown = 0), since the judge's
scores are in its shown order.
"""

from __future__ import annotations

from collections.abc import Sequence

from grm_reward.parsing import parse_judgement

__all__ = ["is_correct", "rule_reward"]


def is_correct(scores: Sequence[int] | None, *, best: int | None = None, label: int | None = None) -> bool:
    """Eq. 10 on already-parsed scores (None = unreadable = wrong).

    >>> is_correct([3, 8], best=1), is_correct([8, 8], best=1), is_correct([1], label=1)
    (True, False, True)
    """
    if scores is None:
        return False
    if len(scores) == 1:
        if label is None:
            raise ValueError("a single response needs its label (the ground-truth score)")
        return scores[0] == label
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
) -> float:
    """+1.0 if the judge's text scores the labelled best strictly highest (or matches the label), else -1.0.

    >>> rule_reward("Analysis: ...\\nScores: \\\\boxed{3, 8}", 2, best=1)
    1.0
    >>> rule_reward("Scores: \\\\boxed{8, 8}", 2, best=1)   # a tie is wrong
    -1.0
    >>> rule_reward("I like both.", 2, best=0)              # unreadable is wrong
    -1.0
    """
    judgement = parse_judgement(text, num_responses, score_range)
    return 1.0 if is_correct(judgement.scores, best=best, label=label) else -1.0
