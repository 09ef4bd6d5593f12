"""Server throughput with many concurrent single-sample requests, against offline ``score_batch``.

What it measures (issue 3, figure 1): the same inputs (N single-response requests) scored on the
same backend and settings

1. offline: one ``GenerativeRewardModel.score_batch(requests)`` call, in this process;
2. served: ``grm-reward serve`` in a child process, hit by N concurrent HTTP requests, one
   request per sample, each on its own connection, as OpenRLHF's client sends them
   (aiohttp, a new session per request);

and prints requests/s of both and their ratio (goal: served / offline >= 0.9). The two are run
in alternation for ``--rounds`` rounds (the judge loaded once on each side, 16 warm-up requests
first) and the ratio uses the medians. Because this machine's cores are shared with other work
whose load comes and goes, the CPU time each side spent (this process for offline; the server
process, not the HTTP client, for served) is printed too: the CPU ratio is the steadier figure
of the two when the machine is busy.

Backends: ``--backend embedded`` (default) runs the real embedded SmolLM2-135M judge on the CPU
with a short judge template (``short_judge_template.txt``, to keep CPU prefill affordable),
k=1 and ``--max-new-tokens`` tokens; ``--backend scripted`` uses a scripted judge that sleeps
``a + b * samples`` seconds per backend call, a stand-in for an engine whose cost per call is
amortised by batching (no model needed, seconds to run).

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
import tempfile
import time
from pathlib import Path

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


# --- a scripted judge with an engine-like cost: a + b * samples per backend call ---------------------------
class CostModelBackend(ScriptedBackend):
    def __init__(self, per_call_s: float, per_sample_s: float) -> None:
        super().__init__(self._judge)
        self.per_call_s, self.per_sample_s = per_call_s, per_sample_s
        self._engine: asyncio.Lock | None = None  # one engine: calls do not overlap

    @staticmethod
    def _judge(call: JudgeCall) -> str:
        return "Analysis: fine.\nScores: \\boxed{" + ", ".join(str(1 + len(r) % 10) for r in call.responses) + "}"

    async def generate(self, requests):  # type: ignore[no-untyped-def]
        self._engine = self._engine or asyncio.Lock()
        async with self._engine:
            await asyncio.sleep(self.per_call_s + self.per_sample_s * sum(r.n for r in requests))
        return await super().generate(requests)


def cost_model_backend(config: object) -> CostModelBackend:
    """Factory for ``--backend bench_server_throughput:cost_model_backend`` in the child server."""
    return CostModelBackend(float(os.environ["BENCH_PER_CALL_S"]), float(os.environ["BENCH_PER_SAMPLE_S"]))


def config_values(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {"k": args.k, "seed": 0, "max_new_tokens": args.max_new_tokens,
                                 "server": {"batch_window_s": args.window, "max_batch_requests": args.max_batch,
                                            "max_concurrent_batches": args.max_concurrent, "log_level": "warning",
                                            "request_timeout_s": 3600.0}}  # a throughput run, not a deadline test
    if args.backend == "embedded":
        values.update(template=str(HERE / "short_judge_template.txt"), transformers={"device": "cpu"},
                      format_guarantee=False)
        if args.k > 1:
            values["temperature"] = 0.7
    else:
        values.update(backend="bench_server_throughput:cost_model_backend")
        if args.k > 1:
            values["temperature"] = 0.7
    return values


class Offline:
    """The judge in this process; ``run`` times one ``score_batch`` of all requests."""

    def __init__(self, config: GRMConfig, pairs: list[tuple[str, str]], backend: object | None) -> None:
        self.rm = GenerativeRewardModel(config, backend=backend)  # type: ignore[arg-type]
        self.requests = [Request(prompt=q, responses=[r]) for q, r in pairs]
        self.rm.score_batch(self.requests[:16])  # load and warm up

    def run(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        self.rm.score_batch(self.requests)
        return time.perf_counter() - wall, time.process_time() - cpu


async def served(base: str, pairs: list[tuple[str, str]], pid: int) -> tuple[float, float, list[float]]:
    """256 concurrent single-sample requests as OpenRLHF sends them; (wall s, server CPU s, rewards)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=1800)

    async def one(question: str, response: str) -> float:
        prompt = CHATML.format(q=question)
        body = {"query": [prompt + response + "<|im_end|>"], "prompts": [prompt], "labels": [""]}
        # OpenRLHF opens a new session (and connection) per request
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(base + "/get_reward", json=body) as reply:
            reply.raise_for_status()
            return float((await reply.json())["rewards"][0])

    cpu, wall = process_cpu_s(pid), time.perf_counter()
    rewards = await asyncio.gather(*(one(q, r) for q, r in pairs))
    return time.perf_counter() - wall, process_cpu_s(pid) - cpu, rewards


