"""Server throughput with many concurrent single-sample requests, against offline ``score_batch``.

What it measures (issue 3, figure 1): the same N single-response requests scored on the same
backend instance (one loaded judge, shared)

1. offline: one ``GenerativeRewardModel.score_batch(requests)`` call;
2. served: the reward server (``grm_reward.server.build_app``, uvicorn, the default server
   settings: 10 ms window, batches of up to 64, 4 in flight) running in this process on the same
   backend, hit by N concurrent HTTP requests from a separate client process, one request per
   sample, each on its own connection, as OpenRLHF's client sends them (aiohttp, a new session
   per request);

and prints requests/s of both and their ratio (goal: served / offline >= 0.9). A first, untimed
round warms both paths with the full workload (on CPU, PyTorch's first passes over new tensor
shapes are several times slower than later ones); then ``--rounds`` timed rounds alternate
offline and served, and the ratio uses the medians. The CPU time of this process (the judge and
the server; not the client) is printed too.

Backends: ``--backend embedded`` (default) runs the real embedded SmolLM2-135M judge on the CPU
with a short judge template (``short_judge_template.txt``, to keep CPU prefill affordable), k=1
and ``--max-new-tokens`` tokens; ``--backend scripted`` uses a scripted judge that sleeps
``a + b * samples`` seconds per backend call on one engine (calls do not overlap), a stand-in for
an engine whose cost per call is amortised by batching (seconds to run).

    .venv/bin/python benchmarks/bench_server_throughput.py                      # embedded judge, N=256
    .venv/bin/python benchmarks/bench_server_throughput.py --backend scripted   # cost-model judge

Figures are printed side by side from one run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from grm_reward import GenerativeRewardModel, GRMConfig, Request  # noqa: E402
from grm_reward.backends.scripted import JudgeCall, ScriptedBackend  # noqa: E402

CHATML = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def inputs(n: int) -> list[tuple[str, str]]:
    """(question, response) pairs from the shipped sample, made distinct by a suffix."""
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "sample.jsonl").read_text().splitlines()]
    units = []
    for row in rows:
        prompt = row["prompt"] if isinstance(row["prompt"], str) else row["prompt"][-1]["content"]
        units.extend((prompt, response) for response in row["responses"])
    return [(units[i % len(units)][0], f"{units[i % len(units)][1]} (variant {i})") for i in range(n)]


class CostModelBackend(ScriptedBackend):
    """A scripted judge with an engine-like cost: ``per_call_s + per_sample_s * samples`` per call."""

    def __init__(self, per_call_s: float, per_sample_s: float) -> None:
        super().__init__(self._judge, record=False)
        self.per_call_s, self.per_sample_s = per_call_s, per_sample_s
        self._engine = threading.Lock()  # one engine: calls do not overlap (also across event loops)

    @staticmethod
    def _judge(call: JudgeCall) -> str:
        return "Analysis: fine.\nScores: \\boxed{" + ", ".join(str(1 + len(r) % 10) for r in call.responses) + "}"

    async def generate(self, requests):  # type: ignore[no-untyped-def]
        cost = self.per_call_s + self.per_sample_s * sum(r.n for r in requests)
        await asyncio.to_thread(self._busy, cost)
        return await super().generate(requests)

    def _busy(self, seconds: float) -> None:
        with self._engine:
            time.sleep(seconds)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        "k": args.k,
        "seed": 0,
        "max_new_tokens": args.max_new_tokens,
        "batching": {"window_s": args.window, "max_batch_requests": args.max_batch,
                     "max_concurrent_batches": args.max_concurrent},
        "server": {"log_level": "warning", "request_timeout_s": 3600.0},  # a throughput run, not a deadline test
    }
    if args.k > 1:
        values["temperature"] = 0.7
    if args.backend == "embedded":
        values.update(template=str(HERE / "short_judge_template.txt"), transformers={"device": "cpu"})
    return values


# --- the client: a separate process, as OpenRLHF's rollout workers are -----------------------------------
async def client(base: str, n: int) -> dict[str, Any]:
    import aiohttp

    pairs = inputs(n)
    timeout = aiohttp.ClientTimeout(total=3600)

    async def one(question: str, response: str) -> float:
        prompt = CHATML.format(q=question)
        body = {"query": [prompt + response + "<|im_end|>"], "prompts": [prompt], "labels": [""]}
        # OpenRLHF opens a new session (and connection) per request
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(base + "/get_reward", json=body) as reply:
            reply.raise_for_status()
            return float((await reply.json())["rewards"][0])

    started = time.perf_counter()
    rewards = await asyncio.gather(*(one(q, r) for q, r in pairs))
    return {"seconds": time.perf_counter() - started, "rewards": rewards}


def run_client(base: str, n: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--client", base, "-n", str(n)], capture_output=True, text=True,
                         check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- the server, in this process, on the offline judge's backend -----------------------------------------
def start_server(config: GRMConfig, backend: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    from grm_reward.server import build_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(build_app(config, backend=backend), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["embedded", "scripted"], default="embedded")
    parser.add_argument("-n", "--requests", type=int, default=256)
    parser.add_argument("-k", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--window", type=float, default=0.01, help="server batch window (s)")
    parser.add_argument("--max-batch", type=int, default=64, help="batching.max_batch_requests")
    parser.add_argument("--max-concurrent", type=int, default=4, help="batching.max_concurrent_batches")
    parser.add_argument("--rounds", type=int, default=2, help="timed offline/served rounds, alternating")
    parser.add_argument("--per-call-s", type=float, default=0.2, help="scripted: cost of one backend call")
    parser.add_argument("--per-sample-s", type=float, default=0.002, help="scripted: cost per sample")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client(args.client, args.requests))))
        return

    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_UPDATE_CHECK="1", TOKENIZERS_PARALLELISM="false")
    config = GRMConfig.build(**config_values(args))
    n = args.requests
    requests = [Request(prompt=q, responses=[r]) for q, r in inputs(n)]
    note = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    backend = CostModelBackend(args.per_call_s, args.per_sample_s) if args.backend == "scripted" else None
    rm = GenerativeRewardModel(config, backend=backend)
    note("loading the judge")
    rm.score_batch(requests[:2])
    server, thread, base = start_server(config, rm.backend)

    def offline() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        rm.score_batch(requests)
        return time.perf_counter() - wall, time.process_time() - cpu

    def served() -> tuple[float, float, list[float]]:
        cpu = time.process_time()
        result = run_client(base, n)
        return result["seconds"], time.process_time() - cpu, result["rewards"]

    rows = []
    try:
        note("warm-up round (untimed): offline, then served")
        offline()
        served()
        for round_ in range(1, args.rounds + 1):
            offline_wall, offline_cpu = offline()
            served_wall, served_cpu, rewards = served()
            note(f"round {round_}: offline {offline_wall:.1f} s, served {served_wall:.1f} s")
            rows.append((offline_wall, offline_cpu, served_wall, served_cpu))
        metrics = run_metrics(base)
    finally:
        server.should_exit = True
        thread.join(timeout=60)

    print(f"\nbackend={args.backend} k={args.k} requests={n} max_new_tokens={args.max_new_tokens} window={args.window}s "
          f"max_batch={args.max_batch} max_concurrent={args.max_concurrent} cpus={os.cpu_count()} rounds={args.rounds}"
          + (f" per_call={args.per_call_s}s per_sample={args.per_sample_s}s" if args.backend == "scripted" else ""))
    print(f"{'round':>5}{'offline s':>11}{'req/s':>8}{'CPU s':>8}{'served s':>11}{'req/s':>8}{'CPU s':>8}")
    for i, (ow, oc, sw, sc) in enumerate(rows, 1):
        print(f"{i:>5}{ow:>11.2f}{n / ow:>8.2f}{oc:>8.2f}{sw:>11.2f}{n / sw:>8.2f}{sc:>8.2f}")
    wall_ratio = statistics.median(r[0] for r in rows) / statistics.median(r[2] for r in rows)
    print(f"throughput ratio served / offline (medians) = {wall_ratio:.3f}   (goal >= 0.9)")
    print("server batching, warm-up included: " + ", ".join(metrics))
    print(f"rewards received in the last round: {len(rewards)} (all numbers: {all(isinstance(r, float) for r in rewards)})")


def run_metrics(base: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as reply:
        text = str(reply.read().decode())
    return [line for line in text.splitlines() if line.startswith(("grm_batches_total", "grm_batched_requests_total"))]


if __name__ == "__main__":
    main()
