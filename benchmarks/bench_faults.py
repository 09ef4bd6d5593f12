"""A real `grm-reward serve` (its own process, ``openai`` backend) against the fault judge (issue 10's proof).

The judge is ``tests.fault_judge.FaultJudge`` (a real OpenAI-compatible server on 127.0.0.1, in this
process, killed / stalled / failing on command); the reward server is started as users start it.
Five scenarios, each printing counted quantities first:

- ``kill``: ``--requests`` concurrent OpenRLHF requests (OpenRLHF's own client, ``openrlhf/utils/
  agent.py`` loaded by path: 5 tries, 1 s apart) while the judge is killed for ``--outage`` s and
  restarted on the same port: requests lost, ``None`` rewards, client retries (goal 0 lost, 0 None);
- ``stall``: the judge hangs for ``--stall`` s under one step of ``--step`` OpenRLHF requests, the
  server's deadline a third of it (so calls are abandoned, cancelled and resent by OpenRLHF's
  client); then it recovers: a fresh request's latency and the step's last reward after recovery
  (goal <= 1 s beyond one judge call), judge calls held at recovery, calls cancelled;
- ``dead``: judge calls per request while the judge answers only 500 (goal <= 2);
- ``health``: ``/health`` p50/p99 idle and while a 16 MiB body of huge hostile prompts is scored
  (goal p99 < 100 ms), with the load average (``uptime``);
- ``poison``: ``--requests`` mixed requests at once (a tenth poisoned: lone surrogates, over-long
  text, malformed shapes) against the same good requests alone: good requests failed and good
  rewards changed by a poisoned batch-mate (goal 0).

    .venv/bin/python benchmarks/bench_faults.py                          # CI-sized, ~2-3 minutes
    .venv/bin/python benchmarks/bench_faults.py --stall 60 --outage 8    # the README's run
    .venv/bin/python benchmarks/bench_faults.py --only kill,health

Nothing is asserted: figures are printed; tests/integration/test_faults_end_to_end.py guards the kill run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fault_judge import FaultJudge  # noqa: E402
from tests.servers import free_port, process_server  # noqa: E402

CHATML = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
SCENARIOS = ("kill", "stall", "dead", "health", "poison")


def load_openrlhf_agent() -> Any:
    """OpenRLHF's released ``openrlhf/utils/agent.py``, by file path (its package pulls torch, deepspeed...)."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs `pip install --no-deps openrlhf==0.11.2` and aiohttp")
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "agent.py"
    sys.modules.setdefault("openrlhf.utils.logging_utils", types.SimpleNamespace(init_logger=logging.getLogger))  # type: ignore[arg-type]
    module_spec = importlib.util.spec_from_file_location("openrlhf_agent_bench", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class _Count(logging.Handler):
    """Counts OpenRLHF's "Request error" log lines: each is one failed try its client will retry."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "error" in record.getMessage().lower():
            self.count += 1


@contextlib.contextmanager
def reward_server(judge: FaultJudge, *extra: str, log: Path) -> Iterator[str]:
    """`grm-reward serve` with the ``openai`` backend pointed at ``judge``; yields its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "grm_reward", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--backend", "openai", "--base-url", judge.url, "--model", "fault-judge", "-k", "2", "--seed", "7",
        "--batching-window-s", "0.02", "--server-log-level", "warning", *extra,
    ]
    with process_server(command, port, env={"PYTHONPATH": str(ROOT)}, log=log, cwd=ROOT) as base:
        yield base


def query(i: int, tag: str = "q") -> tuple[str, str]:
    prompt = CHATML.format(q=f"{tag} question {i // 4}?")  # GRPO groups of 4 samples per prompt
    return prompt, prompt + f"answer {i} " + "x" * (i % 7) + "<|im_end|>"


async def post(client: httpx.AsyncClient, base: str, body: Any) -> tuple[int, Any]:
    raw = json.dumps(body).encode()  # ASCII escapes, as OpenRLHF's aiohttp sends: lone surrogates travel as \udXXX
    reply = await client.post(base + "/get_reward", content=raw, headers={"Content-Type": "application/json"})
    try:
        return reply.status_code, reply.json()
    except ValueError:
        return reply.status_code, reply.text


