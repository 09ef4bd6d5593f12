"""Tail latency (issue 13): one stuck judge call, and 10 % slow calls, with and without hedging.

Workload: 64 GRPO groups x 4 responses judged listwise (one judge call per group), every group
scored at once through ``GenerativeRewardModel.ascore_batch`` and the `openai` backend, 32 judge
calls in flight, against ``tests/fault_judge.py`` answering in 0.05 s in its own process (in the
spread runs, in log-normally spread times of median 0.05 s, a hedge as long as its original). Each
configuration gets a fresh judge process, two warm-up rounds (latencies become known, and what
hedging a batch's last calls buys), then the
measured round, side by side in one run; ``--repeats`` interleaved rounds of the short runs, medians
shown (the ratio of each repeat's hang run to its no-hang run too). Run:
``python benchmarks/bench_tail_latency.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grm_reward import GenerativeRewardModel, GRMConfig, Request  # noqa: E402

GROUPS, RESPONSES, IN_FLIGHT, LATENCY = 64, 4, 32, 0.05
#: Log-normal sigma of a healthy judge's call times in the spread runs (p95 / median = e^(1.645 sigma) = 2.3).
SPREAD = 0.5
#: Rounds before the measured one: the first makes latencies known (hedging starts), the second lets the
#: tail hedge learn whether duplicating a batch's last calls wins (ServerHealth.tail_hedge_outcome).
WARM_UP = 2
#: The policy on main before issue 13: no hedging, the fixed 300 s timeout.
TODAY = {"hedge": False, "latency_timeout_factor": 0.0}


def requests(round_: int) -> list[Request]:
    return [
        Request(f"round {round_}, question {g}: what is {g} + {g}?", [f"answer {r} to {g}" for r in range(RESPONSES)])
        for g in range(GROUPS)
    ]


async def one_round(model: GenerativeRewardModel, round_: int) -> tuple[list[Any], list[float], float]:
    """Rewards per group (None: lost), per-group reward latencies and wall time of one round."""
    latencies: list[float] = []

    async def score(request: Request) -> list[float | None] | None:
        started = time.monotonic()
        try:
            (result,) = await model.ascore_batch([request])
        except Exception as exc:  # a lost group counts as None
            print(f"  lost: {type(exc).__name__}: {exc}", file=sys.stderr)
            return None
        finally:
            latencies.append(time.monotonic() - started)
        return None if None in result.rewards else result.rewards

    started = time.monotonic()
    rewards = await asyncio.gather(*(score(r) for r in requests(round_)))
    return list(rewards), latencies, time.monotonic() - started


def scenario(options: dict[str, Any], stragglers: list[int], straggle_s: float, spread: float = 0.0) -> dict[str, Any]:
    """A fresh judge process; ``WARM_UP`` rounds, then the measured round in which the first call of
    each group in ``stragglers`` waits ``straggle_s`` more (its hedge or retry does not). ``spread``:
    calls take log-normally spread times (sigma), a hedge as long as its original (the same sample)."""
    marks = [arg for g in stragglers for arg in ("--straggle", f"round {WARM_UP}, question {g}:")]
    command = [sys.executable, str(ROOT / "tests" / "fault_judge.py"), "--latency", str(LATENCY), "--spread", str(spread)]
    judge = subprocess.Popen(
        [*command, "--straggle-s", str(straggle_s), *marks], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert judge.stdout is not None
        url = judge.stdout.readline().strip()
        openai = {"base_url": url, "server": "generic", "max_concurrency": IN_FLIGHT, **options}
        model = GenerativeRewardModel(GRMConfig(backend="openai", openai=openai))

        async def run() -> dict[str, Any]:
            try:
                for round_ in range(WARM_UP):
                    await one_round(model, round_)
                stats = model.backend.stats.extra
                before = {key: stats[key] for key in ("hedges", "hedge_wins", "http_requests")}
                gc.collect()  # else a full collection lands in some measured round: +0.1 s, always the same repeat
                rewards, latencies, wall = await one_round(model, WARM_UP)
                return {
                    "rewards": rewards,
                    "wall": wall,
                    "p50": statistics.median(latencies),
                    "p99": sorted(latencies)[max(0, round(0.99 * len(latencies)) - 1)],
                    **{key: stats[key] - before[key] for key in before},
                }
            finally:
                await model.aclose()

        return asyncio.run(run())
    finally:
        judge.communicate("", timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hang", type=float, default=60.0, help="seconds the one stuck call hangs")
    parser.add_argument("--skip-today", action="store_true", help="skip the run with today's policy (it waits --hang s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the short runs (medians shown)")
    args = parser.parse_args()
    hang_at = [GROUPS // 2]  # one group's call in the middle of the round
    slow_tenth = list(range(0, GROUPS, 10))  # 10 % of the calls (7 of 64)
    runs = {
        "no hang, hedging (default)": ({}, [], 0.0),
        "one call hangs, hedging (default)": ({}, hang_at, args.hang),
        "10% calls at 2 s, hedging (default)": ({}, slow_tenth, 2.0),
        "10% calls at 2 s, no hedging": ({"hedge": False}, slow_tenth, 2.0),
        # a healthy judge whose calls vary in length as generations do: hedges here buy nothing
        f"no hang, latency spread {SPREAD}, hedging": ({}, [], 0.0, SPREAD),
        f"no hang, latency spread {SPREAD}, no hedging": ({"hedge": False}, [], 0.0, SPREAD),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(max(1, args.repeats)):  # interleaved: a change of load hits every run alike
        for name, spec in runs.items():
            results[name].append(scenario(*spec))
    if not args.skip_today:  # once: it waits --hang s
        results["one call hangs, policy before issue 13"] = [scenario(TODAY, hang_at, args.hang)]
    base = results["no hang, hedging (default)"]
    reference = base[0]["rewards"]
    print(f"{GROUPS} groups x {RESPONSES} responses listwise, judge {LATENCY}s per call, {IN_FLIGHT} calls in flight")
    print(f"medians of {len(base)} interleaved repeats (calls, hedges, lost: totals)")
    print(f"{'run':<40} {'wall s':>7} {'vs no hang':>10} {'p50 s':>6} {'p99 s':>6} {'calls':>5} {'hedges':>6} {'lost':>4} {'same':>5}")
    base_wall = statistics.median(r["wall"] for r in base)
    for name, rs in results.items():
        wall = statistics.median(r["wall"] for r in rs)
        lost = sum(x is None for r in rs for x in r["rewards"])
        same = all(r["rewards"] == reference for r in rs)
        print(
            f"{name:<40} {wall:7.2f} {wall / base_wall:9.2f}x {statistics.median(r['p50'] for r in rs):6.2f} "
            f"{statistics.median(r['p99'] for r in rs):6.2f} {sum(r['http_requests'] for r in rs):5d} "
            f"{sum(r['hedges'] for r in rs):6d} {lost:4d} {same!s:>5}"
        )
    hung = results["one call hangs, hedging (default)"]
    ratios = ", ".join(f"{h['wall'] / b['wall']:.2f}x" for h, b in zip(hung, base, strict=True))
    print(f"one call hangs / no hang, per repeat: {ratios}")
    for name in ("no hang, hedging (default)", f"no hang, latency spread {SPREAD}, hedging"):
        extra = sum(r["hedges"] for r in results[name])
        calls = GROUPS * len(results[name])
        print(f"extra judge calls from hedging under normal load ({name}): {extra}/{calls} = {extra / calls:.1%}")


if __name__ == "__main__":
    main()
