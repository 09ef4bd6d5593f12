"""Voting@k / MetaRM@k from one pass: resampling, meta-guided voting, protocols, abstentions."""

from __future__ import annotations

import math
import random

import pytest

from grm_reward import GenerativeRewardModel
from grm_reward.backends import ScriptedBackend
from grm_reward.eval.benchmarks import BENCHMARKS
from grm_reward.eval.items import EvalItem, ItemSamples, item_views, view_request
from grm_reward.eval.scaling import ScalingSettings, item_outcome, scaling_curves
from grm_reward.types import Judgement
from tests.eval_helpers import marked, noisy_quality_judge

PAIRWISE = BENCHMARKS["pairwise"]


def judgement(scores, meta=None, token_scores=None):
    return Judgement(text="", scores=list(scores) if scores is not None else None, order=[],
                     meta_score=meta, token_scores=token_scores)


def pair_record(uid, samples, good=0):
    item = EvalItem(uid, "q", ("a", "b"), "best", "s", "S", good=frozenset({good}))
    return ItemSamples(item, [(0, 1)], [samples])


def test_voting_at_k_is_the_expectation_over_k_subsets() -> None:
    # One sample prefers the good response; three prefer the other.
    record = pair_record("x", [judgement([9, 1]), judgement([1, 9]), judgement([1, 9]), judgement([1, 9])])
    curves = scaling_curves(PAIRWISE, [record], ScalingSettings(ks=(1, 2, 4), resamples=3000, tie_policy="half"))
    voting = curves["voting"]
    assert voting[1]["headline"].mean == pytest.approx(0.25, abs=0.03)
    # k=2: half of the 6 subsets hold the good sample and tie 10-10 (credit 1/2); the rest lose.
    assert voting[2]["headline"].mean == pytest.approx(0.25, abs=0.03)
    assert voting[4]["headline"].mean == 0.0 and voting[4]["headline"].rounds == 1  # one subset, no coin
    assert "meta_rm" not in curves  # no meta scores in these samples


def test_k_subsets_are_drawn_without_replacement_and_seeded() -> None:
    # k=2 of 3 samples, strict ties: {0,1} ties 10-10 (0), {0,2} wins 15-5 (1), {1,2} loses 7-13 (0) -> 1/3.
    # Drawing with replacement would also give {0,0} and {2,2} (both wins): 4/9.
    record = pair_record("x", [judgement([9, 1]), judgement([1, 9]), judgement([6, 4])])
    settings = ScalingSettings(ks=(2,), resamples=3000, tie_policy="strict")
    curve = scaling_curves(PAIRWISE, [record], settings)["voting"][2]["headline"]
    assert curve.mean == pytest.approx(1 / 3, abs=0.03)
    assert scaling_curves(PAIRWISE, [record], settings) == scaling_curves(PAIRWISE, [record], settings)
    other = ScalingSettings(ks=(2,), resamples=3000, tie_policy="strict", seed=1)
    assert scaling_curves(PAIRWISE, [record], other)["voting"][2]["headline"].mean == pytest.approx(1 / 3, abs=0.03)
    with pytest.raises(ValueError, match=r"k=\[4\] exceed the 3 samples"):
        scaling_curves(PAIRWISE, [record], ScalingSettings(ks=(4,)))


def test_meta_rm_keeps_the_top_half_by_meta_score() -> None:
    samples = [
        judgement([9, 2], meta=3.0),
        judgement([8, 3], meta=2.0),
        judgement([1, 9], meta=-1.0),
        judgement([1, 9], meta=-2.0),
        judgement([1, 9], meta=-3.0),
        judgement([1, 9], meta=-4.0),
    ]
    curves = scaling_curves(PAIRWISE, [pair_record("m", samples)], ScalingSettings(ks=(6,), tie_policy="strict"))
    assert curves["voting"][6]["headline"].mean == 0.0  # 21 vs 41: plain voting is wrong
    assert curves["meta_rm"][6]["headline"].mean == 1.0  # top 3 by meta score: 18 vs 14
    ratio = scaling_curves(PAIRWISE, [pair_record("m", samples)],
                           ScalingSettings(ks=(6,), tie_policy="strict", k_meta_ratio=1 / 3))
    assert ratio["meta_rm"][6]["headline"].mean == 1.0  # top 2: 17 vs 5
    everything = scaling_curves(PAIRWISE, [pair_record("m", samples)],
                                ScalingSettings(ks=(6,), tie_policy="strict", k_meta_ratio=1.0))
    assert everything["meta_rm"][6]["headline"].mean == 0.0  # k_meta = k: plain voting again


def test_unreadable_samples_abstain_and_an_all_unreadable_vote_is_a_tie() -> None:
    record = pair_record("u", [judgement(None), judgement([3, 7]), judgement(None)], good=1)
    strict = ScalingSettings(ks=(3,), tie_policy="strict")
    assert scaling_curves(PAIRWISE, [record], strict)["voting"][3]["headline"].mean == 1.0
    dead = pair_record("d", [judgement(None), judgement(None)])
    assert scaling_curves(PAIRWISE, [dead], ScalingSettings(ks=(2,), tie_policy="half"))["voting"][2][
        "headline"].mean == 0.5
    assert scaling_curves(PAIRWISE, [dead], strict.__class__(ks=(2,), tie_policy="strict"))["voting"][2][
        "headline"].mean == 0.0


def test_token_scores_vote_when_asked() -> None:
    record = pair_record("t", [judgement([5, 5], token_scores=[6.2, 5.1])])
    assert scaling_curves(PAIRWISE, [record], ScalingSettings(ks=(1,), tie_policy="strict"))["voting"][1][
        "headline"].mean == 0.0
    assert scaling_curves(PAIRWISE, [record], ScalingSettings(ks=(1,), tie_policy="strict", use_token_scores=True))[
        "voting"][1]["headline"].mean == 1.0


