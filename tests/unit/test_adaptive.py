"""Issue 12 item 1: adaptive k (grm_reward/adaptive.py and the model's rounds)."""

from __future__ import annotations

import random

import pytest

from grm_reward import GenerativeRewardModel, GRMConfig
from grm_reward.adaptive import drawn_k_meta, predictive_sd, round_sizes, settled
from grm_reward.backends.scripted import FillCall, JudgeCall, ScriptedBackend
from grm_reward.cli.options import add_config_arguments, config_from_args
from grm_reward.config import AdaptiveOptions
from grm_reward.errors import ConfigError
from grm_reward.meta_rm import ScriptedMetaRM
from grm_reward.planning import plan_request, shown_orders
from grm_reward.types import Request, RewardResult
from tests.noisy_judge import NoisyJudge

BEST = AdaptiveOptions(enabled=True, target="best")
VALUES = AdaptiveOptions(enabled=True, target="values")


def _requests(judge: NoisyJudge, count: int, n: int = 2) -> list[Request]:
    requests = []
    for i in range(count):
        responses = [f"answer {i}.{j}" for j in range(n)]
        judge.add(responses, good=i % n)
        requests.append(Request(prompt=f"question {i}", responses=responses))
    return requests


def _run(requests: list[Request], judge: NoisyJudge, **config: object) -> list[RewardResult]:
    with GenerativeRewardModel(backend=ScriptedBackend(judge), **config) as rm:
        return rm.score_batch(requests)


def _sample_view(result: RewardResult) -> list[tuple[object, ...]]:
    return [(s.text, s.seed, tuple(s.order), tuple(s.scores or ())) for s in result.samples]


# --- the invariant: adaptive samples are a prefix of the fixed-k samples ---------------------------
@pytest.mark.parametrize("shuffle", ["random", "balanced", "none"])
@pytest.mark.parametrize("target", ["best", "values"])
def test_adaptive_samples_are_a_prefix_of_the_fixed_k_samples(shuffle: str, target: str) -> None:
    judge = NoisyJudge()
    requests = _requests(judge, 24, n=3)
    fixed = _run(requests, judge, k=16, shuffle=shuffle)
    adaptive = _run(requests, judge, k=16, shuffle=shuffle, adaptive={"enabled": True, "target": target})
    drawn = [r.samples_drawn for r in adaptive]
    assert min(drawn) < 16 and all(d in (4, 8, 12, 16) for d in drawn)  # some stopped early: not vacuous
    for a, f in zip(adaptive, fixed, strict=True):
        assert f.samples_drawn == 16
        assert _sample_view(a) == _sample_view(f)[: a.samples_drawn]  # texts, seeds, orders and scores


@pytest.mark.parametrize("shuffle", ["random", "balanced", "none"])
def test_shown_orders_and_seeds_are_prefix_stable_in_k(shuffle: str) -> None:
    request = Request(prompt="q", responses=["a", "b", "c", "d"])
    for k in (1, 3, 4, 7, 16):
        assert shown_orders(shuffle, 4, k, random.Random(5)) == shown_orders(shuffle, 4, 16, random.Random(5))[:k]
        short, full = plan_request(request, GRMConfig(k=k)), plan_request(request, GRMConfig(k=16))
        assert short.seeds == full.seeds[:k] and short.orders == full.orders[:k]


def test_rounds_ask_the_backend_for_consecutive_seeds_of_each_order() -> None:
    judge = NoisyJudge()
    requests = _requests(judge, 1)
    backend = ScriptedBackend(judge)
    with GenerativeRewardModel(backend=backend, k=16, adaptive={"enabled": True, "min_k": 3, "round_k": 5}) as rm:
        (result,) = rm.score_batch(requests)
    asked = sorted(seed for request in backend.requests for seed in request.seeds)
    assert asked == sorted(s.seed for s in result.samples)  # each sample drawn once, none twice
    assert sum(request.n for request in backend.requests) == result.samples_drawn


