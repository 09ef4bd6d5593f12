"""The cost of grm-reward's layer over raw generation.

Measures, side by side in one run, on the embedded judge (transformers backend, CPU):

- ``score``: ``GenerativeRewardModel.score_batch`` end to end (templates, shuffling, the
  backend call, parsing, un-permuting, voting);
- ``raw``: the backend's ``generate`` alone on exactly the same generation requests (same
  prompts, same seeds, hence the same tokens), recorded from the ``score`` run.

and prints ``score / raw`` (goal: <= 1.05). Runs alternate (score, raw, score, raw, ...) so drift
on a noisy machine hits both; it reports the ratio of the fastest runs (noise only adds time) and
the median of the paired ratios. Two runs minutes apart differ by more than the layer costs on a
shared machine, so it also times, inside each ``score`` run, the part spent outside the backend's
``generate``: the layer's own share of that very run, which load cannot move between sides. A
last figure, with an instant scripted backend, is the layer's Python cost per judge sample.

    python benchmarks/bench_layer_overhead.py [--requests 4] [--k 4] [--max-new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from grm_reward import GenerativeRewardModel
from grm_reward.backends import Backend, GenerationOutput, GenerationRequest, ScriptedBackend

PROMPTS = [
    ("What is the boiling point of water at sea level?", ["100 degrees Celsius.", "About 90 degrees Celsius."]),
    ("Name a prime number greater than 10.", ["11", "12 is prime."]),
    ("Translate 'good morning' into French.", ["Bonjour.", "Bonne nuit."]),
    ("Give one tip for better sleep.", ["Keep a regular bedtime.", "Drink coffee late at night."]),
    ("What colour do you get by mixing blue and yellow?", ["Green.", "Purple."]),
    ("Summarise: the cat sat on the mat.", ["A cat sat on a mat.", "Dogs are loyal."]),
]


class Recording(Backend):
    """Passes calls through to a backend and keeps the requests it saw."""

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.seen: list[GenerationRequest] = []
        self.inner_seconds = 0.0  # wall time inside the wrapped backend's generate

    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        self.seen.extend(requests)
        started = time.perf_counter()
        try:
            return await self.inner.generate(requests)
        finally:
            self.inner_seconds += time.perf_counter() - started


def layer_python_cost(k: int, blocks: int = 40, rounds: int = 10) -> float:
    """Microseconds of our own code per judge sample, with an instant scripted judge: CPU time, the
    fastest of ``blocks`` blocks (other jobs on a shared machine only ever add time)."""
    rm = GenerativeRewardModel(
        backend=ScriptedBackend(["Specific Criteria: a (Weight: 50%)\nAnalysis: ok\nScores: \\boxed{6, 7}"]),
        k=k,
    )
    requests = [(p, r) for p, r in PROMPTS]
    rm.score_batch(requests)  # warm up
    best = float("inf")
    for _ in range(blocks):
        started = time.process_time()
        for _ in range(rounds):
            rm.score_batch(requests)
        best = min(best, time.process_time() - started)
    rm.close()
    return best / (rounds * len(requests) * k) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: on a small shared machine, OpenMP scheduling noise moves "
             "identical runs by +-30%%, more than the effect measured here)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from grm_reward.backends.transformers import TransformersBackend
    from grm_reward.config import GRMConfig

    config = GRMConfig(k=args.k, max_new_tokens=args.max_new_tokens, transformers={"device": "cpu", "batch_size": 32})
    backend = Recording(TransformersBackend.from_config(config))
    rm = GenerativeRewardModel(config, backend=backend)
    requests = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]

    rm.score_batch(requests[:1])  # warm up torch kernels
    backend.seen.clear()
    rm.score_batch(requests)
    recorded = list(backend.seen)

    score_times, raw_times, score_cpu, raw_cpu, outside = [], [], [], [], []
    for _ in range(args.repeats):
        backend.inner_seconds = 0.0
        started, cpu = time.perf_counter(), time.process_time()
        results = rm.score_batch(requests)
        score_times.append(time.perf_counter() - started)
        outside.append(score_times[-1] - backend.inner_seconds)
        score_cpu.append(time.process_time() - cpu)
        started, cpu = time.perf_counter(), time.process_time()
        # On the thread the score path runs on: torch keeps a thread pool per calling thread, and
        # two pools on one small machine slow each other down (measured: up to 1.5x either way).
        outputs = rm.run_sync(backend.inner.generate(recorded))
        raw_times.append(time.perf_counter() - started)
        raw_cpu.append(time.process_time() - cpu)
    tokens_score = sum(r.usage.completion_tokens for r in results)
    tokens_raw = sum(s.completion_tokens for o in outputs for s in o.samples)
    assert tokens_score == tokens_raw, "both sides must generate the same tokens"
    ratios = [s / r for s, r in zip(score_times, raw_times)]
    rm.close()

    print(f"judge: embedded SmolLM2-135M-Instruct on CPU ({args.threads} torch threads); {args.requests} requests x 2 responses, k={args.k}, "
          f"max_new_tokens={args.max_new_tokens}, {tokens_raw} completion tokens per run")
    print(f"score_batch wall time (s): {', '.join(f'{t:.2f}' for t in score_times)}")
    print(f"raw generate wall time (s): {', '.join(f'{t:.2f}' for t in raw_times)}")
    print(f"layer overhead ratio score/raw: best-of-runs {min(score_times) / min(raw_times):.3f}, "
          f"median of paired runs {statistics.median(ratios):.3f} "
          f"(runs: {', '.join(f'{r:.3f}' for r in ratios)}; goal <= 1.05)")
    print(f"layer overhead ratio score/raw in CPU time: best-of-runs {min(score_cpu) / min(raw_cpu):.3f}, "
          f"median of runs {statistics.median(score_cpu) / statistics.median(raw_cpu):.3f}")
    shares = [o / t for o, t in zip(outside, score_times)]
    print(f"inside each score_batch run, time outside the backend's generate: "
          f"{', '.join(f'{o * 1e3:.1f} ms' for o in outside)} = {max(shares) * 100:.3f} % of the run at most "
          f"(ratio {1 + max(shares):.4f}; goal <= 1.05)")
    print(f"layer's own Python cost: {layer_python_cost(args.k):.1f} us per judge sample (scripted instant judge, CPU time, fastest block)")


if __name__ == "__main__":
    main()
