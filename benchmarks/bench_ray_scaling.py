"""Throughput of the Ray Serve fleet with 1, 2 and 4 judge replicas, side by side in one run (issue 14).

The judge is ``tests.ray_support.SlowJudge``: ``--latency`` seconds per prompt, one prompt at a
time per replica (an engine that is busy while it judges), so the fleet can only go faster by
adding replicas. One private local Ray cluster (no dashboard, loopback, auth off) is started;
for each replica count the application is (re)deployed, warmed, and ``--requests`` single-sample
``/get_reward`` requests with distinct prompts are sent, ``--concurrency`` at a time, from this
process (httpx). Printed: requests/s per replica count and the ratios to 1 replica (goal: 2
replicas >= 1.7x). ``--kill N`` then sends N OpenRLHF requests (GRPO groups of 4, OpenRLHF's
own client ``openrlhf/utils/agent.py``) to 2 replicas, kills one replica after a sixth have been
answered, and prints lost / None rewards, requests resent and whether the replica came back.

    .venv/bin/python benchmarks/bench_ray_scaling.py                      # 1, 2, 4 replicas
    .venv/bin/python benchmarks/bench_ray_scaling.py --kill 1000          # and the failure run

Figures are printed side by side from one run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from grm_reward import GRMConfig  # noqa: E402
from tests.ray_support import local_ray  # noqa: E402
from tests.servers import free_port  # noqa: E402

CHATML = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def config(replicas: int) -> GRMConfig:
    return GRMConfig(
        backend="tests.ray_support:slow_judge", k=1, seed=3,
        batching={"group_by_prompt": True, "window_s": 0.01},
        ray={"replicas": replicas, "num_cpus": 0, "ingress_num_cpus": 0},
    )


def deploy(base: str, replicas: int) -> None:
    from ray import serve

    from grm_reward.server.ray import build_fleet

    serve.run(build_fleet(config(replicas)), name="grm-reward", route_prefix="/")
    deadline = time.monotonic() + 180
    while httpx.get(base + "/health", timeout=30).json()["fleet"]["replicas_up"] != replicas:
        if time.monotonic() > deadline:
            raise SystemExit(f"{replicas} replicas did not come up")
        time.sleep(0.5)


async def throughput(base: str, n: int, concurrency: int, tag: str) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        prompt = CHATML.format(q=f"{tag} question {i}?")
        async with gate:
            reply = await client.post(base + "/get_reward", json={"query": [prompt + f"answer {i}"], "prompts": [prompt]})
        if reply.status_code != 200 or None in reply.json()["rewards"]:
            raise SystemExit(f"request {i}: {reply.status_code} {reply.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        await asyncio.gather(*(one(client, i) for i in range(min(16, n))))  # warm the path
        started = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(n)))
        return n / (time.perf_counter() - started)


def openrlhf_agent() -> types.ModuleType:
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--kill needs `pip install --no-deps openrlhf==0.11.2`")
    sys.modules["openrlhf.utils.logging_utils"] = types.SimpleNamespace(init_logger=logging.getLogger)  # type: ignore[assignment]
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "agent.py"
    module_spec = importlib.util.spec_from_file_location("openrlhf_agent", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


async def kill_run(base: str, n: int) -> dict[str, object]:
    import ray

    agent = openrlhf_agent()
    executor = agent.SingleTurnAgentExecutor(base + "/get_reward")
    victims = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
               if "GRMJudge" in a["name"] and a["namespace"] == "serve"]
    samples = [(CHATML.format(q=f"kill question {i // 4}?"), f"It is {i}") for i in range(n)]
    started = time.perf_counter()
    calls = [asyncio.ensure_future(executor._fetch_rewards_via_http([p + a], [p], [""])) for p, a in samples]
    while sum(c.done() for c in calls) < n // 6:
        await asyncio.sleep(0.05)
    ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
    replies = await asyncio.gather(*calls, return_exceptions=True)
    seconds = time.perf_counter() - started
    lost = sum(1 for r in replies if isinstance(r, BaseException) or not r)
    rewards = [r[0]["rewards"][0] for r in replies if not isinstance(r, BaseException) and r]
    return {"requests": n, "lost": lost, "none": sum(1 for r in rewards if r is None), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.1, help="judge seconds per prompt")
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--kill", type=int, default=0, help="also run the failure test with this many requests")
    args = parser.parse_args()
    counts = [int(x) for x in args.replicas.split(",")]
    with local_ray(num_cpus=4, latency=args.latency):
        from ray import serve

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        rates = {}
        for replicas in counts:
            deploy(base, replicas)
            rates[replicas] = asyncio.run(throughput(base, args.requests, args.concurrency, f"r{replicas}"))
        ideal = 1 / args.latency if args.latency else float("inf")  # latency 0: the serving path's own ceiling
        print(f"judge: {args.latency} s per prompt, one at a time per replica (ideal {ideal:.1f} req/s per replica); "
              f"{args.requests} requests, {args.concurrency} in flight")
        print("replicas  req/s   vs 1 replica  vs ideal")
        for replicas, rate in rates.items():
            print(f"{replicas:>8}  {rate:6.1f}  {rate / rates[counts[0]] * counts[0]:11.2f}x  {rate / (ideal * replicas):7.2f}")
        if args.kill:
            deploy(base, 2)
            result = asyncio.run(kill_run(base, args.kill))
            deadline = time.monotonic() + 180
            health: dict = {}
            while time.monotonic() < deadline:
                health = httpx.get(base + "/health", timeout=30).json()
                if health["fleet"]["replicas_up"] == 2:
                    break
                time.sleep(0.5)
            metrics = httpx.get(base + "/metrics", timeout=30).text
            non_200 = [line for line in metrics.splitlines()
                       if line.startswith("grm_requests_total") and 'status="200"' not in line]
            print(f"kill one of 2 replicas under {result['requests']} OpenRLHF requests: lost {result['lost']}, "
                  f"None rewards {result['none']}, resent {health['fleet']['requests_resent']}, "
                  f"non-200 answers {non_200 or 0}, replicas up after {health['fleet']['replicas_up']}, "
                  f"{result['seconds']} s")


if __name__ == "__main__":
    main()