# --- the reward's scale does not depend on how many samples voted ----------------------------------
def test_adaptive_rewards_are_means_over_the_votes_cast() -> None:
    def steady(call: JudgeCall) -> str:  # every sample agrees: the first round settles it
        return "Scores: \\boxed{" + ", ".join("9" if r == "good" else "3" for r in call.responses) + "}"

    request = [Request(prompt="q", responses=["good", "bad"])]
    (fixed,) = _run(request, steady, k=16)  # type: ignore[arg-type]
    (adaptive,) = _run(request, steady, k=16, adaptive={"enabled": True, "target": "best"})  # type: ignore[arg-type]
    assert adaptive.samples_drawn == 4 and adaptive.num_voted == 4
    assert adaptive.rewards == fixed.rewards and adaptive.best == fixed.best == 0
    assert adaptive.votes == [36.0, 12.0] and adaptive.to_dict()["samples_drawn"] == 4


def test_sum_normalisation_is_refused_with_adaptive_k() -> None:
    with pytest.raises(ConfigError, match="sum voting needs a fixed k"):
        GRMConfig(k=8, normalize="sum", adaptive={"enabled": True})
    assert GRMConfig(k=8, normalize="sum").adaptive.enabled is False  # the paper's sum stays at fixed k


def test_off_by_default_and_small_k_draws_everything() -> None:
    judge = NoisyJudge()
    requests = _requests(judge, 4)
    assert [r.samples_drawn for r in _run(requests, judge, k=8)] == [8] * 4
    assert [r.samples_drawn for r in _run(requests, judge, k=3, adaptive={"enabled": True})] == [3] * 4


def test_all_invalid_samples_keep_drawing_to_k_and_fail() -> None:
    with GenerativeRewardModel(backend=ScriptedBackend(["no scores here"]), k=8, adaptive={"enabled": True}) as rm:
        result = rm.score("q", ["a", "b"])
    assert result.samples_drawn == 8 and result.all_invalid and result.rewards == [None, None]


# --- interplay: format guarantee / token probabilities and the meta RM -----------------------------
def test_forced_scores_are_filled_per_round_like_the_fixed_run() -> None:
    judge = NoisyJudge(invalid_share=0.3)
    requests = _requests(judge, 12)

    good = {request.responses[i % 2] for i, request in enumerate(requests)}

    def fill(call: FillCall) -> tuple[list[int], list[float]]:  # knows the label, a little less sure in expectation
        return [8 if r in good else 4 for r in call.responses], [7.5 if r in good else 4.5 for r in call.responses]

    def run(**adaptive: object) -> list[RewardResult]:
        backend = ScriptedBackend(judge, fill=fill)
        with GenerativeRewardModel(backend=backend, k=12, format_guarantee=True, token_prob=True, **adaptive) as rm:
            return rm.score_batch(requests)

    fixed, adaptive = run(), run(adaptive={"enabled": True, "target": "best"})
    assert any(r.samples_drawn < 12 for r in adaptive) and any(s.forced for r in adaptive for s in r.samples)
    for a, f in zip(adaptive, fixed, strict=True):
        head = f.samples[: a.samples_drawn]
        assert [(s.seed, s.scores, s.forced, s.token_scores) for s in a.samples] == [
            (s.seed, s.scores, s.forced, s.token_scores) for s in head
        ]


def test_meta_rm_rates_each_sample_once_and_keeps_its_share_of_the_drawn() -> None:
    judge = NoisyJudge()
    requests = _requests(judge, 10)
    meta = ScriptedMetaRM(lambda text: float(sum(map(ord, text)) % 97))
    with GenerativeRewardModel(
        backend=ScriptedBackend(judge), meta_rm=meta, k=16, k_meta=8, adaptive={"enabled": True, "target": "best"}
    ) as rm:
        results = rm.score_batch(requests)
    drawn = [r.samples_drawn for r in results]
    assert sum(meta.calls) == sum(r.num_valid for r in results)  # every readable sample rated once
    assert min(drawn) < 16
    for result in results:
        assert result.num_voted == min(result.num_valid, drawn_k_meta(8, result.samples_drawn, 16))
        assert all(s.meta_score is not None for s in result.samples if s.valid)


