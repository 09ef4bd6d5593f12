"""Metrics against hand-computed values: tie policies, RM-Bench's grid, ROC-AUC with ties, sections."""

from __future__ import annotations

import itertools
import random

import pytest

from grm_reward.eval.benchmarks import BENCHMARKS
from grm_reward.eval.items import EvalItem
from grm_reward.eval.metrics import (
    ItemOutcome,
    choice_credit,
    pair_credit,
    roc_auc,
    style_difficulty,
    summarize,
)


def brute_force_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # the textbook example, no ties
        ([1, 2, 2, 3], [0, 1, 0, 1], 0.875),  # (2,1)=1 (2,2)=1/2 (3,1)=1 (3,2)=1 -> 3.5/4
        ([5, 5, 5, 7, 7, 3], [1, 0, 0, 1, 0, 1], 3.5 / 9),  # pos 5: 1/2+1/2+0; pos 7: 1+1+1/2; pos 3: 0
        ([4, 4, 4, 4], [1, 0, 1, 0], 0.5),  # all tied: chance
        ([1, 2, 3], [1, 1, 0], 0.0),  # perfectly inverted
        ([9.5, 9.5, 1.0], [1, 0, 0], 0.75),
    ],
)
def test_roc_auc_hand_computed(scores, labels, expected) -> None:
    assert roc_auc(scores, labels) == pytest.approx(expected)


def test_roc_auc_matches_pairwise_definition_on_tied_integer_scores() -> None:
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(2, 30)
        scores = [rng.randint(1, 4) for _ in range(n)]  # many ties
        labels = [rng.randint(0, 1) for _ in range(n)]
        if len(set(labels)) < 2:
            continue
        assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_roc_auc_undefined_with_one_class() -> None:
    assert roc_auc([1, 2], [1, 1]) is None
    with pytest.raises(ValueError):
        roc_auc([1], [1, 0])


@pytest.mark.parametrize(
    ("totals", "good", "strict", "half"),
    [
        ([12, 7], {0}, 1.0, 1.0),
        ([7, 12], {0}, 0.0, 0.0),
        ([9, 9], {0}, 0.0, 0.5),  # RewardBench's tie
        ([9, 9, 9], {2}, 0.0, 1 / 3),
        ([9, 9, 3], {0, 1}, 0.0, 1.0),  # both tied tops acceptable (XSTest)
        ([0, 0], {1}, 0.0, 0.5),  # all samples unreadable: an all-zero tie
    ],
)
def test_choice_credit_policies(totals, good, strict, half) -> None:
    rng = random.Random(0)
    assert choice_credit(totals, frozenset(good), "strict", rng) == strict
    assert choice_credit(totals, frozenset(good), "half", rng) == pytest.approx(half)
    draws = [choice_credit(totals, frozenset(good), "random", random.Random(s)) for s in range(4000)]
    assert set(draws) <= {0.0, 1.0}
    assert sum(draws) / len(draws) == pytest.approx(half, abs=0.03)  # random's expectation is half's credit


def test_pair_credit() -> None:
    rng = random.Random(0)
    assert [pair_credit(8, 5, p, rng) for p in ("strict", "half")] == [1.0, 1.0]
    assert [pair_credit(5, 8, p, rng) for p in ("strict", "half")] == [0.0, 0.0]
    assert [pair_credit(6, 6, p, rng) for p in ("strict", "half")] == [0.0, 0.5]
    coins = [pair_credit(6, 6, "random", random.Random(s)) for s in range(2000)]
    assert 0.45 < sum(coins) / len(coins) < 0.55


def test_style_grid_orientation_follows_rm_bench() -> None:
    # rows: chosen style (concise, detailed, markdown); columns: rejected style.
    grid = [[0.9, 0.2, 0.1],
            [0.8, 0.6, 0.3],
            [0.7, 0.5, 0.4]]
    result = style_difficulty(grid)
    assert result["hard"] == pytest.approx((0.2 + 0.1 + 0.3) / 3)  # chosen less styled than rejected
    assert result["normal"] == pytest.approx((0.9 + 0.6 + 0.4) / 3)
    assert result["easy"] == pytest.approx((0.8 + 0.7 + 0.5) / 3)


def _outcome(uid, subset, section, credit):
    item = EvalItem(uid, "q", ("a", "b"), "best", subset, section, good=frozenset({0}))
    return ItemOutcome(item, credit=credit)


