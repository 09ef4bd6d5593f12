"""On CI (CI=true) a skip fails the run and GPU-only tests are deselected by marker, aloud; elsewhere skips stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SAMPLE = '''
import pytest

pytestmark = []

def test_runs():
    assert True

@pytest.mark.skipif(True, reason="needs a package that is missing")
def test_optional():
    assert True

def test_skips_inside():
    pytest.skip("no ../shared/data")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

@pytest.mark.gpu
def test_on_a_gpu():
    assert True
'''


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "GRM_REWARD_CI_GPU", "PYTEST_ADDOPTS"}}
    env.update(PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "tests.ci_skips",
         "--continue-on-collection-errors"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    (tmp_path / "test_module.py").write_text(
        'import pytest\npytest.importorskip("a_package_that_is_not_installed")\n', encoding="utf-8"
    )
    return tmp_path


def test_on_ci_every_skip_fails_and_gpu_tests_are_deselected_by_name(sample: Path) -> None:
    result = run_pytest(sample, "true")
    assert result.returncode == 1, result.stdout
    # a skip mark fails at setup (an error), pytest.skip() in the test and importorskip fail
    assert result.stdout.count("skipped on CI, where every test must run") == 3, result.stdout
    assert "test skipped on CI, where every test must run: needs a package that is missing" in result.stdout
    assert "test skipped on CI, where every test must run: no ../shared/data" in result.stdout
    assert "module skipped on CI, where every test must run" in result.stdout
    assert "a_package_that_is_not_installed" in result.stdout
    assert "1 passed, 1 deselected, 1 xfailed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
    assert "deselected on CI: GPU-only tests" in result.stdout
    assert "test_sample.py::test_on_a_gpu" in result.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_off_ci_skips_stay_skips(sample: Path, ci: str | None) -> None:
    result = run_pytest(sample, ci)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 4 skipped, 1 xfailed" in result.stdout  # the GPU test skips too: no GPU here
    assert "needs a package that is missing" in result.stdout and "skipped on CI" not in result.stdout