# --- the rule itself --------------------------------------------------------------------------------
def test_round_sizes_cover_k_exactly() -> None:
    for k in range(1, 40):
        for min_k in (1, 4, 7):
            sizes = round_sizes(k, AdaptiveOptions(min_k=min_k, round_k=3))
            assert sum(sizes) == k and sizes[0] == min(k, min_k) and all(0 < s <= max(3, min_k) for s in sizes)


def test_best_target_needs_a_lead_the_remaining_samples_are_unlikely_to_undo() -> None:
    clear = [[9, 3], [8, 2], [9, 4], [8, 3]]
    assert settled(clear, 12, BEST, (1, 10))
    assert not settled([[6, 5], [5, 6], [6, 6], [7, 5]], 12, BEST, (1, 10))  # a near tie
    assert not settled([[6, 6]] * 4, 12, BEST, (1, 10))  # a tie is never settled
    assert not settled([], 12, BEST, (1, 10))  # nobody voted yet
    nan = float("nan")
    assert not settled([[9.0, nan]] * 4, 12, BEST, (1, 10)) and not settled([[nan, 2.0]] * 4, 12, VALUES, (1, 10))
    assert settled([[6, 6]] * 4, 0, BEST, (1, 10))  # nothing left to draw
    # A lead of 0.75 points a sample: settled with few samples left, not with very many.
    steady = [[7, 6], [6, 6], [8, 6], [6, 6]]
    assert settled(steady, 4, BEST, (1, 10)) and not settled(steady, 200, BEST, (1, 10))
    # a stricter error level waits for more evidence
    strict = BEST.model_copy(update={"error": 0.001})
    assert settled(steady, 12, BEST, (1, 10)) and not settled(steady, 12, strict, (1, 10))


def test_best_target_hard_bound_needs_no_statistics() -> None:
    # A lead bigger than the remaining samples could swing (9 points each) is final even with a wild spread.
    rows = [[10, 1], [10, 1], [10, 1], [1, 10], [10, 1]]  # lead 27 with 2 samples left: at most 18 to undo
    assert settled(rows, 2, BEST.model_copy(update={"prior_sd": 1.0, "error": 1e-9}), (1, 10))


def test_best_target_checks_every_rival_of_the_leader() -> None:
    rows = [[9, 3, 8], [9, 3, 9], [9, 2, 8], [8, 3, 9]]  # response 2 is close behind response 0
    assert not settled(rows, 12, BEST, (1, 10))
    assert settled([[9, 3, 3], [9, 3, 2], [9, 2, 3], [8, 3, 3]], 12, BEST, (1, 10))


def test_values_target_is_a_tolerance_on_every_reward() -> None:
    agreeing = [[7, 3]] * 8
    noisy = [[7, 3], [4, 6], [9, 1], [5, 5], [8, 2], [3, 7], [7, 4], [6, 2]]
    assert settled(agreeing, 8, VALUES, (1, 10))
    assert not settled(noisy, 8, VALUES, (1, 10))
    assert settled(noisy, 8, VALUES.model_copy(update={"tolerance": 0.5}), (1, 10))
    assert not settled([[7]] * 2, 14, VALUES, (1, 10))  # two agreeing samples are not yet certain


def test_predictive_sd_shrinks_with_samples_drawn_and_grows_with_samples_left() -> None:
    values = [6, 7, 5, 6]
    assert predictive_sd(values * 2, 8, 0.9) < predictive_sd(values, 12, 0.9)
    assert predictive_sd(values, 4, 0.9) < predictive_sd(values, 40, 0.9)
    assert predictive_sd([], 4, 0.9) == float("inf")