# --- kill and restart -----------------------------------------------------------------------------------
async def openrlhf_rollout(agent: Any, url: str, n: int, judge: FaultJudge, outage_s: float) -> dict[str, Any]:
    executor = agent.SingleTurnAgentExecutor(url)
    answered = 0
    kill_at = max(1, n // 6)
    killed = asyncio.Event()

    async def one(i: int) -> Any:
        nonlocal answered
        prompt, q = query(i, "kill")
        try:
            [info] = await executor._fetch_rewards_via_http([q], [prompt], [""])
        except Exception as exc:  # OpenRLHF gave up after its 5 tries: a lost sample
            return exc
        answered += 1
        if answered == kill_at:
            killed.set()
        return info

    async def chaos() -> float:
        await killed.wait()
        judge.stop()  # every connection dropped, calls in flight see a reset
        await asyncio.sleep(outage_s)
        judge.start()
        return time.monotonic()

    started = time.monotonic()
    chaos_task = asyncio.ensure_future(chaos())
    results = await asyncio.gather(*(one(i) for i in range(n)))
    back_at = await chaos_task
    lost = sum(isinstance(r, BaseException) for r in results)
    none = sum(1 for r in results if not isinstance(r, BaseException) and None in (r.get("rewards") or [None]))
    return {"lost": lost, "none": none, "wall": time.monotonic() - started, "after_restart": time.monotonic() - back_at}


def kill_figures(requests: int, outage_s: float, latency_s: float, tmp: Path) -> dict[str, Any]:
    """The kill run's counts: lost, none, client_retries, wall, after_restart (also used by the test)."""
    agent = load_openrlhf_agent()
    counter = _Count()
    logger = logging.getLogger("openrlhf_agent_bench")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with FaultJudge() as judge:
            judge.set_mode("slow", latency_s=latency_s)
            with reward_server(judge, log=tmp / "kill.log") as base:
                figures = asyncio.run(openrlhf_rollout(agent, base + "/get_reward", requests, judge, outage_s))
    finally:
        logger.removeHandler(counter)
    return {**figures, "client_retries": counter.count}


def run_kill(args: argparse.Namespace, tmp: Path) -> str:
    figures = kill_figures(args.requests, args.outage, args.latency, tmp)
    return (
        f"kill: judge killed for {args.outage:g} s under {args.requests} concurrent OpenRLHF requests "
        f"(OpenRLHF's client: 5 tries 1 s apart): lost {figures['lost']}, None rewards {figures['none']}, "
        f"client retries {figures['client_retries']}; {figures['wall']:.1f} s in all, last answer "
        f"{figures['after_restart']:.1f} s after the restart"
    )


# --- stall and recovery ---------------------------------------------------------------------------------
async def timed_request(client: httpx.AsyncClient, base: str, i: int) -> float:
    prompt, q = query(i, "probe")
    started = time.monotonic()
    status, body = await post(client, base, {"query": [q], "prompts": [prompt]})
    if status != 200 or None in body["rewards"]:
        raise SystemExit(f"stall: a fresh request got {status}: {str(body)[:300]}")
    return time.monotonic() - started


def run_stall(args: argparse.Namespace, tmp: Path) -> str:
    deadline = max(1.0, args.stall / 3)  # so abandoned work must be cancelled, and OpenRLHF resends it
    agent = load_openrlhf_agent()
    logging.getLogger("openrlhf_agent_bench").propagate = False
    with FaultJudge() as judge:
        judge.set_mode("slow", latency_s=args.latency)
        with reward_server(judge, "--server-request-timeout-s", f"{deadline:g}", log=tmp / "stall.log") as base:

            async def main() -> dict[str, Any]:
                async with httpx.AsyncClient(timeout=args.stall * 3) as client:
                    before = min([await timed_request(client, base, i) for i in range(3)])
                    judge.set_mode("hang")
                    judge.max_in_flight = 0
                    executor = agent.SingleTurnAgentExecutor(base + "/get_reward")

                    async def rollout(i: int) -> Any:  # one step's samples, OpenRLHF's client (retries on 504)
                        prompt, q = query(i, "stall")
                        try:
                            [info] = await executor._fetch_rewards_via_http([q], [prompt], [""])
                        except Exception as exc:
                            return exc
                        return time.monotonic(), info

                    step = [asyncio.ensure_future(rollout(i)) for i in range(args.step)]
                    await asyncio.sleep(args.stall)
                    figures = {"held": judge.in_flight, "max_held": judge.max_in_flight, "calls": judge.calls,
                               "cancelled": judge.disconnects}
                    judge.set_mode("slow", latency_s=args.latency)
                    recovered = time.monotonic()
                    after = await timed_request(client, base, 10_000)
                    results = await asyncio.gather(*step)
                answered = [r for r in results if not isinstance(r, BaseException)]
                return {**figures, "before": before, "after": after,
                        "lost": len(results) - len(answered),
                        "none": sum(1 for _, info in answered if None in info["rewards"]),
                        "step_done": max((t for t, _ in answered), default=recovered) - recovered}

            f = asyncio.run(main())
    return (
        f"stall: judge hung {args.stall:g} s (server deadline {deadline:g} s) under one step of {args.step} OpenRLHF "
        f"requests: after recovery a fresh request took {f['after']:.2f} s (one judge call before: {f['before']:.2f} s), "
        f"the step's last reward came {f['step_done']:.2f} s after recovery; lost {f['lost']}, None {f['none']}; "
        f"judge calls held at recovery {f['held']} (most at once in the stall {f['max_held']}), "
        f"cancelled at their deadline {f['cancelled']} of {f['calls']}"
    )


# --- dead judge -----------------------------------------------------------------------------------------
def run_dead(args: argparse.Namespace, tmp: Path) -> str:
    n = min(args.requests, 200)
    with FaultJudge() as judge, reward_server(judge, "--server-request-timeout-s", "3", log=tmp / "dead.log") as base:

        async def main() -> dict[int, int]:
            judge.set_mode("500")
            calls0 = judge.calls
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None)) as client:
                replies = await asyncio.gather(*(post(client, base, {"query": [query(i, "dead")[1]],
                                                                     "prompts": [query(i, "dead")[0]]}) for i in range(n)))
            statuses: dict[int, int] = {}
            for status, _ in replies:
                statuses[status] = statuses.get(status, 0) + 1
            main.calls = judge.calls - calls0  # type: ignore[attr-defined]
            return statuses

        statuses = asyncio.run(main())
        calls = main.calls  # type: ignore[attr-defined]
    return (
        f"dead: judge answering 500, {n} concurrent requests (deadline 3 s): {calls} judge calls = "
        f"{calls / n:.2f} per request; answers {dict(sorted(statuses.items()))}"
    )


