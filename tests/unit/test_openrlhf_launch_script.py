"""The OpenRLHF launch example uses only flags that OpenRLHF 0.11.2's trainer defines."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import is_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not is_available("openrlhf"), reason="needs `pip install --no-deps openrlhf==0.11.2`")
def test_launch_script_flags_exist_in_openrlhf() -> None:
    spec = importlib.util.find_spec("openrlhf")
    source = (Path(next(iter(spec.submodule_search_locations))) / "cli" / "train_ppo_ray.py").read_text()
    defined = set(re.findall(r'add_argument\(\s*"(--[\w.]+)"', source))
    script = (ROOT / "integrations" / "openrlhf" / "train_grpo_grm.sh").read_text()
    used = set(re.findall(r"(?<![\w-])(--[a-z]+\.[\w.]+)", script))  # OpenRLHF's flags are the dotted ones
    assert used, "no OpenRLHF flags found in the launch script"
    assert used <= defined, f"unknown to OpenRLHF 0.11.2: {sorted(used - defined)}"
    assert "--reward.remote_url" in used