def test_the_rule_is_deterministic() -> None:
    judge = NoisyJudge()
    requests = _requests(judge, 16)
    first = _run(requests, judge, k=16, adaptive={"enabled": True})
    again = _run(requests, judge, k=16, adaptive={"enabled": True})
    assert [r.to_dict() for r in first] == [r.to_dict() for r in again]


# --- the flag -------------------------------------------------------------------------------------
def test_adaptive_flag_on_every_command() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["-k", "16", "--adaptive", "--adaptive-target", "best", "--adaptive-min-k", "2"])
    config = config_from_args(args)
    assert config.adaptive.enabled and config.adaptive.target == "best" and config.adaptive.min_k == 2
    assert not config_from_args(parser.parse_args(["-k", "16"])).adaptive.enabled


# --- evaluation: `eval --adaptive` ------------------------------------------------------------------
def _pairs_file(path, n: int):  # type: ignore[no-untyped-def]
    import json

    from tests.eval_helpers import marked

    rows = [
        {"id": f"p{i}", "prompt": f"question {i}", "chosen": marked(f"good {i}", 6 + i % 3), "rejected": marked(f"bad {i}", 5)}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_adaptive_votes_with_every_sample_drawn_and_reports_the_count(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from grm_reward.cli import main

    pairs = _pairs_file(tmp_path / "pairs.jsonl", 12)
    common = ["eval", "-b", f"pairwise={pairs}", "--backend", "tests.eval_helpers:noisy_quality_backend", "-k", "16",
              "--no-plots", "--resamples", "2", "-q"]
    assert main([*common, "-o", str(tmp_path / "fixed")]) == 0
    assert main([*common, "--adaptive", "-o", str(tmp_path / "adaptive")]) == 0
    fixed = json.loads((tmp_path / "fixed" / "report.json").read_text())
    adaptive = json.loads((tmp_path / "adaptive" / "report.json").read_text())
    assert adaptive["adaptive"] and adaptive["config"]["adaptive"]["target"] == "best"  # eval stops for the best
    assert adaptive["ks"] == [16] and fixed["ks"] == [1, 2, 4, 8, 16]
    drawn = adaptive["benchmarks"][0]["samples"]["drawn_per_request"]
    assert fixed["benchmarks"][0]["samples"]["drawn_per_request"] == 16 and 4 <= drawn < 16
    assert adaptive["benchmarks"][0]["curves"]["voting"]["16"]["headline"]["mean"] >= 0.5
    assert "samples drawn per request" in (tmp_path / "adaptive" / "report.md").read_text()
    assert main([*common, "--adaptive", "--k-values", "1,4", "-o", str(tmp_path / "bad")]) != 0


# --- serving: samples_drawn in the answers ----------------------------------------------------------
def test_server_answers_say_how_many_samples_were_drawn() -> None:
    from fastapi.testclient import TestClient

    from grm_reward.server import build_app

    def steady(call: JudgeCall) -> str:
        return "Scores: \\boxed{" + ", ".join("9" if r == "good" else "2" for r in call.responses) + "}"

    config = GRMConfig(k=16, batching={"window_s": 0.005}, adaptive={"enabled": True, "target": "best"})
    with TestClient(build_app(config, backend=ScriptedBackend(steady))) as client:
        body = {"requests": [{"prompt": "q", "responses": ["good", "bad"]}], "include_samples": False}
        [result] = client.post("/v1/rewards", json=body).json()["results"]
        openrlhf = client.post("/get_reward", json={"query": ["q good"], "prompts": ["q "], "labels": [""]}).json()
    assert result["samples_drawn"] == 4 and result["num_voted"] == 4 and result["best"] == 0
    assert openrlhf["extra_logs"]["grm_samples_drawn"] == [4.0]  # one response: its reward settled in round one
