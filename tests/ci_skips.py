"""On CI (``CI=true``), a skipped test fails the run; GPU-only tests are deselected by marker, said aloud.

Developers keep skips for partial environments (no verl, no ``../shared/data``). On CI a skip would
turn a missing package or data folder into a quiet pass, so every skip there becomes a failure
naming its reason. Tests marked ``gpu`` cannot run on CI's CPU machines: they are deselected
there (unless ``GRM_REWARD_CI_GPU=1``) and the summary lists them. Loaded by the root conftest.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_DESELECTED = pytest.StashKey[list[str]]()


def on_ci() -> bool:
    """True where the environment says it is CI (``CI=true``, as GitHub Actions and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _gpu_expected() -> bool:
    return os.environ.get("GRM_REWARD_CI_GPU", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA GPU; skipped without one, deselected on CI (listed in the summary)"
    )
    config.stash[_DESELECTED] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The verl adapter imports verl at module level (verl loads it as a plugin): without verl its
    doctests cannot be collected. On CI verl must be there, so nothing is ignored."""
    verl_adapter = collection_path.name == "verl.py" and collection_path.parent.name == "adapters"
    if verl_adapter and not on_ci() and importlib.util.find_spec("verl") is None:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu or _gpu_expected():
        return
    if on_ci():
        config.stash[_DESELECTED].extend(item.nodeid for item in gpu)
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    elif shutil.which("nvidia-smi") is None:
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def _as_failure(report: Any, what: str) -> None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (
        f"{what} skipped on CI, where every test must run: {reason}\n"
        "(install the missing package or data; a GPU-only test takes the `gpu` marker)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if on_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _as_failure(report, "test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if on_ci() and report.skipped:
        _as_failure(report, "module")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    deselected = config.stash.get(_DESELECTED, [])
    if deselected:
        terminalreporter.section("deselected on CI: GPU-only tests (this machine has no GPU)")
        for nodeid in deselected:
            terminalreporter.line(nodeid)
