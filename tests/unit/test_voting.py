"""Pure voting functions."""

from __future__ import annotations

import random

import pytest

from grm_reward import Judgement
from grm_reward.voting import break_tie, normalize, select_voters, unpermute, vote


def sample(scores, meta=None, token=None):
    return Judgement(text="", scores=scores, order=[0, 1], meta_score=meta, token_scores=token)


def test_unpermute_inverts_the_shown_order() -> None:
    assert unpermute([10, 20, 30], [2, 0, 1]) == [20, 30, 10]
    with pytest.raises(ValueError):
        unpermute([1], [0, 1])


def test_vote_sums_valid_samples_only() -> None:
    samples = [sample([8, 9]), sample(None), sample([10, 7])]
    outcome = vote(samples, 2)
    assert outcome.votes == [18.0, 16.0]  # the paper's Table 17 example: 8+10, 9+7 (after un-permuting)
    assert outcome.voters == [0, 2]
    assert outcome.best == 0 and not outcome.tie


def test_meta_rm_keeps_top_k_meta() -> None:
    samples = [sample([1, 9], meta=-15.8), sample([9, 5], meta=1.3), sample([10, 7], meta=1.7)]
    assert select_voters(samples, k_meta=2) == [1, 2]
    assert vote(samples, 2, k_meta=2).votes == [19.0, 12.0]
    assert vote(samples, 2, k_meta=1).votes == [10.0, 7.0]
    # without meta scores, samples with one rank first
    assert select_voters([sample([1, 1]), sample([2, 2], meta=0.0)], k_meta=1) == [1]


def test_token_scores_vote() -> None:
    samples = [sample([8, 9], token=[7.5, 8.5]), sample([1, 1], token=None)]
    assert vote(samples, 2, use_token_scores=True).votes == [7.5, 8.5]


def test_ties() -> None:
    assert break_tie([3, 5, 5], "first") == (1, True)
    assert break_tie([3, 5, 5], "none") == (None, True)
    assert break_tie([3, 5, 4], "none") == (1, False)
    seen = {break_tie([5, 5], "random", random.Random(s))[0] for s in range(30)}
    assert seen == {0, 1}


def test_no_voters() -> None:
    outcome = vote([sample(None)], 2)
    assert outcome.voters == [] and outcome.best is None


def test_normalize_scales() -> None:
    assert normalize(20.0, 2, (1, 10), "sum") == 20.0
    assert normalize(20.0, 2, (1, 10), "mean") == 10.0
    assert normalize(20.0, 2, (1, 10), "unit") == 1.0
    assert normalize(2.0, 2, (1, 10), "unit") == 0.0
    assert normalize(1.0, 2, (0, 1), "unit") == 0.5
    with pytest.raises(ValueError):
        normalize(1.0, 0, (1, 10), "unit")
