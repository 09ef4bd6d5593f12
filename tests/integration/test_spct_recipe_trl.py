"""The TRL SPCT recipe's smoke run: SFT on RFT rows, GRPO with the rule reward, the meta RM, on CPU.

Runs ``examples/trl/spct.py --smoke`` as a user would (a tiny random policy with SmolLM2's
tokenizer; RL rows built by ``grm-reward spct rl-data`` from the shipped items with the short smoke
template, the shipped RFT and meta rows) and reads what it wrote: TRL's log history per stage, TRL's
completions tables, the saved checkpoints and the meta RM's training report.

The smoke RFT stage is long enough (150 steps) for the policy to learn the judge's answer format, so
the rule reward and the GRPO loss move: some readable answers, some steps with both +1 and -1 in a
group (nonzero advantages), and a nonzero KL term once the policy has left the reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import is_available, requires_embedded, requires_torch

pytestmark = [
    pytest.mark.slow,
    requires_torch,
    requires_embedded,
    pytest.mark.skipif(not is_available("trl"), reason="needs grm-reward[trl]"),
]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "trl" / "spct.py"


def test_smoke_run_trains_and_logs_the_rule_reward(tmp_path) -> None:
    import pandas as pd

    from grm_reward.spct.reward_funcs import RuleLabel, judge_verdict

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--output-dir", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[meta] done" in proc.stdout

    sft_logs = json.loads((out / "sft" / "log_history.json").read_text())
    sft_steps = [h for h in sft_logs if "loss" in h]
    assert len(sft_steps) == 150 and all(h["loss"] > 0 for h in sft_steps)
    assert sft_steps[0]["learning_rate"] == pytest.approx(1e-2)  # the smoke RFT learning rate
    assert sft_steps[-1]["loss"] < 0.1 * sft_steps[0]["loss"]  # it learned the answer format

    grpo_logs = json.loads((out / "grpo" / "log_history.json").read_text())
    grpo_steps = [h for h in grpo_logs if "loss" in h]
    assert len(grpo_steps) == 8
    for log in grpo_steps:
        assert -1.0 <= log["rewards/judge_rule_reward/mean"] <= 1.0
        assert "rewards/judge_rule_reward/std" in log
        assert 0.0 <= log["judge_rule_reward/unreadable_share"] <= 1.0
        assert "judge_rule_reward/tie_share" in log and "kl" in log  # beta > 0: a reference model is used
    assert grpo_steps[0]["learning_rate"] == pytest.approx(1e-4)  # the smoke RL learning rate
    # The reward moves: a step whose group holds both +1 and -1 has nonzero advantages and a policy gradient.
    mixed = [log for log in grpo_steps if log["rewards/judge_rule_reward/std"] > 0]
    assert mixed and all(log["grad_norm"] > 0 for log in mixed)
    # The loss moves: its surrogate term is 0 at ratio 1 (one update per batch), so the logged GRPO loss is
    # beta * KL, nonzero once the policy has left the reference.
    assert any(log["loss"] != 0 and log["kl"] > 0 for log in grpo_steps)

    # Every logged reward is the rule applied to that very completion and its own row's label.
    rl_data = (out / "rl-data.jsonl").read_text().splitlines()  # written by `grm-reward spct rl-data`
    rows = {json.loads(line)["prompt"][-1]["content"]: json.loads(line) for line in rl_data}
    tables = sorted((out / "grpo" / "completions").glob("completions_*.parquet"))
    table = pd.concat([pd.read_parquet(f) for f in tables], ignore_index=True)
    assert len(table) == 32  # 8 steps x 1 prompt x G = 4
    assert table.judge_rule_reward_valid.any()  # the policy writes readable score blocks after RFT
    assert any({-1.0, 1.0} <= set(group.judge_rule_reward) for _, group in table.groupby("step"))
    for prompt, completion, reward in zip(table.prompt, table.completion, table.judge_rule_reward):
        row = rows[prompt[-1]["content"]]
        truth = RuleLabel(row["num_responses"], row["best"], row["label"], tuple(row["score_range"]))
        assert reward == judge_verdict(completion[0]["content"], truth).reward

    for log in grpo_steps:  # the logged mean is the mean of that step's rewards
        step_rewards = table[table.step == log["step"]].judge_rule_reward
        assert log["rewards/judge_rule_reward/mean"] == pytest.approx(step_rewards.mean())
        assert log["judge_rule_reward/unreadable_share"] == pytest.approx(
            1.0 - table[table.step == log["step"]].judge_rule_reward_valid.mean()
        )

    for stage in ("sft", "grpo"):
        assert (out / stage / "model.safetensors").is_file() and (out / stage / "config.json").is_file()
    # GRPO started from the SFT checkpoint, and saved a model of the same shape.
    assert json.loads((out / "grpo" / "config.json").read_text())["hidden_size"] == 64

    # The meta RM: `grm-reward spct train-meta` on the tiny policy's architecture, one logit.
    meta_config = json.loads((out / "meta" / "config.json").read_text())
    assert meta_config["architectures"] == ["LlamaForSequenceClassification"] and len(meta_config["id2label"]) == 1
    report = json.loads((out / "meta" / "meta_rm_training.json").read_text())
    assert report["steps"] == 2 and report["mismatched_texts"] == 0  # same chat template as meta-data's text
    assert (out / "meta" / "model.safetensors").is_file()
