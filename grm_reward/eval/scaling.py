"""Voting@k and MetaRM@k for every k <= K, from one sampling pass of K judgements per item.

For each k, each of ``resamples`` rounds draws, for every item, a random k-subset of its K
samples (the same subset for every view of the item), votes with :func:`grm_reward.voting.vote`
— the very function behind every reward, so a vote means the same thing here as in training —
and scores the benchmark. The rounds give a mean and a spread; a K=32 curve thus costs 32
samples per item, not 1+2+...+32.

- ``voting``: every readable sample of the subset votes (the paper's Eq. 14);
- ``meta_rm``: only the ``k_meta`` samples with the highest meta scores vote (default k/2),
  computed when the samples carry meta scores (``Judgement.meta_score``).

The spread (std over rounds) measures how much the k-subset and tie draws move the score;
it is not a confidence interval over the benchmark's items (see ``item_stderr``).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from grm_reward.eval.items import STYLE_LEVELS, ItemSamples
from grm_reward.eval.metrics import ItemOutcome, TiePolicy, choice_credit, pair_credit, summarize
from grm_reward.voting import Vote, normalize, vote

if TYPE_CHECKING:
    from grm_reward.eval.benchmarks import Benchmark

__all__ = [
    "METHODS",
    "Method",
    "ScalingSettings",
    "Spread",
    "default_ks",
    "has_meta_scores",
    "item_outcome",
    "k_meta_for",
    "scaling_curves",
]

Method = Literal["voting", "meta_rm"]
METHODS: tuple[Method, ...] = ("voting", "meta_rm")


@dataclass(frozen=True)
class ScalingSettings:
    """How votes are formed and read. ``use_token_scores`` and ``score_range`` follow the GRMConfig."""

    ks: tuple[int, ...]
    resamples: int = 32
    tie_policy: TiePolicy = "random"
    k_meta_ratio: float = 0.5
    use_token_scores: bool = False
    score_range: tuple[int, int] = (1, 10)
    seed: int = 0
    #: adaptive k: items drew different numbers of samples; each votes with all it drew (ks is (K,))
    adaptive: bool = False

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"k values must be positive, got {self.ks}")
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {self.resamples}")
        if not 0.0 < self.k_meta_ratio <= 1.0:
            raise ValueError(f"k_meta_ratio must be in (0, 1], got {self.k_meta_ratio}")


@dataclass(frozen=True, slots=True)
class Spread:
    """A metric over resampling rounds."""

    mean: float
    std: float
    min: float
    max: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        m = sum(values) / len(values)
        std = math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
        return cls(m, std, min(values), max(values), len(values))


def default_ks(k_max: int) -> tuple[int, ...]:
    """Powers of two up to ``k_max``, and ``k_max`` itself.

    >>> default_ks(32), default_ks(12), default_ks(1)
    ((1, 2, 4, 8, 16, 32), (1, 2, 4, 8, 12), (1,))
    """
    ks = [1]
    while ks[-1] * 2 <= k_max:
        ks.append(ks[-1] * 2)
    if ks[-1] != k_max:
        ks.append(k_max)
    return tuple(ks)


def k_meta_for(k: int, ratio: float) -> int:
    """How many of k samples the meta RM keeps: ``floor(k * ratio)``, at least 1.

    >>> [k_meta_for(k, 0.5) for k in (1, 2, 3, 8, 32)]
    [1, 1, 1, 4, 16]
    """
    return max(1, math.floor(k * ratio))


def has_meta_scores(records: Sequence[ItemSamples]) -> bool:
    return any(j.meta_score is not None for r in records for view in r.samples for j in view)


def item_outcome(
    record: ItemSamples,
    chosen: Sequence[int] | None,
    *,
    k_meta: int | None,
    settings: ScalingSettings,
    rng: random.Random,
) -> ItemOutcome:
    """Vote with the samples ``chosen`` (indices into each view's K samples; None: all) and read the item."""
    item = record.item
    votes = [
        vote(
            list(samples) if chosen is None else [samples[i] for i in chosen],
            len(view),
            k_meta=k_meta,
            use_token_scores=settings.use_token_scores,
            tie_break="none",
        )
        for view, samples in zip(record.views, record.samples, strict=True)
    ]
    policy = settings.tie_policy
    if item.task == "label":
        return ItemOutcome(item, reward=_mean_score(votes[0], settings.score_range))
    if len(record.views) == 1:  # the list protocol: one input with every response
        totals = _item_totals(len(item.responses), record.views[0], votes[0])
        if item.task == "best":
            return ItemOutcome(item, credit=choice_credit(totals, item.good, policy, rng))
        k = len(STYLE_LEVELS)
        grid = tuple(tuple(pair_credit(totals[i], totals[k + j], policy, rng) for j in range(k)) for i in range(k))
        return ItemOutcome(item, credit=_grid_mean(grid), grid=grid)
    # the pairs protocol: one input per (good, other) pair
    wins: dict[tuple[int, int], float] = {}
    for view, outcome in zip(record.views, votes, strict=True):
        by_index = dict(zip(view, outcome.votes, strict=True))
        if item.task == "best":
            (best,) = item.good
            other = next(i for i in view if i != best)
            wins[(best, other)] = pair_credit(by_index[best], by_index[other], policy, rng)
        else:
            chosen_i, rejected_j = sorted(view)
            wins[(chosen_i, rejected_j)] = pair_credit(by_index[chosen_i], by_index[rejected_j], policy, rng)
    if item.task == "best":
        return ItemOutcome(item, credit=math.prod(wins.values()))  # the best must win every pair
    k = len(STYLE_LEVELS)
    grid = tuple(tuple(wins[(i, k + j)] for j in range(k)) for i in range(k))
    return ItemOutcome(item, credit=_grid_mean(grid), grid=grid)


def scaling_curves(
    benchmark: Benchmark, records: Sequence[ItemSamples], settings: ScalingSettings
) -> dict[Method, dict[int, dict[str, Spread]]]:
    """``curves[method][k][metric]``: each metric of :func:`~grm_reward.eval.metrics.summarize`
    over the resampling rounds. ``meta_rm`` is present only when samples carry meta scores.
    """
    if not records:
        return {}
    available = min(r.num_samples for r in records)
    too_many = [k for k in settings.ks if k > available]
    if too_many and not settings.adaptive:
        raise ValueError(f"k={too_many} exceed the {available} samples stored per item")
    methods: list[Method] = ["voting", "meta_rm"] if has_meta_scores(records) else ["voting"]
    curves: dict[Method, dict[int, dict[str, Spread]]] = {}
    for method in methods:
        curves[method] = {}
        for k in settings.ks:
            k_meta = k_meta_for(k, settings.k_meta_ratio) if method == "meta_rm" else None
            rounds = settings.resamples
            if settings.tie_policy != "random" and (settings.adaptive or all(r.num_samples == k for r in records)):
                rounds = 1  # one subset and no coin: every round would be the same
            values: dict[str, list[float]] = defaultdict(list)
            for round_ in range(rounds):
                outcomes = []
                for record in records:
                    rng = random.Random(f"grm-reward-scaling|{settings.seed}|{record.item.uid}|{k}|{round_}")
                    chosen = None if settings.adaptive else sorted(rng.sample(range(record.num_samples), k))
                    outcomes.append(item_outcome(record, chosen, k_meta=k_meta, settings=settings, rng=rng))
                for key, value in summarize(benchmark, outcomes).items():
                    values[key].append(value)
            curves[method][k] = {key: Spread.of(v) for key, v in values.items()}
    return curves


def _item_totals(n: int, view: Sequence[int], outcome: Vote) -> list[float]:
    totals = [0.0] * n
    for position, index in enumerate(view):
        totals[index] = outcome.votes[position]
    return totals


def _mean_score(outcome: Vote, score_range: tuple[int, int]) -> float:
    """The mean voted score of a single response; the middle of the range when no sample could be read."""
    if not outcome.voters:
        return (score_range[0] + score_range[1]) / 2
    return normalize(outcome.votes[0], len(outcome.voters), score_range, "mean")


def _grid_mean(grid: Sequence[Sequence[float]]) -> float:
    return sum(sum(row) for row in grid) / sum(len(row) for row in grid)