def process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["embedded", "scripted"], default="embedded")
    parser.add_argument("-n", "--requests", type=int, default=256)
    parser.add_argument("-k", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--window", type=float, default=0.01, help="server batch window (s)")
    parser.add_argument("--max-batch", type=int, default=64, help="server max_batch_requests")
    parser.add_argument("--max-concurrent", type=int, default=4, help="server max_concurrent_batches")
    parser.add_argument("--rounds", type=int, default=2, help="offline/served rounds, alternating")
    parser.add_argument("--per-call-s", type=float, default=0.2, help="scripted: cost of one backend call")
    parser.add_argument("--per-sample-s", type=float, default=0.002, help="scripted: cost per sample")
    args = parser.parse_args()

    os.environ.update(BENCH_PER_CALL_S=str(args.per_call_s), BENCH_PER_SAMPLE_S=str(args.per_sample_s),
                      HF_HUB_OFFLINE="1", HF_HUB_DISABLE_UPDATE_CHECK="1", TOKENIZERS_PARALLELISM="false")
    sys.path.insert(0, str(HERE))
    values = config_values(args)
    config = GRMConfig.build(**values)
    pairs = inputs(args.requests)
    make_backend = (lambda: None) if args.backend == "embedded" else (lambda: cost_model_backend(config))

    note = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    n = args.requests
    rows: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "judge.json"
        config_file.write_text(json.dumps(values))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        child = subprocess.Popen([sys.executable, "-m", "grm_reward", "serve", "--config", str(config_file),
                                  "--port", str(port)], env=env, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            note("loading the offline judge")
            local = Offline(config, pairs, make_backend())
            _wait_healthy(base, child)
            asyncio.run(served(base, pairs[:16], child.pid))  # warm-up
            for round_ in range(1, args.rounds + 1):
                note(f"round {round_}: offline")
                offline_wall, offline_cpu = local.run()
                note(f"round {round_}: offline {offline_wall:.1f} s; served")
                served_wall, served_cpu, rewards = asyncio.run(served(base, pairs, child.pid))
                note(f"round {round_}: served {served_wall:.1f} s")
                rows.append((offline_wall, offline_cpu, served_wall, served_cpu))
            metrics = _get(base + "/metrics")
        finally:
            child.terminate()
            child.wait(timeout=60)
    local.rm.close()

    print(f"\nbackend={args.backend} k={args.k} requests={n} max_new_tokens={args.max_new_tokens} window={args.window}s "
          f"max_batch={args.max_batch} max_concurrent={args.max_concurrent} cpus={os.cpu_count()} rounds={args.rounds}")
    print(f"{'round':>5}{'offline s':>11}{'req/s':>8}{'CPU s':>8}{'served s':>11}{'req/s':>8}{'CPU s':>8}")
    for i, (ow, oc, sw, sc) in enumerate(rows, 1):
        print(f"{i:>5}{ow:>11.2f}{n / ow:>8.2f}{oc:>8.2f}{sw:>11.2f}{n / sw:>8.2f}{sc:>8.2f}")
    median = statistics.median
    wall_ratio = median(r[0] for r in rows) / median(r[2] for r in rows)
    cpu_ratio = median(r[1] for r in rows) / median(r[3] for r in rows)
    print(f"throughput ratio served / offline: wall {wall_ratio:.3f}, CPU {cpu_ratio:.3f}   (goal >= 0.9)")
    batches = [line for line in metrics.splitlines() if line.startswith(("grm_batches_total", "grm_batched_requests_total"))]
    print("server batching (warm-up included): " + ", ".join(batches))
    print(f"rewards received in the last round: {len(rewards)} (all numbers: {all(isinstance(r, float) for r in rewards)})")


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


def _wait_healthy(base: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the server exited with {child.returncode}")
        try:
            _get(base + "/health")
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not become healthy")


if __name__ == "__main__":
    main()
