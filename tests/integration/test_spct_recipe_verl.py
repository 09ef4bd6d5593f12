"""The verl SPCT recipe: its launch script's keys, and the smoke run of its reward path in verl's own code.

verl cannot train on CPU here; ``examples/verl/smoke.py`` runs verl's ``RLHFDataset`` on the
prepared parquet, a tiny policy's judge outputs, and verl's ``load_reward_manager`` (naive manager,
our ``compute_score`` loaded from ``pkg://``) on a ``DataProto``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import is_available, requires_embedded, requires_torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not is_available("verl"), reason="needs grm-reward[verl]")]

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "examples" / "verl"


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


def test_launch_script_uses_verl_09_reward_keys_and_paper_settings(tmp_path) -> None:
    proc = subprocess.run(
        [str(HERE / "run_grpo.sh"), "trainer.total_epochs=2"],
        capture_output=True, text=True, env=env(DRY_RUN="1", MODEL="/models/judge-rft"), cwd=tmp_path, check=True,
    )
    config = yaml.safe_load(proc.stdout)
    reward = config["reward"]
    assert reward["custom_reward_function"] == {"path": "pkg://grm_reward.spct.reward_funcs", "name": "compute_score"}
    assert reward["reward_manager"]["name"] == "naive" and reward["reward_manager"]["source"] == "register"
    assert reward["reward_model"]["enable"] is False  # the rule reward needs no judge model
    # The legacy keys main_ppo 0.9 ignores stay unset.
    assert config["custom_reward_function"]["path"] is None
    assert config["reward_model"]["reward_manager"] is None
    actor = config["actor_rollout_ref"]
    assert config["algorithm"]["adv_estimator"] == "grpo"
    assert actor["actor"]["use_kl_loss"] is True and actor["actor"]["kl_loss_coef"] == 0.08
    assert actor["actor"]["optim"]["lr"] == 4e-7 and actor["rollout"]["n"] == 4
    assert actor["model"]["path"] == "/models/judge-rft"
    assert config["trainer"]["total_training_steps"] == 900 and config["trainer"]["total_epochs"] == 2


@requires_torch
@requires_embedded
def test_smoke_run_scores_rollouts_through_verls_loader(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / "smoke.py"), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env=env(TOKENIZERS_PARALLELISM="false"), cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["prompts"] == 8 and summary["rollouts"] == 24  # 2 policy samples + 1 hand-written per prompt
    assert summary["manager"].endswith("reward_manager.naive.NaiveRewardManager")
    assert summary["compute_score"] == "pkg://grm_reward.spct.reward_funcs:compute_score"
    assert summary["reward_extra_keys"] == ["correct", "score", "tie", "valid"]
    # Recompute every reward from the raw outputs (what the policy wrote, each prompt's truth) with the
    # library's rule, instead of trusting the script's own checks and counts.
    rollouts = list(zip(summary["sources"], summary["texts"], summary["ground_truths"], summary["rewards"],
                        summary["reward_tensor_rows"], summary["response_lengths"], strict=True))
    assert len(rollouts) == 24 and sorted(summary["uids"].count(u) for u in set(summary["uids"])) == [3] * 8
    expected = []
    for source, text, truth, reward, row, length in rollouts:
        value = rule_from_truth(text, truth)
        expected.append(value)
        assert reward == value, (source, text)
        # verl's reward tensor: the reward on the last response token, zeros elsewhere
        assert [(j, v) for j, v in enumerate(row) if v != 0] == [(length - 1, value)]
        if source == "hand-written correct":
            assert value == 1.0
        elif source == "hand-written tie/wrong":
            assert value == -1.0 and "Scores:" in text  # readable, but a tie or the wrong side
    assert summary["sources"].count("hand-written correct") == 4
    assert (expected.count(1.0), expected.count(-1.0)) == (summary["plus_one"], summary["minus_one"]) == (4, 20)


def rule_from_truth(text: str, truth) -> float:
    from grm_reward.spct.rewards import rule_reward

    data = json.loads(truth) if isinstance(truth, str) else truth
    return rule_reward(text, data["num_responses"], best=data.get("best"), label=data.get("label"),
                       score_range=tuple(data.get("score_range") or (1, 10)), threshold=data.get("threshold"))
