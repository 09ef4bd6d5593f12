"""Scoring as rollouts finish (issue 12 item 5): a GRPO group judged the moment it is complete,
against waiting for the batching window, side by side in one run.

Rollouts finish one by one over a rollout phase of ``--rollout`` seconds (seeded, uniform), as in
verl's per-rollout reward loop or OpenRLHF's one request per sample; each is submitted to one
``MicroBatcher`` (the machinery every entry point uses) with a judge whose every call takes
``--latency`` seconds. Run: ``python benchmarks/bench_group_complete.py [--prompts 32 --group 8]``.

Modes (listwise grouping on in all):
- ``window 0.05`` / ``window 0.01``: verl's / the server's window; a group whose rollouts finish
  further apart than the window is judged in pieces (more judge requests, split lists);
- ``window W``: a window long enough to keep groups whole whatever the rollout's length (``--window``,
  2x the rollout by default): judging waits for it;
- ``window W + group_size``: ``batching.group_size`` = G with the same window: each group is judged
  as soon as its last rollout is in; the window only flushes groups that never complete.

Printed per mode: the tail (last rollout finished -> every reward in), judge requests, groups
judged whole, and the share of judge calls that started before the last rollout finished (overlap).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grm_reward import GenerativeRewardModel, Request
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.batching import MicroBatcher


def judge(call: object) -> str:
    n = len(getattr(call, "responses", [])) or 1
    return "Analysis: fine.\nScores: \\boxed{" + ", ".join(str(1 + i % 10) for i in range(n)) + "}"


async def one_step(mode: str, window: float, group_size: int | None, args: argparse.Namespace) -> dict[str, float]:
    backend = ScriptedBackend(judge, delay=args.latency, record=False)
    rm = GenerativeRewardModel(backend=backend, k=1)
    batcher = MicroBatcher(rm, max_wait_s=window, group_by_prompt=True, max_group_size=args.group,
                           max_batch_requests=args.max_batch, max_concurrent_batches=args.concurrency,
                           group_size=group_size)
    starts: list[float] = []
    sizes: list[int] = []  # responses per judge request
    score = rm.ascore_batch

    async def timed(requests: list[Request]) -> list[object]:
        starts.append(time.perf_counter())
        sizes.extend(r.n for r in requests)
        return await score(requests)

    rm.ascore_batch = timed  # type: ignore[method-assign, assignment]
    rng = random.Random(args.seed)
    finish = sorted((rng.uniform(0.0, args.rollout), p, i) for p in range(args.prompts) for i in range(args.group))
    begin = time.perf_counter()

    answered: dict[int, float] = {}  # prompt -> when its last reward came back

    async def rollout(at: float, prompt: int, index: int) -> None:
        await asyncio.sleep(max(0.0, begin + at - time.perf_counter()))  # this rollout finishes at `at`
        await batcher.submit(Request(f"prompt {prompt}", [f"answer {prompt}.{index}"]))
        answered[prompt] = max(answered.get(prompt, 0.0), time.perf_counter())

    await asyncio.gather(*(rollout(at, p, i) for at, p, i in finish))
    done = time.perf_counter()
    last = begin + finish[-1][0]
    complete = {p: begin + at for at, p, _ in finish}  # sorted by time: the last write is the group's last rollout
    waits = [answered[p] - complete[p] for p in complete]
    await batcher.aclose()
    return {
        "tail_s": done - last,
        "group_wait_s": sum(waits) / len(waits),
        "requests": len(sizes),
        "whole": sum(1 for n in sizes if n == args.group) / args.prompts,
        "overlap": sum(1 for s in starts if s < last) / max(len(starts), 1),
    }


async def main(args: argparse.Namespace) -> None:
    w = args.window
    modes = [
        ("window 0.01 (server)", 0.01, None),
        ("window 0.05 (verl)", 0.05, None),
        ("window 0.05 + group_size", 0.05, args.group),
        (f"window {w:g}", w, None),
        (f"window {w:g} + group_size", w, args.group),
    ]
    print(f"{args.prompts} prompts x G={args.group}, rollouts finishing over {args.rollout:.1f} s, judge call "
          f"{args.latency:.2f} s, {args.concurrency} calls at once")
    print(f"{'mode':28} {'judge requests':>14} {'whole groups':>12} {'group wait s':>12} {'tail s':>7} "
          f"{'calls before last':>17}")
    rows = {}
    for name, window, group_size in modes:
        row = rows[name] = await one_step(name, window, group_size, args)
        print(f"{name:28} {row['requests']:14.0f} {row['whole']:12.0%} {row['group_wait_s']:12.2f} {row['tail_s']:7.2f} "
              f"{row['overlap']:17.0%}")
    slow, fast, verl = rows[f"window {w:g}"], rows[f"window {w:g} + group_size"], rows["window 0.05 (verl)"]
    print(f"group_size, whole groups: wait from a group's last rollout to its rewards {fast['group_wait_s'] / slow['group_wait_s']:.2f}x, "
          f"tail {fast['tail_s'] / slow['tail_s']:.2f}x of the window's; judge requests {fast['requests'] / verl['requests']:.2f}x "
          f"of verl's 0.05 s window (which splits groups)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group", type=int, default=8, help="GRPO group size G (= max_group_size here)")
    parser.add_argument("--rollout", type=float, default=2.0, help="seconds over which rollouts finish")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per judge call")
    parser.add_argument("--window", type=float, default=4.0,
                        help="a window long enough to keep groups whole (here 2x the rollout: its length varies)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="judge calls at once (max_concurrent_batches; a vLLM judge serves many at once)")
    parser.add_argument("--max-batch", type=int, default=4096, help="max_batch_requests (a full batch goes at once)")
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
