"""Shared bits of the benchmark scripts: the judge they load once, and a few judge-shaped items."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from grm_reward import GRMConfig
from grm_reward.backends import Backend, create_backend

#: Short pairwise items (prompt, chosen, rejected) in the generic pairwise format.
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("What is 12 times 12?", "12 times 12 is 144.", "12 times 12 is 124."),
    ("Name a primary colour.", "Red is a primary colour.", "Green is a primary colour of paint."),
    ("Translate 'thank you' into Spanish.", "Gracias.", "Por favor."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius.", "90 degrees Celsius."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare.", "Charles Dickens."),
    ("What is the largest planet in the Solar System?", "Jupiter.", "Saturn."),
]


def write_pairs(path: Path, count: int) -> Path:
    if not 1 <= count <= len(PAIRS):
        raise SystemExit(f"--items must be between 1 and {len(PAIRS)}")
    rows = [{"id": f"pair{i}", "prompt": p, "chosen": c, "rejected": r} for i, (p, c, r) in enumerate(PAIRS[:count])]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load_judge(config: GRMConfig) -> Backend:
    """The judge engine, loaded once and shared by every run being compared."""
    return create_backend(config)


def judge_name(config: GRMConfig) -> str:
    return config.model or "embedded SmolLM2-135M-Instruct"