# --- /health under a hostile body -----------------------------------------------------------------------
#: The /health prober, in its own process: latencies measured here include none of this process's
#: work (the fault judge's threads, the client sending 16 MiB), only the server's.
_PROBER = """
import http.client, json, select, sys, time
host, port = sys.argv[1], int(sys.argv[2])
conn, out = http.client.HTTPConnection(host, port, timeout=300), []
while not select.select([sys.stdin], [], [], 0.01)[0]:
    started = time.monotonic()
    conn.request("GET", "/health")
    conn.getresponse().read()
    out.append(time.monotonic() - started)
print(json.dumps(out))
"""


def health_latencies(base: str) -> subprocess.Popen[str]:
    """Start probing ``base``/health every 10 ms in a separate process; :func:`stop_probe` collects."""
    host, port = base.split("://", 1)[1].rsplit(":", 1)
    return subprocess.Popen([sys.executable, "-c", _PROBER, host, port], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def stop_probe(prober: subprocess.Popen[str]) -> list[float]:
    out, _ = prober.communicate("stop\n", timeout=300)
    return [float(x) for x in json.loads(out)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_health(args: argparse.Namespace, tmp: Path) -> str:
    per = 262_000  # under max_prompt_chars + max_response_chars; prompts that are not prefixes of their query
    body: dict[str, list[str]] = {"query": [], "prompts": []}
    while True:  # as many hostile queries as fit in one 16 MiB body (max_body_bytes)
        i = len(body["query"])
        body["query"].append(("[INST]" * (per // 6))[: per - 10] + f"{i:09d}")
        body["prompts"].append(("[INST] " * 2000) + f"{i}")
        if len(json.dumps(body)) > 16 * 2**20 - 1024:
            body["query"].pop()
            body["prompts"].pop()
            break
    count = len(body["query"])
    raw = json.dumps(body).encode()
    with FaultJudge() as judge, reward_server(judge, log=tmp / "health.log") as base:

        async def main() -> tuple[list[float], list[float], int, float]:
            async with httpx.AsyncClient(timeout=300) as client:
                prober = health_latencies(base)
                await asyncio.sleep(3)
                idle = stop_probe(prober)
                prober = health_latencies(base)
                await asyncio.sleep(0.5)  # the prober is up before the body goes
                started = time.monotonic()
                reply = await client.post(base + "/get_reward", content=raw, headers={"Content-Type": "application/json"})
                took = time.monotonic() - started
                return idle, stop_probe(prober), reply.status_code, took

        idle, busy, status, took = asyncio.run(main())
    return (
        f"health: /health p50/p99 idle {pct(idle, 0.5) * 1e3:.1f}/{pct(idle, 0.99) * 1e3:.1f} ms; while a "
        f"{len(raw) / 2**20:.1f} MiB body ({count} hostile queries) was scored (HTTP {status}, {took:.1f} s): "
        f"{pct(busy, 0.5) * 1e3:.1f}/{pct(busy, 0.99) * 1e3:.1f} ms, max {max(busy) * 1e3:.0f} ms over "
        f"{len(busy)} probes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


# --- poisoned batch-mates -------------------------------------------------------------------------------
def poisoned(i: int) -> dict[str, Any]:
    prompt, q = query(i, "poison")
    kind = i % 4
    if kind == 0:
        return {"query": [q], "prompts": [prompt], "labels": ["ref \ud800 lone surrogate"]}
    if kind == 1:
        return {"query": [q + "\udfff"], "prompts": [prompt]}
    if kind == 2:
        return {"query": [prompt + "y" * 600_000], "prompts": [prompt]}
    return {"query": [q], "prompts": [prompt], "labels": [{"principles": ["ok", "\ud83d"]}]}


def run_poison(args: argparse.Namespace, tmp: Path) -> str:
    n = args.requests
    good_ids = [i for i in range(n) if i % 10 != 9]
    with FaultJudge() as judge, reward_server(judge, log=tmp / "poison.log") as base:

        async def send(ids: list[int], poison: bool) -> list[tuple[int, Any]]:
            async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None)) as client:
                bodies = []
                for i in ids if not poison else range(n):
                    if poison and i % 10 == 9:
                        bodies.append(poisoned(i))
                    else:
                        prompt, q = query(i, "poison")
                        bodies.append({"query": [q], "prompts": [prompt]})
                return await asyncio.gather(*(post(client, base, b) for b in bodies))

        alone = asyncio.run(send(good_ids, poison=False))
        mixed = asyncio.run(send(good_ids, poison=True))
    mixed_good = [mixed[i] for i in good_ids]
    mixed_bad = [mixed[i] for i in range(n) if i % 10 == 9]
    failed = sum(1 for status, body in mixed_good if status != 200 or None in body["rewards"])
    changed = sum(1 for (s1, b1), (s2, b2) in zip(alone, mixed_good) if s1 == s2 == 200 and b1["rewards"] != b2["rewards"])
    bad_statuses: dict[int, int] = {}
    for status, _ in mixed_bad:
        bad_statuses[status] = bad_statuses.get(status, 0) + 1
    alone_failed = sum(1 for status, body in alone if status != 200 or None in body["rewards"])
    return (
        f"poison: {n} requests at once, {len(mixed_bad)} poisoned: good requests failed {failed} "
        f"(alone: {alone_failed}), good rewards changed by a batch-mate {changed} of {len(good_ids)}; "
        f"poisoned answered {dict(sorted(bad_statuses.items()))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--requests", type=int, default=1000, help="requests in the kill and poison runs")
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the judge stays killed (OpenRLHF's client covers ~4 s)")
    parser.add_argument("--stall", type=float, default=12.0, help="seconds the judge hangs (the README's run: 60)")
    parser.add_argument("--step", type=int, default=64, help="OpenRLHF requests in flight through the stall")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per judge call")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    print(f"fault judge on 127.0.0.1, `grm-reward serve --backend openai -k 2`, judge latency {args.latency:g} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    runners = {"kill": run_kill, "stall": run_stall, "dead": run_dead, "health": run_health, "poison": run_poison}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            started = time.monotonic()
            print(runners[name](args, Path(tmp)) + f"  [{time.monotonic() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
