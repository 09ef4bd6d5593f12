"""Client CPU per 1,000 judge calls (issue 13, item 5), side by side in one run.

An instant judge (``tests/fault_judge.py``, its own process) answers chat completions; the client
process sends ``--calls`` POSTs, ``--in-flight`` at a time, and its own CPU time
(``time.process_time``) is measured per configuration: grm-reward's HTTP layer (aiohttp; hedging on
and off), the layer as it was at git ``--before`` (httpx; loaded from git, skipped when that
revision is not there) and the bare client libraries (httpx, aiohttp) with the same pool. Best of
``--repeats`` interleaved runs. Run: ``python benchmarks/bench_http_client_cpu.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grm_reward._http import HTTPEndpoint, HTTPPolicy, ServerHealth  # noqa: E402

BODY = {"model": "judge", "messages": [{"role": "user", "content": "[The Begin of Response]\nfine\n[The End of Response]"}], "seed": 1}
Send = Callable[[], Awaitable[object]]


async def measure(make: Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]], calls: int, in_flight: int) -> float:
    send, close = await make()
    await asyncio.gather(*(send() for _ in range(in_flight)))  # warm: connections open
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await send()

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    used = time.process_time() - started
    await close()
    return used * 1000 / calls


def layer(url: str, module: Any = None, **policy: object) -> Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]:
    """grm-reward's HTTP layer: this checkout's, or ``module`` (the layer of another revision)."""
    endpoint_type, policy_type, health_type = (
        (HTTPEndpoint, HTTPPolicy, ServerHealth) if module is None else (module.HTTPEndpoint, module.HTTPPolicy, module.ServerHealth)
    )

    async def make() -> tuple[Send, Callable[[], Awaitable[None]]]:
        chosen = policy_type(**policy)
        endpoint = endpoint_type(url, chosen, health=health_type(url, chosen))  # its own state, not the shared one
        return (lambda: endpoint.post_json("/chat/completions", BODY)), endpoint.aclose

    return make


def layer_at(revision: str) -> ModuleType | None:
    """``grm_reward/_http.py`` as it was at git ``revision``, loaded as a module (None if unavailable)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{revision}:grm_reward/_http.py"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "_http_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("grm_reward._http_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def bare_httpx(url: str, size: int) -> Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Send, Callable[[], Awaitable[None]]]:
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))
        content = json.dumps(BODY).encode()

        async def send() -> object:
            response = await client.post(url + "/chat/completions", content=content, headers={"Content-Type": "application/json"})
            return response.json()

        return send, client.aclose

    return make


def bare_aiohttp(url: str, size: int) -> Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Send, Callable[[], Awaitable[None]]]:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=size))
        content = json.dumps(BODY).encode()

        async def send() -> object:
            async with session.post(url + "/chat/completions", data=content, headers={"Content-Type": "application/json"}) as r:
                return await r.json()

        return send, session.close

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default="i11-core", help="git revision whose (httpx) layer is measured alongside")
    args = parser.parse_args()
    before = layer_at(args.before)
    judge = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fault_judge.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert judge.stdout is not None
        url = judge.stdout.readline().strip()
        size = 64
        configs = {}
        if before is not None:
            configs[f"layer at {args.before} (httpx), default"] = layer(url, before)
        configs |= {
            "layer (aiohttp), default (hedging, learned timeout)": layer(url),
            "layer (aiohttp), no hedging, fixed timeout": layer(url, hedge=False, latency_timeout_factor=0.0),
            "layer (aiohttp), pool 32 (= calls in flight)": layer(url, max_concurrency=32),
            "bare httpx.AsyncClient, pool 64": bare_httpx(url, size),
            "bare aiohttp.ClientSession, pool 64": bare_aiohttp(url, size),
        }
        results: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):  # interleaved rounds: load changes hit every configuration alike
            for name, make in configs.items():
                results[name].append(asyncio.run(measure(make, args.calls, args.in_flight)))
    finally:
        judge.communicate("", timeout=30)
    base = min(next(iter(results.values())))
    print(f"client CPU seconds per 1,000 calls, instant judge, {args.in_flight} in flight, best of {args.repeats}")
    for name, values in results.items():
        print(f"  {name:<52} {min(values):5.2f} s  {min(values) / base:5.2f}x")


if __name__ == "__main__":
    main()
