"""End to end on the embedded judge: Python API and the README's demo command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grm_reward import GenerativeRewardModel
from grm_reward.cli import main
from tests.conftest import requires_embedded, requires_torch

pytestmark = [pytest.mark.slow, requires_torch, requires_embedded]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rm():
    with GenerativeRewardModel(k=2, max_new_tokens=24, format_guarantee=True, token_prob=True) as model:
        yield model


def test_every_response_gets_a_reward_and_results_repeat(rm) -> None:
    requests = [
        ("What is the capital of Australia?", ["Canberra.", "Sydney."]),
        ("Say hello.", ["Hello!"]),
    ]
    first = rm.score_batch(requests)
    second = rm.score_batch(requests)
    for result, (_, responses) in zip(first, requests):
        assert len(result.rewards) == len(responses)
        assert all(r is not None and 0.0 <= r <= 1.0 for r in result.rewards)
        assert result.num_voted == 2
        for sample in result.samples:
            assert sample.valid and sample.token_scores is not None
            assert sample.forced == (sample.reason is not None)
    assert [r.rewards for r in first] == [r.rewards for r in second]
    assert [[s.text for s in r.samples] for r in first] == [[s.text for s in r.samples] for r in second]


def test_strict_mode_marks_unreadable_samples_invalid() -> None:
    with GenerativeRewardModel(k=1, max_new_tokens=8) as strict:
        result = strict.score("Say hello.", ["Hello!", "Hi"])
    sample = result.samples[0]
    if not sample.valid:  # 8 tokens are too few for the whole format
        assert result.rewards == [None, None]
        assert sample.reason.split(":")[0] in {"truncated", "no_score_block"}


def test_demo_command_on_the_shipped_sample(tmp_path, capsys) -> None:
    out = tmp_path / "demo.jsonl"
    code = main(["score", str(ROOT / "examples/data/sample.jsonl"), "-o", str(out),
                 "--config", str(ROOT / "examples/embedded_demo.yaml"), "--max-new-tokens", "24"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert all(len(r["rewards"]) == len(r["responses"]) and None not in r["rewards"] for r in rows)
    summary = capsys.readouterr().out
    assert "forced" in summary and "rows: 6 scored, 0 failed" in summary
