"""Prefill sharing: prompt tokens run through the judge per request, k=8 in one request vs 8 requests.

The transformers backend runs a prompt once (all but its last token) and copies its KV cache to
the k sample rows; 8 independent generations prefill the prompt 8 times. Samples share a prompt
only when they show the responses in the same order, so the figure depends on the shuffle:

- 1 response: every sample has the same prompt;
- 2 responses, ``shuffle=random``: about half the samples see each order (2 prefills);
- 2 responses, ``shuffle=balanced``: exactly 2 orders.

Measured from the backend's own counters (``BackendStats.prefill_tokens``) on the embedded judge,
side by side with wall time, in one run.

    python benchmarks/bench_prefill_sharing.py [--k 8] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import time

from grm_reward import GenerativeRewardModel, Request
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    base = GRMConfig(max_new_tokens=args.max_new_tokens, transformers={"device": "cpu", "batch_size": 32})

    from grm_reward.backends.transformers import TransformersBackend

    backend = TransformersBackend.from_config(base)
    print(f"judge: embedded SmolLM2-135M-Instruct on CPU, k={args.k}, max_new_tokens={args.max_new_tokens}")
    print(f"{'case':<31}{'prompts':>8}{'prefilled tokens':>20}{'ratio':>8}{'wall s':>16}{'ratio':>8}")
    for label, responses, shuffle in (
        ("1 response", RESPONSES[:1], "random"),
        ("2 responses, shuffle=random", RESPONSES, "random"),
        ("2 responses, shuffle=balanced", RESPONSES, "balanced"),
    ):
        shared = GenerativeRewardModel(base.updated(k=args.k, shuffle=shuffle), backend=backend)
        # Independent: k requests of one sample each (different seeds via different base seeds).
        single = [GenerativeRewardModel(base.updated(k=1, temperature=0.5, seed=s, shuffle=shuffle), backend=backend)
                  for s in range(args.k)]
        measure(shared, [Request(QUESTION, responses)])  # warm up
        prefill_shared, prompts, wall_shared = measure(shared, [Request(QUESTION, responses)])
        prefill_indep, wall_indep = 0, 0.0
        for rm in single:
            p, _, w = measure(rm, [Request(QUESTION, responses)])
            prefill_indep, wall_indep = prefill_indep + p, wall_indep + w
        print(f"{label:<31}{prompts:>8}{prefill_shared:>10} / {prefill_indep:<8}{prefill_shared / prefill_indep:>8.3f}"
              f"{wall_shared:>7.1f} / {wall_indep:<6.1f}{wall_shared / wall_indep:>8.3f}")
    print(f"columns: distinct prompts in the k={args.k} request; prompt tokens run through the model, one k-sample "
          f"request / {args.k} one-sample requests; wall time, same split")


if __name__ == "__main__":
    main()