def test_rewardbench_sections_use_the_official_weights_and_skip_prior_sets() -> None:
    outcomes = [
        _outcome("1", "math-prm", "Reasoning", 1.0),
        _outcome("2", "hep-cpp", "Reasoning", 0.0),
        _outcome("3", "llmbar-natural", "Chat Hard", 1.0),
        _outcome("4", "llmbar-natural", "Chat Hard", 0.0),
        _outcome("5", "anthropic_helpful", "Prior Sets", 0.0),
    ]
    metrics = summarize(BENCHMARKS["rewardbench"], outcomes)
    reasoning = 984 / (984 + 164)  # math-prm counts as much as all six code subsets
    assert metrics["section:Reasoning"] == pytest.approx(reasoning)
    assert metrics["section:Chat Hard"] == pytest.approx(0.5)
    assert metrics["headline"] == pytest.approx((reasoning + 0.5) / 2)  # prior sets left out
    assert metrics["overall"] == pytest.approx(2 / 5)
    assert metrics["subset:anthropic_helpful"] == 0.0


def test_sections_default_to_item_weighting_and_headline_sections() -> None:
    outcomes = [
        _outcome("1", "Natural", "Natural", 1.0),
        _outcome("2", "Adversarial_A", "Adversarial", 1.0),
        _outcome("3", "Adversarial_B", "Adversarial", 0.0),
        _outcome("4", "Adversarial_B", "Adversarial", 0.0),
        _outcome("5", "Processed_X", "Processed", 0.0),
    ]
    metrics = summarize(BENCHMARKS["llmbar"], outcomes)
    assert metrics["section:Adversarial"] == pytest.approx(1 / 3)
    assert metrics["headline"] == pytest.approx((1 + 1 / 3) / 2)
    generic = summarize(BENCHMARKS["pairwise"], outcomes)
    assert generic["headline"] == generic["overall"] == pytest.approx(2 / 5)


def test_a_subset_spanning_sections_counts_only_its_items_in_each_section() -> None:
    # generic files set subset and section freely: subset "x" lies in both sections
    outcomes = [
        _outcome("1", "x", "A", 1.0),
        _outcome("2", "y", "A", 0.0),
        _outcome("3", "x", "B", 0.0),
        _outcome("4", "x", "B", 0.0),
        _outcome("5", "x", "B", 0.0),
    ]
    metrics = summarize(BENCHMARKS["pairwise"], outcomes)
    assert metrics["section:A"] == pytest.approx(1 / 2)  # accuracy over section A's two items
    assert metrics["section:B"] == 0.0
    assert metrics["subset:x"] == pytest.approx(1 / 4)  # a subset's row still pools its items
    assert metrics["overall"] == pytest.approx(1 / 5)


def test_official_subset_weights_use_the_subset_accuracy_inside_the_section() -> None:
    outcomes = [
        _outcome("1", "math-prm", "Reasoning", 1.0),
        _outcome("2", "math-prm", "Chat Hard", 0.0),  # a file that moved a math-prm row elsewhere
        _outcome("3", "hep-cpp", "Reasoning", 0.0),
    ]
    metrics = summarize(BENCHMARKS["rewardbench"], outcomes)
    assert metrics["section:Reasoning"] == pytest.approx(984 / (984 + 164))
    assert metrics["section:Chat Hard"] == 0.0


def test_auc_summary_per_group() -> None:
    def labelled(uid, section, label, reward):
        item = EvalItem(uid, "q", ("a",), "label", f"{section}/m", section, label=label)
        return ItemOutcome(item, reward=reward)

    outcomes = [
        labelled("1", "A", 1, 9.0), labelled("2", "A", 0, 3.0),
        labelled("3", "B", 1, 2.0), labelled("4", "B", 0, 8.0),
        labelled("5", "C", 1, 5.0),  # one class only: no AUC for C
    ]
    metrics = summarize(BENCHMARKS["realmistake"], outcomes)
    assert metrics["section:A"] == 1.0 and metrics["section:B"] == 0.0
    assert "section:C" not in metrics
    assert metrics["headline"] == metrics["overall"] == pytest.approx(roc_auc([9, 3, 2, 8, 5], [1, 0, 1, 0, 1]))
