"""Judge tokens per rewarded response for a GRPO group of G=8: listwise versus one by one.

A GRPO step rewards a group of G responses to one prompt. A listwise judge reads the prompt once
with all G responses and writes one judgement scoring them all; a one-by-one judge reads the
prompt G times, once per response, and writes G judgements. This script scores the same group
both ways with the same judge and counts the tokens the backend reports (real tokenizer counts):

- prompt tokens: the judge prompts actually prefilled (a prompt shared by samples shown in the
  same order counts once; with k > 1 each listwise sample shows its own shuffled order);
- completion tokens: what the judge generated.

    .venv/bin/python benchmarks/bench_listwise_tokens.py                      # embedded judge, CPU
    .venv/bin/python benchmarks/bench_listwise_tokens.py --ks 1,8 --max-new-tokens 256

The embedded 135M judge rarely stops before its budget, so its completion counts are close to
k x max_new_tokens per judge input: the prompt-token ratio is the figure that transfers to a real
judge; the completion ratio depends on how long the judge writes.
"""

from __future__ import annotations

import argparse
import time

from _common import judge_name, load_judge

from grm_reward import GenerativeRewardModel, GRMConfig, Request

PROMPT = (
    "A bakery sells muffins for $3 each and cookies for $1.50 each. Sam buys 4 muffins and 6 cookies. "
    "How much does Sam spend in total? Explain briefly."
)

#: Eight rollouts of a policy for PROMPT, right and wrong, short and long (the correct total is $21).
GROUP = [
    "Muffins: 4 x $3 = $12. Cookies: 6 x $1.50 = $9. Total: $12 + $9 = $21.",
    "Sam spends $21.",
    "4 muffins cost 4 * 3 = 12 dollars and 6 cookies cost 6 * 1.5 = 9 dollars, so Sam spends 12 + 9 = 21 "
    "dollars in total. We can double-check: 21 - 12 = 9, which matches the cookies.",
    "Muffins cost 4 x 3 = 12. Cookies cost 6 x 1.50 = 7.50. Total = 19.50 dollars.",
    "First, the muffins: each is $3 and there are 4, so that is $12. Next, the cookies: each is $1.50 and "
    "there are 6. Six times one dollar is $6 and six times fifty cents is $3, so the cookies cost $9. "
    "Adding both parts, $12 + $9 gives $21. So Sam spends $21 at the bakery.",
    "The total is 4 + 6 = 10 items, and at about $2 each that is $20.",
    "4 * 3 + 6 * 1.5 = 12 + 9 = 24, so the answer is $24.",
    "Sam pays $12 for the muffins and $9 for the cookies, $21 altogether.",
]


def measure(rm: GenerativeRewardModel, requests: list[Request]) -> dict:
    started = time.perf_counter()
    results = rm.score_batch(requests)
    samples = [s for r in results for s in r.samples]
    return {
        "judge_inputs": len(requests),
        "samples": len(samples),
        "prompt_tokens": sum(r.usage.prompt_tokens for r in results),
        "completion_tokens": sum(r.usage.completion_tokens for r in results),
        "hit_budget": sum(1 for s in samples if s.finish_reason == "length"),
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,4", help="judge samples per input to compare (default 1,4)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="judge model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",")})
    group = len(GROUP)
    base = GRMConfig(model=args.model, max_new_tokens=args.max_new_tokens, transformers={"device": args.device})
    backend = load_judge(base)
    print(f"judge: {judge_name(base)} on {args.device} · GRPO group G={group} · max_new_tokens={args.max_new_tokens}")
    header = (f"{'k':>3}  {'mode':<11}{'inputs':>7}{'samples':>8}{'prompt tok':>11}{'compl tok':>10}"
              f"{'at budget':>10}   {'per response: prompt + completion = total':<40}")
    print(header)
    print("-" * len(header))
    for k in ks:
        config = base.updated(k=k, temperature=0.5 if k > 1 else None)
        rm = GenerativeRewardModel(config, backend=backend)
        listwise = measure(rm, [Request(PROMPT, GROUP)])
        single = measure(rm, [Request(PROMPT, [response]) for response in GROUP])
        per = {}
        for mode, m in (("listwise", listwise), ("one-by-one", single)):
            p, c = m["prompt_tokens"] / group, m["completion_tokens"] / group
            per[mode] = (p, c, p + c)
            print(f"{k:>3}  {mode:<11}{m['judge_inputs']:>7}{m['samples']:>8}{m['prompt_tokens']:>11}"
                  f"{m['completion_tokens']:>10}{m['hit_budget']:>7}/{m['samples']:<3}   "
                  f"{p:8.1f} + {c:7.1f} = {p + c:8.1f}")
        names = ("prompt", "completion", "total")
        ratios = ", ".join(f"{n} {per['one-by-one'][i] / per['listwise'][i]:.2f}x" for i, n in enumerate(names))
        print(f"{'':>3}  one-by-one / listwise judge tokens per rewarded response: {ratios}")
    print("prompt tok: judge prompts prefilled (shared by samples shown in the same order); "
          "at budget: samples cut by max_new_tokens")


if __name__ == "__main__":
    main()
