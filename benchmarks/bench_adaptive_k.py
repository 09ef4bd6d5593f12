"""Adaptive k (issue 12 item 1): judge samples and Voting accuracy, fixed k=16 against `--adaptive` (max 16).

On the shared pairwise sets (RewardBench v1 partial, LLMBar, an RMB pairwise sample), with the judge
double of tests/noisy_judge.py: per item a latent quality gap drawn around the data set's label (some
items hard, some the judge gets wrong whatever k), per-sample seeded noise and a position bias, the
paper's output format read by the real parser. Everything runs through ``GenerativeRewardModel`` in
one process. ``|dr|`` is how far a reward (unit scale) ends from its fixed-k=16 value; ``tol`` is the
run's tolerance (0.05 for the best-target runs, which do not aim at it). Fixed Voting@k for k = 1, 2, 4, 8 is read off the first k samples of the k=16 run (the
samples a fixed-k run draws; the script checks that adaptive samples are such a prefix). Accuracy
counts a tie as half (the expected credit of a random tie break). Goal: <= 0.5x samples at accuracy
within 1 point.

    .venv/bin/python benchmarks/bench_adaptive_k.py                # the double on the shared sets
    .venv/bin/python benchmarks/bench_adaptive_k.py --embedded     # plus the machinery on the embedded judge
    .venv/bin/python benchmarks/bench_adaptive_k.py --embedded-only  # only that
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grm_reward import GenerativeRewardModel, GRMConfig  # noqa: E402
from grm_reward.backends import ScriptedBackend  # noqa: E402
from grm_reward.eval.benchmarks import load_benchmark  # noqa: E402
from grm_reward.eval.items import EvalItem, item_views, view_request  # noqa: E402
from grm_reward.prompts.defences import defend_request  # noqa: E402
from grm_reward.types import Request, RewardResult  # noqa: E402
from grm_reward.voting import vote  # noqa: E402
from tests.conftest import find_shared_data  # noqa: E402
from tests.noisy_judge import NoisyJudge  # noqa: E402

K = 16
SETS = (("rewardbench", None), ("llmbar", None), ("rmb-pairwise", 1000))


def load_items(data_root: Path, limit: int | None) -> dict[str, list[EvalItem]]:
    sets = {}
    for name, cap in SETS:
        loaded = load_benchmark(name, data_root=data_root, limit=min(x for x in (cap, limit) if x) if cap or limit else None)
        sets[name] = [item for item in loaded.items if item.task == "best" and len(item.responses) == 2]
    return sets


def requests_for(items: list[EvalItem], judge: NoisyJudge) -> tuple[list[Request], list[int]]:
    """One listwise request per pair (the harness's list protocol); the index of the good response in it."""
    requests, goods = [], []
    for item in items:
        (view,) = item_views(item, "list")
        request = view_request(item, view)
        good = view.index(next(iter(item.good)))
        shown, _ = defend_request(request, rewrite=True, flag=True)  # the judge reads what the model shows it
        judge.add(shown.responses, good)
        requests.append(request)
        goods.append(good)
    return requests, goods


def credit(votes: list[float], good: int) -> float:
    top = max(votes)
    leaders = [i for i, v in enumerate(votes) if abs(v - top) <= 1e-9]
    return (1.0 / len(leaders)) if good in leaders else 0.0


def accuracy_of_prefix(results: list[RewardResult], goods: list[int], k: int) -> float:
    total = 0.0
    for result, good in zip(results, goods, strict=True):
        outcome = vote(result.samples[:k], 2, tie_break="none")
        total += credit(outcome.votes, good) if outcome.voters else 0.5
    return total / len(results)


def accuracy(results: list[RewardResult], goods: list[int]) -> float:
    return sum(credit(r.votes, g) if r.num_voted else 0.5 for r, g in zip(results, goods, strict=True)) / len(results)


def score(requests: list[Request], judge: NoisyJudge, **config: object) -> tuple[list[RewardResult], float]:
    started = time.perf_counter()
    with GenerativeRewardModel(backend=ScriptedBackend(judge, record=False), k=K, **config) as rm:
        results: list[RewardResult] = []
        for i in range(0, len(requests), 256):
            results.extend(rm.score_batch(requests[i : i + 256]))
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="items per set (default: all; RMB pairwise 1000)")
    parser.add_argument("--embedded", action="store_true", help="also run the machinery on the embedded judge")
    parser.add_argument("--embedded-only", action="store_true", help="only the embedded judge's run")
    parser.add_argument("--sample-sd", type=float, default=1.2, help="the double's per-sample noise (score points)")
    parser.add_argument("--item-sd", type=float, default=1.5, help="the spread of the double's per-item gaps")
    args = parser.parse_args()
    if args.embedded_only:
        embedded_run()
        return
    data_root = find_shared_data()
    if data_root is None:
        raise SystemExit("needs the shared data (../shared/data or $GRM_REWARD_DATA)")
    judge = NoisyJudge(sample_sd=args.sample_sd, item_sd=args.item_sd)
    sets = load_items(data_root, args.limit)
    per_set = {name: requests_for(items, judge) for name, items in sets.items()}
    requests = [r for reqs, _ in per_set.values() for r in reqs]
    goods = [g for _, gs in per_set.values() for g in gs]
    print(f"judge double (tests/noisy_judge.py) on {', '.join(f'{n} {len(s)}' for n, s in sets.items())} pairs; "
          f"max k={K}, temperature 0.5, shuffle random; per-sample noise sd {judge.sample_sd}, item gap "
          f"N({judge.mean_gap}, {judge.item_sd}), position bias {judge.position_bias}, {judge.invalid_share:.0%} unreadable")

    fixed, fixed_s = score(requests, judge)
    print(f"\n{'run':<34} {'samples/request':>15} {'x fixed16':>9} {'accuracy':>9} {'vs fixed16':>10} "
          f"{'same pick':>9} {'p95 |dr|':>8} {'|dr|<=tol':>8}")
    full = accuracy(fixed, goods)
    for k in (1, 2, 4, 8, 16):
        acc = accuracy_of_prefix(fixed, goods, k)
        print(f"{'fixed k=' + str(k):<34} {k:>15.2f} {k / K:>9.3f} {100 * acc:>8.2f}% {100 * (acc - full):>+9.2f}")
    runs = [
        ("adaptive best, error 0.20", {"target": "best", "error": 0.20}),
        ("adaptive best, error 0.10", {"target": "best", "error": 0.10}),
        ("adaptive best, error 0.05 (default)", {"target": "best", "error": 0.05}),
        ("adaptive best, error 0.01", {"target": "best", "error": 0.01}),
        ("adaptive values, tol 0.10", {"target": "values", "tolerance": 0.10}),
        ("adaptive values, tol 0.05 (default)", {"target": "values", "tolerance": 0.05}),
    ]
    prefix_ok = True
    summary = {}
    for label, options in runs:
        results, _ = score(requests, judge, adaptive={"enabled": True, **options})
        drawn = sum(r.samples_drawn for r in results) / len(results)
        acc = accuracy(results, goods)
        same = sum(a.best == f.best for a, f in zip(results, fixed, strict=True)) / len(results)
        moved = sorted(
            abs(a - f) for ra, rf in zip(results, fixed, strict=True) for a, f in zip(ra.rewards, rf.rewards, strict=True)
            if a is not None and f is not None
        )
        tolerance = float(options.get("tolerance", 0.05))  # type: ignore[arg-type]
        within = sum(d <= tolerance + 1e-12 for d in moved) / len(moved)
        prefix_ok &= all(
            [(s.seed, s.text, s.order) for s in a.samples] == [(s.seed, s.text, s.order) for s in f.samples[: a.samples_drawn]]
            for a, f in zip(results, fixed, strict=True)
        )
        summary[label] = (drawn, acc)
        print(f"{label:<34} {drawn:>15.2f} {drawn / K:>9.3f} {100 * acc:>8.2f}% {100 * (acc - full):>+9.2f} "
              f"{100 * same:>8.1f}% {moved[len(moved) * 95 // 100]:>8.3f} {100 * within:>7.1f}%")
    print(f"\nadaptive samples are the first samples of the fixed run (seeds, texts, orders): {prefix_ok}")
    print("per set (fixed k=16 vs adaptive best, error 0.05): samples/request, accuracy")
    default, _ = score(requests, judge, adaptive={"enabled": True, "target": "best"})
    start = 0
    for name, (reqs, gs) in per_set.items():
        part_f, part_a = fixed[start : start + len(reqs)], default[start : start + len(reqs)]
        start += len(reqs)
        drawn = sum(r.samples_drawn for r in part_a) / len(part_a)
        print(f"  {name:<14} fixed 16.00 {100 * accuracy(part_f, gs):6.2f}%   adaptive {drawn:5.2f} "
              f"({drawn / K:.3f}x) {100 * accuracy(part_a, gs):6.2f}%")
    drawn, acc = summary["adaptive best, error 0.05 (default)"]
    print(f"\ngoal <= 0.5x samples within 1 point: {drawn / K:.3f}x samples, {100 * (acc - full):+.2f} points "
          f"-> {'met' if drawn / K <= 0.5 and abs(acc - full) <= 0.01 else 'NOT met'}  (fixed run {fixed_s:.1f} s)")
    if args.embedded:
        embedded_run()


