"""Adaptive k: when more judge samples could not change what a reward is used for (pure).

:func:`settled` reads the scores of the samples that voted so far and says whether the fixed-k
vote would, with error at most ``error`` per look, keep every reward within ``tolerance``
(``target='values'``) or keep the leader (``target='best'``). :func:`round_sizes` is the drawing
schedule. The rule, its error level and its figures are in docs/scoring.md ("Adaptive k").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from grm_reward.config import AdaptiveOptions
from grm_reward.types import Judgement
from grm_reward.voting import select_voters

__all__ = ["drawn_k_meta", "predictive_sd", "round_sizes", "settled", "voter_scores"]


def round_sizes(k: int, options: AdaptiveOptions) -> list[int]:
    """The samples drawn per round for a maximum of ``k``: ``min_k``, then ``round_k`` at a time.

    >>> round_sizes(16, AdaptiveOptions(min_k=4, round_k=4))
    [4, 4, 4, 4]
    >>> round_sizes(10, AdaptiveOptions(min_k=4, round_k=4)), round_sizes(3, AdaptiveOptions())
    ([4, 4, 2], [3])
    """
    sizes = [min(k, options.min_k)]
    while sum(sizes) < k:
        sizes.append(min(options.round_k, k - sum(sizes)))
    return sizes


def drawn_k_meta(k_meta: int, drawn: int, k: int) -> int:
    """The meta RM's share of the vote kept at ``drawn`` of ``k`` samples: ``k_meta * drawn / k``
    rounded down, at least 1 (so at ``drawn == k`` it is ``k_meta`` itself).

    >>> drawn_k_meta(8, 16, 16), drawn_k_meta(8, 4, 16), drawn_k_meta(1, 4, 16)
    (8, 2, 1)
    """
    return max(1, k_meta * drawn // k)


def voter_scores(
    samples: Sequence[Judgement], k_meta: int | None = None, *, use_token_scores: bool = False
) -> list[list[float]]:
    """The score rows (original response order) of the samples that would vote, as :func:`~grm_reward.voting.vote` selects them."""
    rows = []
    for i in select_voters(samples, k_meta, use_token_scores=use_token_scores):
        scores = samples[i].token_scores if use_token_scores else samples[i].scores
        assert scores is not None
        rows.append([float(v) for v in scores])
    return rows


def predictive_sd(values: Sequence[float], remaining: int, prior_sd: float) -> float:
    """Standard deviation of (final mean - current mean) when ``remaining`` more values are drawn.

    Values are modelled as independent draws with an unknown mean: the final mean over
    ``m + r`` values moves from the current mean by ``sd * sqrt(r / (m (m + r)))``, where ``sd``
    is the sample spread shrunk towards ``prior_sd`` with the weight of one pseudo-value.

    >>> round(predictive_sd([7, 7, 7, 7], 12, 0.9), 3)   # four agreeing samples: not certain yet
    0.195
    >>> predictive_sd([7, 8], 0, 0.9)
    0.0
    """
    m, r = len(values), remaining
    if r <= 0:
        return 0.0
    if m == 0:
        return math.inf
    mean = sum(values) / m
    squares = sum((v - mean) ** 2 for v in values)
    sd = math.sqrt((squares + prior_sd**2) / m)  # (m - 1) degrees of freedom plus one pseudo-value
    return sd * math.sqrt(r / (m * (m + r)))


def settled(
    rows: Sequence[Sequence[float]],
    remaining: int,
    options: AdaptiveOptions,
    score_range: tuple[int, int],
) -> bool:
    """Whether drawing ``remaining`` more samples could not change the reward's use (see module doc).

    ``rows`` are the voting samples' scores, one row per sample, in original response order.
    With ``target='best'`` the leader must beat every other response on the paired score gaps:
    by more than all ``remaining`` samples could swing (a hard bound), or by ``z`` predictive
    standard deviations, ``z`` one-sided at ``error / (n - 1)``. With ``target='values'`` every
    response's mean must lie within ``tolerance`` (unit scale) of its predicted fixed-k mean, ``z``
    two-sided at ``error``. No voter yet, or a score that is not a finite number: not settled.

    >>> opts = AdaptiveOptions(enabled=True, target="best")
    >>> settled([[9, 3], [8, 2], [9, 4], [8, 3]], 12, opts, (1, 10))   # a clear winner
    True
    >>> settled([[6, 5], [5, 6], [6, 6], [7, 5]], 12, opts, (1, 10))   # a near tie
    False
    """
    if remaining <= 0:
        return True
    if not rows or not all(math.isfinite(v) for row in rows for v in row):
        return False  # nobody voted yet, or a backend's token scores are not numbers: never stop on those
    lo, hi = score_range
    width = hi - lo
    prior = options.prior_sd * width
    n = len(rows[0])
    if options.target == "values":
        z = NormalDist().inv_cdf(1 - options.error / 2)
        return all(
            z * predictive_sd([row[i] for row in rows], remaining, prior) <= options.tolerance * width for i in range(n)
        )
    if n == 1:
        return True
    totals = [sum(row[i] for row in rows) for i in range(n)]
    leader = max(range(n), key=lambda i: totals[i])
    z = NormalDist().inv_cdf(1 - options.error / (n - 1))
    for other in range(n):
        if other == leader:
            continue
        gaps = [row[leader] - row[other] for row in rows]
        lead = sum(gaps)
        if lead > remaining * width:  # no sample can give the other more than the whole range
            continue
        mean = lead / len(gaps)
        if mean <= 0 or mean < z * predictive_sd(gaps, remaining, prior):
            return False
    return True
