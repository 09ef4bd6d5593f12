"""`grm-reward eval` on the embedded judge, on a tiny set: the machinery end to end (not quality)."""

from __future__ import annotations

import json

import pytest

from grm_reward.cli import main
from tests.conftest import requires_embedded, requires_torch

pytestmark = [pytest.mark.slow, requires_torch, requires_embedded]


def test_eval_command_on_the_embedded_judge(tmp_path, capsys) -> None:
    data = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "capital", "prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
        {"id": "sum", "prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"},
        {"id": "greet", "prompt": "Say hello.", "chosen": "Hello!", "rejected": "Go away."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    args = ["eval", "-b", f"pairwise={data}", "--limit", "2", "-k", "2", "--max-new-tokens", "12",
            "--format-guarantee", "--transformers-device", "cpu", "--resamples", "4", "-o", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    (bench,) = report["benchmarks"]
    assert report["judge"]["model"] == "embedded SmolLM2-135M-Instruct" and report["notes"]
    assert bench["items_scored"] == 2 and bench["samples"]["total"] == 4
    assert bench["samples"]["invalid"] == 0  # the format guarantee fills unreadable samples
    assert bench["tokens"]["prompt_per_item"] > 100 and bench["tokens"]["completion_per_item"] > 0
    assert set(bench["curves"]["voting"]) == {"1", "2"}
    assert (out / "plots" / "accuracy_vs_k.png").is_file()
    assert "machinery" in capsys.readouterr().out
    # Resumed: the judge is not loaded again, the report is rebuilt from the stored samples.
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["benchmarks"][0]["items_sampled_now"] == 0