def embedded_run() -> None:
    """The machinery end to end on the embedded SmolLM2 judge (format guarantee on: it rarely writes scores)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import PAIRS, load_judge

    config = GRMConfig(k=4, max_new_tokens=24, format_guarantee=True)
    backend = load_judge(config)  # shared by both models (closing it twice at the end is harmless)
    requests = [Request(prompt=p, responses=[c, r]) for p, c, r in PAIRS[:2]]
    adaptive_config = config.updated(adaptive={"enabled": True, "target": "best", "min_k": 2, "round_k": 1})
    fixed_rm = GenerativeRewardModel(config, backend=backend)
    adaptive_rm = GenerativeRewardModel(adaptive_config, backend=backend)
    try:
        started = time.perf_counter()
        fixed = fixed_rm.score_batch(requests)
        fixed_s = time.perf_counter() - started
        started = time.perf_counter()
        adaptive = adaptive_rm.score_batch(requests)
        adaptive_s = time.perf_counter() - started
    finally:
        adaptive_rm.close()
        fixed_rm.close()
    same = all(
        [(s.seed, s.text, s.order) for s in a.samples] == [(s.seed, s.text, s.order) for s in f.samples[: a.samples_drawn]]
        for a, f in zip(adaptive, fixed, strict=True)
    )
    print(f"\nembedded SmolLM2-135M judge (CPU, k max 4, rounds 2+1+1, format guarantee): samples drawn "
          f"{[r.samples_drawn for r in adaptive]} (fixed 4 each), best {[r.best for r in adaptive]} vs "
          f"{[r.best for r in fixed]}, prefix of the fixed samples: {same}; wall {adaptive_s:.1f} s vs {fixed_s:.1f} s")


if __name__ == "__main__":
    main()
