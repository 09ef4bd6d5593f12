"""Issue 10's kill/restart run, small: OpenRLHF's own client, a real `grm-reward serve`, the fault judge.

The judge is killed for longer than OpenRLHF's client retries cover (5 tries, 1 s apart), under
concurrent requests; the server holds its calls for the breaker's probe within the request's
deadline, so no request is lost and no reward is None. The full-size run is
``benchmarks/bench_faults.py`` (figures in benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import is_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not (is_available("openrlhf") and is_available("aiohttp")),
        reason="needs `pip install --no-deps openrlhf==0.11.2` and aiohttp",
    ),
]

ROOT = Path(__file__).resolve().parents[2]


def test_judge_killed_and_restarted_under_openrlhf_requests_loses_nothing(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_faults", ROOT / "benchmarks" / "bench_faults.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.kill_figures(requests=200, outage_s=6.0, latency_s=0.05, tmp=tmp_path)
    assert figures["lost"] == 0 and figures["none"] == 0
