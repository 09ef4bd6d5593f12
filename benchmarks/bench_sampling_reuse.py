"""Sampling-pass reuse: one K=32 pass for every k, versus one run per k.

``grm-reward eval`` samples K judgements per item once and computes Voting@k for every k <= K by
resampling. The alternative is a separate run per k (k = 1, 2, 4, ..., 32 samples). This script
runs both, side by side, through the harness itself (``grm_reward.eval.evaluate``: sampling,
storing, resampling, report), on the same judge engine loaded once, and prints the ratios of
wall time, CPU time, samples, completion tokens and prompt tokens prefilled.

It also checks that the one pass loses nothing: each k-run's samples are compared with the
first k samples of the K pass (same seeds, same shown orders).

    .venv/bin/python benchmarks/bench_sampling_reuse.py                 # embedded judge, CPU, 2 items
    .venv/bin/python benchmarks/bench_sampling_reuse.py --items 4 --max-new-tokens 32
    .venv/bin/python benchmarks/bench_sampling_reuse.py --model BBQGOD/DeepSeek-GRM-27B --device cuda

Times are wall-clock on whatever machine runs it; on a shared CPU they are noisy, the CPU-time,
sample and token ratios much less so. The embedded 135M judge shows the machinery, not quality.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from _common import judge_name, load_judge, write_pairs

from grm_reward import GenerativeRewardModel, GRMConfig
from grm_reward.eval.runner import EvalSettings, evaluate


def run(config: GRMConfig, backend, data: Path, out: Path, ks: tuple[int, ...]) -> dict:
    """One harness run; returns its measurements."""
    scorer = GenerativeRewardModel(config, backend=backend)
    settings = EvalSettings(benchmarks=[("pairwise", str(data))], output_dir=out, ks=ks, plots=False, resume=False)
    prefill, samples = backend.stats.prefill_tokens, backend.stats.samples
    wall, cpu = time.perf_counter(), time.process_time()
    report = evaluate(config, settings, scorer=scorer)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    bench = report["benchmarks"][0]
    return {
        "k": config.k,
        "wall_s": wall,
        "cpu_s": cpu,
        "samples": backend.stats.samples - samples,
        "completion_tokens": bench["tokens"]["completion_total"],
        "prefill_tokens": backend.stats.prefill_tokens - prefill,
        "voting": {k: v["headline"]["mean"] for k, v in bench["curves"]["voting"].items()},
        "texts": _texts(Path(bench["samples_file"])),
    }


def _median_run(runs: list[dict]) -> dict:
    """The first run's counts (identical across rounds) with the median wall and CPU times."""
    merged = dict(runs[0])
    for key in ("wall_s", "cpu_s"):
        merged[key] = statistics.median(m[key] for m in runs)
    return merged


def _texts(store: Path) -> dict[str, list[str]]:
    texts = {}
    for line in store.read_text(encoding="utf-8").splitlines()[1:]:
        record = json.loads(line)
        texts[record["uid"]] = [s["text"] for s in record["samples"][0]]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,2,4,8,16,32", help="k values; the one pass samples max(k)")
    parser.add_argument("--items", type=int, default=2, help="pairwise items (built in, 1-8)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.5, help="for every run, k=1 included (Voting@1)")
    parser.add_argument("--model", default=None, help="judge model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="transformers backend batch size")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; each runs the one pass and every k-run once, in a shuffled order; "
                             "times are medians over rounds")
    args = parser.parse_args()
    ks = tuple(sorted({int(k) for k in args.ks.split(",")}))
    k_max = ks[-1]
    base = GRMConfig(model=args.model, k=k_max, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                     transformers={"device": args.device, "batch_size": args.batch_size})
    backend = load_judge(base)
    with tempfile.TemporaryDirectory(prefix="grm-bench-reuse-") as tmp:
        root = Path(tmp)
        data = write_pairs(root / "pairs.jsonl", args.items)
        run(base.updated(k=1), backend, data, root / "warmup", (1,))  # first-call costs stay out of both sides
        loads = [os.getloadavg()[0]]
        measured: dict[str, list[dict]] = {name: [] for name in ["one", *map(str, ks)]}
        order = list(measured)
        for r in range(args.repeats):  # a shuffled order per round: drift on a shared machine hits every run
            random.Random(r).shuffle(order)
            for name in order:
                if name == "one":
                    measured[name].append(run(base, backend, data, root / "one", ks))
                else:
                    k = int(name)
                    measured[name].append(run(base.updated(k=k), backend, data, root / f"k{k}", (k,)))
        loads.append(os.getloadavg()[0])
    one = _median_run(measured["one"])
    separate = [_median_run(measured[str(k)]) for k in ks]

    print(f"judge: {judge_name(base)} on {args.device} · {args.items} pairwise items · "
          f"max_new_tokens={args.max_new_tokens} · temperature={args.temperature} · "
          f"times: median of {args.repeats} rounds · load average {loads[0]:.1f} -> {loads[1]:.1f} "
          f"on {os.cpu_count()} CPUs")
    header = f"{'run':<22}{'wall s':>9}{'cpu s':>9}{'samples':>9}{'compl tok':>11}{'prefill tok':>13}"
    print(header)
    print("-" * len(header))

    def row(label: str, m: dict) -> None:
        print(f"{label:<22}{m['wall_s']:>9.1f}{m['cpu_s']:>9.1f}{m['samples']:>9}{m['completion_tokens']:>11}"
              f"{m['prefill_tokens']:>13}")

    row(f"one pass, K={k_max}", one)
    for m in separate:
        row(f"  separate run, k={m['k']}", m)
    totals = {key: sum(m[key] for m in separate) for key in ("wall_s", "cpu_s", "samples", "completion_tokens",
                                                            "prefill_tokens")}
    row("separate runs, total", totals)
    print("-" * len(header))
    for key, label in (("wall_s", "wall time"), ("cpu_s", "CPU time"), ("samples", "samples"),
                       ("completion_tokens", "completion tokens"), ("prefill_tokens", "prompt tokens prefilled")):
        print(f"separate / one pass, {label:<24} {totals[key] / one[key]:6.2f}x")
    same = total = 0
    for m in separate:
        for uid, texts in m["texts"].items():
            total += len(texts)
            same += sum(a == b for a, b in zip(texts, one["texts"][uid][: m["k"]], strict=True))
    print(f"k-run samples identical to the first k samples of the K={k_max} pass: {same}/{total}")
    print("Voting@k from the one pass (mean over k-subsets) / from the k-run (its first k samples): " + ", ".join(
        f"k={m['k']}: {100 * one['voting'][str(m['k'])]:.1f} / {100 * m['voting'][str(m['k'])]:.1f}" for m in separate))


if __name__ == "__main__":
    main()
