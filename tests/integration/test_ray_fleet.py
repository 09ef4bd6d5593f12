"""The Ray Serve fleet (grm_reward.server.ray) on a private local Ray cluster, CPU only.

The judge is ``tests.ray_support.SlowJudge``: a fixed latency per prompt, one prompt at a time per
replica, scores from (seed, response) only, and its text names the replica process. OpenRLHF's
own HTTP client (``openrlhf/utils/agent.py``, loaded as in test_openrlhf_client.py) sends the
traffic of the failure test. One cluster for the module; ``local_ray`` shuts Serve and Ray down.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from grm_reward import GRMConfig
from tests.conftest import is_available
from tests.integration.test_openrlhf_client import agent  # noqa: F401  (OpenRLHF's client, a fixture)
from tests.servers import free_port, process_server, uvicorn_thread

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (is_available("ray") and is_available("grpc_reflection")), reason="needs pip install 'grm-reward[ray]'"
    ),
]

PROMPT = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
ROOT = Path(__file__).resolve().parents[2]
_JUDGED = re.compile(r"judge pid=(\d+) shown=(\d+)")


def fleet_config(replicas: int, **batching) -> GRMConfig:
    return GRMConfig(
        backend="tests.ray_support:slow_judge", k=2, seed=7,
        batching={"group_by_prompt": True, "window_s": 0.05, **batching},
        ray={"replicas": replicas, "num_cpus": 0, "ingress_num_cpus": 0, "retries": 3},
    )


def session_processes(sid: int) -> list[int]:
    """Processes still in session ``sid`` (process_server starts each command in its own session)."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def test_grm_reward_serve_ray_runs_a_fleet_until_sigterm_and_cleans_up(tmp_path) -> None:
    # Runs first, before the module's cluster exists; the CLI starts its own local Ray.
    port = free_port()
    command = [sys.executable, "-m", "grm_reward", "serve", "--ray", "--replicas", "2", "--ray-num-cpus", "0",
               "--backend", "tests.ray_support:slow_judge", "-k", "2", "--port", str(port)]
    env = {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "GRM_TEST_JUDGE_LATENCY": "0"}
    with process_server(command, port, env=env, timeout=240, cwd=ROOT, log=tmp_path / "serve.log") as base:
        wait_for_fleet(base, 2)
        reply = httpx.post(base + "/get_reward", json={"query": [PROMPT + "4"], "prompts": [PROMPT]}, timeout=60)
        assert reply.status_code == 200 and len(reply.json()["rewards"]) == 1
        process = process_server.current  # type: ignore[attr-defined]
        process.terminate()
        process.wait(timeout=120)
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    deadline = time.monotonic() + 30
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert session_processes(process.pid) == []  # Ray's head, workers and replicas are gone


@pytest.fixture(scope="module")
def cluster():
    from ray import serve

    from tests.ray_support import local_ray

    with local_ray(latency=0.05):
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"


def deploy(replicas: int, **server) -> None:
    from ray import serve

    from grm_reward.server.ray import build_fleet

    serve.run(build_fleet(fleet_config(replicas, **server)), name="grm-reward", route_prefix="/")


def wait_for_fleet(base: str, replicas: int, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(base + "/health", timeout=10).json()
        if health["fleet"]["replicas_up"] == replicas:
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.5)


