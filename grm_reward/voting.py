"""Un-permute, select, sum, break ties, normalize: pure functions over judgements.

The paper's vote (Eq. 14) is a sum: ``S*_i = sum_j S_{i,j}`` over the samples ``j`` that vote.
Invalid samples abstain. With a meta RM, only the ``k_meta`` samples with the highest meta
scores vote. Rewards are normalised so they stay comparable when the number of voting samples
differs between requests (the raw sum grows with it):

- ``unit``: the mean voted score mapped linearly from ``score_range`` to [0, 1];
- ``mean``: the mean voted score, on the score range itself (1..10 by default);
- ``sum``: the raw vote, on [m*lo, m*hi] for m voting samples (the paper's S*).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from grm_reward.types import Judgement

__all__ = ["Vote", "break_tie", "normalize", "select_voters", "unpermute", "vote"]


def unpermute(shown: Sequence[float], order: Sequence[int]) -> list[float]:
    """Map scores from the shown order back to the original order.

    ``order[p]`` is the original index of the response shown at position ``p``.

    >>> unpermute([9, 5], order=[1, 0])   # response 1 was shown first and got 9
    [5, 9]
    """
    if len(shown) != len(order):
        raise ValueError(f"{len(shown)} scores for {len(order)} responses")
    original: list[float] = [0.0] * len(order)
    for position, index in enumerate(order):
        original[index] = shown[position]
    return original


def select_voters(samples: Sequence[Judgement], k_meta: int | None = None, *, use_token_scores: bool = False) -> list[int]:
    """Indices of the samples that vote: the valid ones, or the top ``k_meta`` of them by meta score.

    Samples without a meta score rank below any with one; ties keep sampling order.
    """

    def readable(s: Judgement) -> bool:
        return s.token_scores is not None if use_token_scores else s.scores is not None

    valid = [i for i, s in enumerate(samples) if readable(s)]
    if k_meta is None or k_meta >= len(valid):
        return valid
    ranked = sorted(
        valid,
        key=lambda i: (samples[i].meta_score is None, -(samples[i].meta_score or 0.0), i),
    )
    return sorted(ranked[:k_meta])


@dataclass(frozen=True, slots=True)
class Vote:
    """The vote of one request: raw sums, the voters, and the top response."""

    votes: list[float]
    voters: list[int]
    best: int | None
    tie: bool


def vote(
    samples: Sequence[Judgement],
    num_responses: int,
    *,
    k_meta: int | None = None,
    use_token_scores: bool = False,
    tie_break: Literal["random", "first", "none"] = "random",
    rng: random.Random | None = None,
) -> Vote:
    """Sum the scores of the voting samples (already in original order) per response."""
    voters = select_voters(samples, k_meta, use_token_scores=use_token_scores)
    totals = [0.0] * num_responses
    for i in voters:
        scores = samples[i].token_scores if use_token_scores else samples[i].scores
        assert scores is not None
        if len(scores) != num_responses:
            raise ValueError(f"sample {i} has {len(scores)} scores for {num_responses} responses")
        for r, value in enumerate(scores):
            totals[r] += float(value)
    if not voters:
        return Vote(totals, voters, None, False)
    best, tie = break_tie(totals, tie_break, rng)
    return Vote(totals, voters, best, tie)


def break_tie(
    totals: Sequence[float], policy: Literal["random", "first", "none"], rng: random.Random | None = None
) -> tuple[int | None, bool]:
    """The index of the top total, and whether it was tied.

    ``random`` picks uniformly among the tied (seeded by ``rng``), as the paper's shuffle-then-
    argmax does; ``first`` takes the lowest index; ``none`` returns None on a tie.
    """
    top = max(totals)
    tied = [i for i, t in enumerate(totals) if abs(t - top) <= 1e-9]
    if len(tied) == 1:
        return tied[0], False
    if policy == "none":
        return None, True
    if policy == "first":
        return tied[0], True
    return (rng or random.Random(0)).choice(tied), True


def normalize(
    total: float,
    num_voters: int,
    score_range: tuple[int, int],
    scale: Literal["unit", "mean", "sum"],
) -> float:
    """One response's reward from its raw vote (see the module docstring for the scales).

    >>> normalize(16.0, 2, (1, 10), "unit")    # mean 8 on 1..10
    0.7777777777777778
    """
    if num_voters <= 0:
        raise ValueError("no voters")
    if scale == "sum":
        return total
    mean = total / num_voters
    if scale == "mean":
        return mean
    lo, hi = score_range
    return (mean - lo) / (hi - lo)
