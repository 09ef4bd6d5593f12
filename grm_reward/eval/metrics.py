"""Benchmark metrics over votes: pure functions, no I/O.

Ties. The paper breaks a tie at random after shuffling (§5); RewardBench's generative script
gives 0.5 to a tie or an unreadable verdict; RM-Bench and the SPCT rule (Eq. 10) count a tie as
wrong. The :data:`TiePolicy` names them:

- ``random``: a tied top is broken uniformly at random (seeded) — the paper's protocol;
- ``half``: a tie earns the *expected* credit of that coin, i.e. the share of the tied top
  responses that are acceptable (0.5 for a tied pair) — RewardBench's convention;
- ``strict``: only a unique top response that is acceptable counts.

A request whose samples were all unreadable has an all-zero vote, i.e. a tie among all of its
responses, and is scored by the same policy (so RewardBench's "error = 0.5" falls out of ``half``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from grm_reward.eval.items import STYLE_LEVELS, EvalItem
from grm_reward.voting import break_tie

if TYPE_CHECKING:
    from grm_reward.eval.benchmarks import Benchmark

__all__ = [
    "STYLE_CELLS",
    "ItemOutcome",
    "TiePolicy",
    "choice_credit",
    "pair_credit",
    "roc_auc",
    "style_difficulty",
    "summarize",
    "top_responses",
]

TiePolicy = Literal["random", "half", "strict"]

#: RM-Bench's reading of its grid ``acc[chosen style][rejected style]``.
STYLE_CELLS = ("hard", "normal", "easy")

_TOLERANCE = 1e-9


def top_responses(totals: Sequence[float]) -> list[int]:
    """Indices sharing the top vote."""
    top = max(totals)
    return [i for i, t in enumerate(totals) if abs(t - top) <= _TOLERANCE]


def choice_credit(totals: Sequence[float], good: frozenset[int], policy: TiePolicy, rng: random.Random) -> float:
    """Credit for ranking an acceptable response on top of ``totals``.

    >>> rng = random.Random(0)
    >>> choice_credit([12, 7], frozenset({0}), "strict", rng)
    1.0
    >>> choice_credit([9, 9, 3], frozenset({0}), "half", rng), choice_credit([9, 9, 3], frozenset({0}), "strict", rng)
    (0.5, 0.0)
    """
    tied = top_responses(totals)
    if len(tied) == 1:
        return 1.0 if tied[0] in good else 0.0
    if policy == "strict":
        return 0.0
    if policy == "half":
        return sum(1 for i in tied if i in good) / len(tied)
    best, _ = break_tie(totals, "random", rng)  # the core's own tie-break: uniform among the tied
    return 1.0 if best in good else 0.0


def pair_credit(better: float, worse: float, policy: TiePolicy, rng: random.Random) -> float:
    """Credit for a strict win of ``better`` over ``worse`` (ties per the policy).

    >>> rng = random.Random(0)
    >>> pair_credit(8, 5, "strict", rng), pair_credit(5, 5, "half", rng), pair_credit(5, 5, "strict", rng)
    (1.0, 0.5, 0.0)
    """
    if abs(better - worse) > _TOLERANCE:
        return 1.0 if better > worse else 0.0
    if policy == "strict":
        return 0.0
    if policy == "half":
        return 0.5
    return 1.0 if rng.random() < 0.5 else 0.0


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve of ``scores`` as a detector of ``label == 1``; None without both classes.

    The Mann-Whitney statistic with mid-ranks: a positive scored equal to a negative counts 1/2.

    >>> roc_auc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    1.0
    >>> roc_auc([0.5, 0.5], [1, 0])
    0.5
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    positives = sum(1 for y in labels if y == 1)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        midrank = (start + end) / 2 + 1  # ranks are 1-based
        for position in range(start, end + 1):
            ranks[order[position]] = midrank
        start = end + 1
    positive_rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y == 1)
    return (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def style_difficulty(grid: Sequence[Sequence[float]]) -> dict[str, float]:
    """RM-Bench's hard / normal / easy accuracy of a grid ``acc[chosen style][rejected style]``.

    Hard: the chosen response is less styled than the rejected one (upper right); normal: same
    style (diagonal); easy: chosen more styled (lower left).

    >>> style_difficulty([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    {'hard': 0.0, 'normal': 1.0, 'easy': 1.0}
    """
    k = len(grid)
    cells: dict[str, list[float]] = {"hard": [], "normal": [], "easy": []}
    for i in range(k):
        for j in range(k):
            cells["hard" if i < j else "normal" if i == j else "easy"].append(float(grid[i][j]))
    return {name: sum(values) / len(values) for name, values in cells.items()}


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """How one item fared under one vote: a credit in [0, 1], a style grid, or a reward (label items)."""

    item: EvalItem
    credit: float | None = None
    grid: tuple[tuple[float, ...], ...] | None = None
    reward: float | None = None


def summarize(benchmark: Benchmark, outcomes: Sequence[ItemOutcome]) -> dict[str, float]:
    """Flat metrics of one evaluation: ``headline``, ``overall``, ``section:<name>``, ``subset:<name>``
    and, for style items, ``style:<hard|normal|easy>`` and ``style:<section>:<hard|normal|easy>``.
    Groups whose metric is undefined (ROC-AUC with one class) are left out.
    """
    if benchmark.metric == "roc_auc":
        return _summarize_auc(outcomes)
    return _summarize_accuracy(benchmark, outcomes)


def _summarize_accuracy(benchmark: Benchmark, outcomes: Sequence[ItemOutcome]) -> dict[str, float]:
    by_subset: dict[str, list[float]] = defaultdict(list)
    by_section: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for outcome in outcomes:
        if outcome.credit is None:
            continue
        by_subset[outcome.item.subset].append(outcome.credit)
        by_section[outcome.item.section][outcome.item.subset].append(outcome.credit)
    if not by_subset:
        return {}
    metrics: dict[str, float] = {}
    credits = [c for values in by_subset.values() for c in values]
    metrics["overall"] = sum(credits) / len(credits)
    for subset, values in sorted(by_subset.items()):
        metrics[f"subset:{subset}"] = sum(values) / len(values)
    # A section: the mean of its subsets' accuracies over the section's own items, weighted by the
    # benchmark's official weights or else by those item counts (= accuracy over the section's items).
    weights = benchmark.subset_weights or {}
    sections: dict[str, float] = {}
    for section, subsets in sorted(by_section.items()):
        weight = {s: float(weights.get(s, len(values))) for s, values in subsets.items()}
        accuracy = {s: sum(values) / len(values) for s, values in subsets.items()}
        sections[section] = sum(accuracy[s] * weight[s] for s in subsets) / sum(weight.values())
        metrics[f"section:{section}"] = sections[section]
    if benchmark.headline_sections is None:
        metrics["headline"] = metrics["overall"]
    else:
        present = [sections[s] for s in benchmark.headline_sections if s in sections]
        if present:
            metrics["headline"] = sum(present) / len(present)
    metrics.update(_style_metrics(outcomes))
    return metrics


def _style_metrics(outcomes: Sequence[ItemOutcome]) -> dict[str, float]:
    grids: dict[str, list[tuple[tuple[float, ...], ...]]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.grid is not None:
            grids[outcome.item.section].append(outcome.grid)
    if not grids:
        return {}
    metrics: dict[str, float] = {}
    everything = [g for values in grids.values() for g in values]
    for name, group in [("", everything), *((f"{s}:", grids[s]) for s in sorted(grids))]:
        mean_grid = _mean_grid(group)
        for cell, value in style_difficulty(mean_grid).items():
            metrics[f"style:{name}{cell}"] = value
    return metrics


def _mean_grid(grids: Sequence[tuple[tuple[float, ...], ...]]) -> list[list[float]]:
    k = len(STYLE_LEVELS)
    return [[sum(g[i][j] for g in grids) / len(grids) for j in range(k)] for i in range(k)]


def _summarize_auc(outcomes: Sequence[ItemOutcome]) -> dict[str, float]:
    groups: dict[str, list[ItemOutcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.reward is None or outcome.item.label is None:
            continue
        groups["overall"].append(outcome)
        groups[f"section:{outcome.item.section}"].append(outcome)
        groups[f"subset:{outcome.item.subset}"].append(outcome)
    metrics: dict[str, float] = {}
    for key, group in sorted(groups.items()):
        auc = roc_auc([o.reward for o in group], [o.item.label for o in group])  # type: ignore[misc]
        if auc is not None:
            metrics[key] = auc
    if "overall" in metrics:
        metrics["headline"] = metrics["overall"]
    return metrics