def test_pairs_protocol_needs_every_pair_won() -> None:
    item = EvalItem("b", "q", ("best", "l1", "l2"), "best", "s", "S", good=frozenset({0}))
    views = item_views(item, "pairs")

    def scored(view, best_wins):
        shown_best = view.index(0)
        scores = [3, 3]
        scores[shown_best] = 8 if best_wins else 2
        return [judgement(scores)]

    settings = ScalingSettings(ks=(1,), tie_policy="strict")
    both = ItemSamples(item, views, [scored(v, True) for v in views])
    one = ItemSamples(item, views, [scored(views[0], True), scored(views[1], False)])
    assert item_outcome(both, [0], k_meta=None, settings=settings, rng=random.Random(0)).credit == 1.0
    assert item_outcome(one, [0], k_meta=None, settings=settings, rng=random.Random(0)).credit == 0.0


def test_style_grid_from_one_list_view_and_from_nine_pairs() -> None:
    item = EvalItem("r", "q", ("c0", "c1", "c2", "r0", "r1", "r2"), "style", "chat", "Chat")
    quality = {0: 5, 1: 6, 2: 7, 3: 4, 4: 5, 5: 8}  # chosen c_i vs rejected r_j
    settings = ScalingSettings(ks=(1,), tie_policy="half")
    (view,) = item_views(item, "list")
    listed = ItemSamples(item, [view], [[judgement([quality[i] for i in view])]])
    pair_views = item_views(item, "pairs")
    paired = ItemSamples(item, pair_views, [[judgement([quality[i] for i in v])] for v in pair_views])
    expected = tuple(tuple(1.0 if quality[i] > quality[3 + j] else 0.5 if quality[i] == quality[3 + j] else 0.0
                           for j in range(3)) for i in range(3))
    for record in (listed, paired):
        outcome = item_outcome(record, [0], k_meta=None, settings=settings, rng=random.Random(0))
        assert outcome.grid == expected
        assert outcome.credit == pytest.approx(sum(map(sum, expected)) / 9)
    metrics = scaling_curves(BENCHMARKS["rmbench"], [listed], settings)["voting"][1]
    assert metrics["style:hard"].mean == pytest.approx((0.5 + 0.0 + 0.0) / 3)  # c0-r1 tie, c0-r2, c1-r2
    assert metrics["style:easy"].mean == pytest.approx(1.0)  # c1-r0, c2-r0, c2-r1
    assert metrics["style:Chat:normal"].mean == pytest.approx((1.0 + 1.0 + 0.0) / 3)


def test_label_items_read_the_mean_voted_score() -> None:
    def labelled(uid, label, scores):
        item = EvalItem(uid, "q", ("r",), "label", "t/m", "t", label=label)
        return ItemSamples(item, [(0,)], [[judgement(s) for s in scores]])

    records = [labelled("1", 1, [[9], [7]]), labelled("2", 0, [[8], None]), labelled("3", 0, [None, None])]
    metrics = scaling_curves(BENCHMARKS["realmistake"], records, ScalingSettings(ks=(2,)))["voting"][2]
    # rewards: mean voted score 8, 8, and the middle of the range (5.5) for the unreadable one
    assert metrics["headline"].mean == pytest.approx(0.75)


def test_one_pass_voting_at_K_equals_the_core_reward() -> None:
    """Voting@K computed from the stored samples agrees with the core's own vote on the same input."""
    judge = noisy_quality_judge()
    items = [
        EvalItem(f"i{n}", f"question {n}", (marked("good", 6), marked("bad", 5), marked("worse", 4)), "best",
                 "s", "S", good=frozenset({0}))
        for n in range(12)
    ]
    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=5, tie_break="none")
    records, agree = [], 0
    for item in items:
        (view,) = item_views(item, "list")
        result = rm.score_batch([view_request(item, view)])[0]
        records.append(ItemSamples(item, [view], [result.samples]))
        core_correct = (not result.tie) and view[result.best] in item.good
        outcome = item_outcome(records[-1], range(5), k_meta=None,
                               settings=ScalingSettings(ks=(5,), tie_policy="strict"), rng=random.Random(0))
        agree += outcome.credit == float(core_correct)
    assert agree == len(items)


def test_voting_improves_with_k_for_a_noisy_but_informative_judge() -> None:
    judge = noisy_quality_judge(noise=3)
    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=16)
    records = []
    for n in range(40):
        item = EvalItem(f"i{n}", f"q{n}", (marked("good", 6), marked("bad", 5)), "best", "s", "S",
                        good=frozenset({0}))
        (view,) = item_views(item, "list")
        records.append(ItemSamples(item, [view], [rm.score_batch([view_request(item, view)])[0].samples]))
    curves = scaling_curves(PAIRWISE, records, ScalingSettings(ks=(1, 4, 16), resamples=16))["voting"]
    means = [curves[k]["headline"].mean for k in (1, 4, 16)]
    assert means[0] < means[1] < means[2], means
    assert means[2] - means[0] > 0.1
    assert curves[1]["headline"].std > 0 and math.isfinite(curves[16]["headline"].std)


def test_k_meta_ratio_defaults_to_half_or_the_configs_k_meta() -> None:
    from types import SimpleNamespace

    from grm_reward.eval.runner import k_meta_ratio

    assert k_meta_ratio(SimpleNamespace(k=8), None) == 0.5
    assert k_meta_ratio(SimpleNamespace(k=8, k_meta=None), None) == 0.5
    assert k_meta_ratio(SimpleNamespace(k=8, k_meta=2), None) == 0.25
    assert k_meta_ratio(SimpleNamespace(k=8, k_meta=2), 0.75) == 0.75
