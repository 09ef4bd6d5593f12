"""Prefill sharing: prompt tokens run through the judge, (1) k=8 samples in one request vs 8 requests,
(2) a listwise GRPO group (k=4, G=8) with shared prefixes off (today) vs on.

The transformers backend runs a prompt once (all but its last token) and copies its KV cache to
the k sample rows; 8 independent generations prefill the prompt 8 times. Samples share a prompt
only when they show the responses in the same order, so the figure depends on the shuffle:

- 1 response: every sample has the same prompt;
- 2 responses, ``shuffle=random``: about half the samples see each order (2 prefills);
- 2 responses, ``shuffle=balanced``: exactly 2 orders.

Every listwise sample shows the G responses in its own order, so its k prompts differ from the first
response on; ``transformers.share_prefixes`` prefills the head they share (template, query) once
and each order's tail after it (part 2: one request, and a batch of four groups of different
prompts in one call, where the template head is shared across requests too; the sample texts must
be identical either way).

Measured from the backend's own counters (``BackendStats.prefill_tokens``) on the embedded judge,
side by side with wall and CPU time (of this process), in one run.

    python benchmarks/bench_prefill_sharing.py [--k 8] [--max-new-tokens 16] [--part samples|prefixes|all]
        [--threads 1] [--on-first] [--profile]

``--profile`` times each forward pass (rows x positions, keys) of the four-group call, on and off.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench_listwise_tokens import GROUP, PROMPT

from grm_reward import GenerativeRewardModel, Request
from grm_reward.backends import GenerationRequest
from grm_reward.backends.transformers import TransformersBackend
from grm_reward.config import GRMConfig

QUESTION = "Explain briefly why the sky looks blue during the day and red at sunset."
RESPONSES = [
    "Air molecules scatter short blue wavelengths of sunlight more than red ones (Rayleigh scattering); at sunset "
    "light crosses more air, so most blue is scattered away and reds remain.",
    "Because the sky reflects the colour of the oceans, and at sunset the sun heats the air until it glows red.",
]


def measure(rm: GenerativeRewardModel, requests: list[Request]) -> tuple[int, int, float]:
    """(prefilled tokens, distinct prompts sent, wall seconds) of one score_batch call."""
    stats = rm.backend.stats
    before_prefill, before_prompts = stats.prefill_tokens, stats.prompts
    started = time.perf_counter()
    rm.score_batch(requests)
    return stats.prefill_tokens - before_prefill, stats.prompts - before_prompts, time.perf_counter() - started


def samples_part(backend: TransformersBackend, base: GRMConfig, k: int) -> None:
    print(f"{'case':<31}{'prompts':>8}{'prefilled tokens':>20}{'ratio':>8}{'wall s':>16}{'ratio':>8}")
    for label, responses, shuffle in (
        ("1 response", RESPONSES[:1], "random"),
        ("2 responses, shuffle=random", RESPONSES, "random"),
        ("2 responses, shuffle=balanced", RESPONSES, "balanced"),
    ):
        shared = GenerativeRewardModel(base.updated(k=k, shuffle=shuffle), backend=backend)
        # Independent: k requests of one sample each (different seeds via different base seeds).
        single = [GenerativeRewardModel(base.updated(k=1, temperature=0.5, seed=s, shuffle=shuffle), backend=backend)
                  for s in range(k)]
        measure(shared, [Request(QUESTION, responses)])  # warm up
        prefill_shared, prompts, wall_shared = measure(shared, [Request(QUESTION, responses)])
        prefill_indep, wall_indep = 0, 0.0
        for rm in single:
            p, _, w = measure(rm, [Request(QUESTION, responses)])
            prefill_indep, wall_indep = prefill_indep + p, wall_indep + w
        print(f"{label:<31}{prompts:>8}{prefill_shared:>10} / {prefill_indep:<8}{prefill_shared / prefill_indep:>8.3f}"
              f"{wall_shared:>7.1f} / {wall_indep:<6.1f}{wall_shared / wall_indep:>8.3f}")
    print(f"columns: distinct prompts in the k={k} request; prompt tokens run through the model, one k-sample "
          f"request / {k} one-sample requests; wall time, same split")


def prefixes_part(backend: TransformersBackend, base: GRMConfig, k: int, on_first: bool = False) -> None:
    """Listwise GRPO groups at k, G=8: shared prefixes off (today) vs on, same backend, same seeds."""
    config = base.updated(k=k, temperature=0.5)
    batch = [Request(PROMPT.replace("4 muffins", f"{m} muffins"), GROUP) for m in (4, 5, 6, 7)]
    warm = GenerationRequest(messages=({"role": "user", "content": "Hello"},), n=1, seed=0, max_tokens=2, temperature=0)
    asyncio.run(backend.generate([warm]))  # warm up the kernels before the first measured call
    print(f"listwise GRPO group G={len(GROUP)}, k={k} (one prompt per shown order)")
    print(f"{'case':<26}{'requests':>9}{'prefilled tokens per request':>32}{'ratio':>8}{'wall s':>16}{'ratio':>8}"
          f"{'CPU s':>16}{'ratio':>8}{'same texts':>12}")
    default = backend.share_prefixes
    for label, requests in (("one request", batch[:1]), ("4 groups in one call", batch)):
        counts, walls, cpus, texts = {}, {}, {}, {}
        for share in (True, False) if on_first else (False, True):
            backend.share_prefixes = share
            rm = GenerativeRewardModel(config, backend=backend)
            before = backend.stats.prefill_tokens
            started, cpu_started = time.perf_counter(), time.process_time()
            results = rm.score_batch(requests)
            walls[share], cpus[share] = time.perf_counter() - started, time.process_time() - cpu_started
            counts[share] = (backend.stats.prefill_tokens - before) / len(requests)
            texts[share] = [s.text for r in results for s in r.samples]
        backend.share_prefixes = default
        print(f"{label:<26}{len(requests):>9}{counts[True]:>15.0f} / {counts[False]:<14.0f}"
              f"{counts[True] / counts[False]:>8.3f}{walls[True]:>7.1f} / {walls[False]:<6.1f}"
              f"{walls[True] / walls[False]:>8.3f}{cpus[True]:>7.1f} / {cpus[False]:<6.1f}"
              f"{cpus[True] / cpus[False]:>8.3f}{texts[True] == texts[False]!s:>12}")
    print("columns: prompt tokens run through the model per request, shared prefixes on / off (off is the "
          "prefill before shared prefixes); wall and CPU time of the score_batch call, same split")


def profile_part(backend: TransformersBackend, base: GRMConfig, k: int) -> None:
    """Each forward pass of the four-group call (prefill levels, then decode steps), on and off."""
    config = base.updated(k=k, temperature=0.5)
    batch = [Request(PROMPT.replace("4 muffins", f"{m} muffins"), GROUP) for m in (4, 5, 6, 7)]
    model = backend.model
    passes: list[tuple[int, int, int, float]] = []

    class Timed:  # the model, each call timed
        def __call__(self, **inputs):
            started = time.perf_counter()
            out = model(**inputs)
            rows, positions = inputs["input_ids"].shape
            passes.append((rows, positions, inputs["attention_mask"].shape[1], time.perf_counter() - started))
            return out

        def __getattr__(self, name):
            return getattr(model, name)

    default = backend.share_prefixes
    for share in (False, True):
        passes.clear()
        backend.share_prefixes, backend.model = share, Timed()
        try:
            started = time.perf_counter()
            GenerativeRewardModel(config, backend=backend).score_batch(batch)
            wall = time.perf_counter() - started
        finally:
            backend.share_prefixes, backend.model = default, model
        print(f"shared prefixes {'on' if share else 'off'}: {wall:.1f} s; passes (rows x positions, keys: s)")
        for rows, positions, keys, seconds in passes:
            print(f"  {rows:>3} x {positions:<5} {keys:>5} keys: {seconds:6.2f}"
                  f"{'' if positions == 1 else f'  {1000 * seconds / (rows * positions):5.1f} ms/position'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8, help="samples per request in part 1")
    parser.add_argument("--listwise-k", type=int, default=4, help="samples per listwise request in part 2")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--part", choices=("samples", "prefixes", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--on-first", action="store_true", help="part 2: run shared prefixes on before off")
    parser.add_argument("--profile", action="store_true", help="time each forward pass of the four-group call")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    base = GRMConfig(max_new_tokens=args.max_new_tokens, transformers={"device": "cpu", "batch_size": 32})
    backend = TransformersBackend.from_config(base)
    print(f"judge: embedded SmolLM2-135M-Instruct on CPU, max_new_tokens={args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    if args.profile:
        profile_part(backend, base, args.listwise_k)
        return
    if args.part in ("samples", "all"):
        samples_part(backend, base, args.k)
    if args.part in ("prefixes", "all"):
        prefixes_part(backend, base, args.listwise_k, args.on_first)


if __name__ == "__main__":
    main()
