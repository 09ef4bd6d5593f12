"""The cost of the reward server itself: a judge that answers instantly, many HTTP clients.

What it measures (issue 3, figure 2): ``grm-reward serve`` in a child process with a scripted
judge that writes a fixed judgement at once (k=1), so every millisecond is the server's: HTTP
parsing, validation, OpenRLHF query splitting, micro-batching, prompt rendering, parsing, voting,
JSON. For 1, 64 and 512 concurrent clients (each sends ``/get_reward`` requests back to back on
a keep-alive connection) it prints requests/s and p50/p99 latency; then it sends 10,000 more
requests and prints the server's resident memory (VmRSS) before and after. For reference it also
prints the same scoring without HTTP (``MicroBatcher.submit`` in-process, 64 concurrent callers).

Client and server share this machine's cores, so the figures are a floor for the server on a
machine of its own. With 1 client every request waits the batch window (``--window``, default
the server's 10 ms) for company; the run at 1 client is repeated with a 0 s window to show it.

    .venv/bin/python benchmarks/bench_server_layer.py

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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from grm_reward import GenerativeRewardModel, Request  # noqa: E402
from grm_reward.backends.scripted import ScriptedBackend  # noqa: E402
from grm_reward.batching import MicroBatcher  # noqa: E402

PROMPT = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is the capital of Australia?<|im_end|>\n<|im_start|>assistant\n"
JUDGEMENT = "Specific Criteria: accuracy.\nAnalysis: The response names the right city.\nScores: \\boxed{8}"


def fast_backend(config: object) -> ScriptedBackend:
    """Factory for ``--backend bench_server_layer:fast_backend``: answers at once."""
    return ScriptedBackend([JUDGEMENT], record=False)


def body(i: int) -> dict[str, list[str]]:
    return {"query": [PROMPT + f"Canberra is the capital (answer {i}).<|im_end|>"], "prompts": [PROMPT], "labels": [""]}


async def load(base: str, clients: int, total: int) -> tuple[float, list[float]]:
    import aiohttp

    latencies: list[float] = []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=0)

    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def worker() -> None:
            for i in counter:
                started = time.perf_counter()
                async with session.post("/get_reward", json=body(i)) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"HTTP {reply.status}: {await reply.text()}")
                    await reply.read()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started, latencies


async def in_process(clients: int, total: int) -> float:
    rm = GenerativeRewardModel(backend=fast_backend(None), k=1)
    batcher = MicroBatcher(rm, max_wait_s=0.01)
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await batcher.submit(Request(prompt="What is the capital of Australia?", responses=[f"Canberra ({i})."]))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await batcher.aclose()
    return elapsed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(window: float) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-m", "grm_reward", "serve", "--backend", "bench_server_layer:fast_backend", "-k", "1",
         "--port", str(port), "--batching-window-s", str(window), "--server-log-level", "warning"],
        env=env, cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return child, base
        except OSError:
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.2)


def row(name: str, seconds: float, total: int, latencies: list[float] | None) -> str:
    text = f"{name:34}{total / seconds:>10.0f}"
    if latencies:
        ordered = sorted(latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
        text += f"{p50:>10.1f}{p99:>10.1f}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=0.01, help="server batch window (s)")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    args = parser.parse_args()
    levels = [(1, 300), (64, 3000), (512, 5000)]

    print(f"cpus={os.cpu_count()} (client and server share them); k=1 scripted judge; window={args.window}s")
    print(f"{'':34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    child, base = start_server(args.window)
    try:
        asyncio.run(load(base, 8, 200))  # warm-up
        for clients, total in levels:
            seconds, latencies = asyncio.run(load(base, clients, total))
            print(row(f"HTTP, {clients} concurrent clients", seconds, total, latencies), flush=True)
        before = rss_mib(child.pid)
        seconds, _ = asyncio.run(load(base, 64, args.memory_requests))
        after = rss_mib(child.pid)
        print(row(f"HTTP, 64 clients, {args.memory_requests} requests", seconds, args.memory_requests, None))
        metrics = json.dumps([line for line in _metrics(base).splitlines() if line.startswith("grm_batches_total")])
    finally:
        child.terminate()
        child.wait(timeout=60)
    child, base = start_server(0.0)
    try:
        asyncio.run(load(base, 1, 50))
        seconds, latencies = asyncio.run(load(base, 1, 300))
        print(row("HTTP, 1 client, window 0 s", seconds, 300, latencies))
    finally:
        child.terminate()
        child.wait(timeout=60)
    seconds = asyncio.run(in_process(64, 3000))
    print(row("in-process MicroBatcher, 64 callers", seconds, 3000, None))
    print(f"server RSS: {before:.1f} MiB after warm-up and the load levels, {after:.1f} MiB after "
          f"{args.memory_requests} more requests ({after - before:+.1f} MiB); {metrics}")


def _metrics(base: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as reply:
        return str(reply.read().decode())


if __name__ == "__main__":
    main()