async def post_all(url: str, bodies: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(timeout=120) as client:
        replies = await asyncio.gather(*(client.post(url, json=b) for b in bodies))
    assert [r.status_code for r in replies] == [200] * len(bodies), [r.text for r in replies if r.status_code != 200]
    return [r.json() for r in replies]


def group_bodies(groups: int, size: int) -> list[dict]:
    return [
        {"requests": [{"prompt": f"question {g}", "responses": [f"answer {g}.{i}"]}], "include_samples": True}
        for g in range(groups) for i in range(size)
    ]


def test_a_grpo_group_is_judged_by_one_replica_listwise_and_groups_spread(cluster) -> None:
    deploy(2, window_s=0.5)  # a group's requests reach the replica over a few ms on a busy machine
    wait_for_fleet(cluster, 2)
    groups, size = 24, 4
    replies = asyncio.run(post_all(cluster + "/v1/rewards", group_bodies(groups, size)))
    judged = defaultdict(set)
    shown = Counter()
    for g in range(groups):
        for reply in replies[g * size : (g + 1) * size]:
            for sample in reply["results"][0]["samples"]:
                pid, count = _JUDGED.search(sample["text"]).groups()
                judged[g].add(pid)
                shown[int(count)] += 1
    assert all(len(pids) == 1 for pids in judged.values()), judged  # one replica per group
    # and the replica's batcher still judged the group as one list (a straggler may miss the window)
    assert shown[size] >= 0.8 * groups * size * 2, shown
    per_replica = Counter(next(iter(p)) for p in judged.values())
    assert len(per_replica) == 2 and min(per_replica.values()) >= groups // 4, per_replica  # both replicas used


def test_same_seed_same_reward_from_one_replica_two_and_the_single_process_server(cluster) -> None:
    from grm_reward.server import build_app
    from tests.ray_support import SlowJudge

    bodies = [
        {"requests": [{"prompt": f"q{i}", "responses": [f"a{i}", f"b{i}", f"c{i}"]}]} for i in range(12)
    ] + [{  # one body, 3 prompts x 2 samples: several judge calls from one HTTP request, each grouped
        "query": [PROMPT.replace("2+2", f"{i % 3}+2") + f"{i}<|im_end|>" for i in range(6)],
        "prompts": [PROMPT.replace("2+2", f"{i % 3}+2") for i in range(6)],
    }]

    def rewards(base: str) -> list:
        native = asyncio.run(post_all(base + "/v1/rewards", bodies[:-1]))
        [openrlhf] = asyncio.run(post_all(base + "/get_reward", bodies[-1:]))
        return [r["results"][0]["rewards"] for r in native] + [openrlhf["rewards"]]

    config = fleet_config(1)
    with uvicorn_thread(build_app(config, backend=SlowJudge(0.0))) as single:
        expected = rewards(single)
    assert len({tuple(r) for r in expected}) > 3  # the rewards differ between requests: the check can fail
    for replicas in (1, 2):
        deploy(replicas)
        wait_for_fleet(cluster, replicas)
        assert rewards(cluster) == expected, f"{replicas} replicas"


@pytest.mark.skipif(not (is_available("openrlhf") and is_available("aiohttp")), reason="needs openrlhf (--no-deps)")
def test_a_judge_replica_killed_under_openrlhf_traffic_loses_nothing_and_comes_back(cluster, agent) -> None:  # noqa: F811
    import ray

    deploy(2)
    wait_for_fleet(cluster, 2)
    n = 600  # 150 GRPO groups of 4: about 4 s of judging on 2 replicas
    samples = [(f"<|im_start|>user\nQuestion {i // 4}?<|im_end|>\n<|im_start|>assistant\n", f"It is {i}") for i in range(n)]
    victims = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if "GRMJudge" in a["name"] and a["namespace"] == "serve"
    ]
    assert len(victims) == 2

    async def rollout(url: str) -> list:
        executor = agent.SingleTurnAgentExecutor(url)
        calls = [
            asyncio.ensure_future(executor._fetch_rewards_via_http([p + a + "<|im_end|>"], [p], [""]))
            for p, a in samples
        ]
        while sum(c.done() for c in calls) < n // 6:  # traffic flows through both replicas now
            await asyncio.sleep(0.05)
        ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
        return await asyncio.gather(*calls)

    replies = asyncio.run(rollout(cluster + "/get_reward"))
    rewards = [info["rewards"][0] for [info] in replies]
    assert len(rewards) == n and None not in rewards
    health = wait_for_fleet(cluster, 2)  # Ray Serve started a new replica
    metrics = httpx.get(cluster + "/metrics", timeout=10).text
    assert 'status="200"} ' + str(n) in metrics, metrics  # each answered at the first try: none failed over to OpenRLHF's retry
    assert health["fleet"]["requests_resent"] > 0  # some requests were in flight on the killed replica
    assert "grm_fleet_replicas_up 2" in metrics and metrics.count("grm_fleet_replica_queue_depth{") == 2
