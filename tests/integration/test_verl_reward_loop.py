"""The `grm` manager inside verl's real reward loop: plugin discovery, Ray workers, the launch script.

`RewardLoopManager` is what verl's trainers use (0.9): it starts `reward.num_workers` Ray actors,
each of which imports verl (loading our `verl.plugins` entry point), resolves
`reward.reward_manager.name=grm` through verl's registry and calls `run_single` per rollout; the
driver assembles `rm_scores`. The judge is scripted and built inside each worker from a
`package.module:factory` backend setting.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import is_available
from tests.helpers import checksum_score

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not is_available("verl"), reason="needs grm-reward[verl]")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKSUM = "tests.helpers:checksum_backend"


@pytest.mark.parametrize("policy, registered", [("auto", True), ("grm_reward", True), ("none", False)])
def test_import_verl_registers_grm_through_the_entry_point(policy, registered) -> None:
    code = (
        "import sys, verl;"
        "from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER;"
        "cls = REWARD_MANAGER.get('grm');"
        "print(cls is not None and cls.__module__, 'grm_reward.adapters.verl' in sys.modules)"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": policy}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == (["grm_reward.adapters.verl", "True"] if registered else ["False", "False"])


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # Workers import the scripted judge factory from this checkout's tests package.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": ROOT, "TOKENIZERS_PARALLELISM": "false"}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def test_reward_loop_manager_scores_with_grm_in_ray_workers(ray_cluster, tmp_path) -> None:
    from verl.experimental.reward_loop import RewardLoopManager

    from grm_reward.adapters.verl import EXTRA_INFO_KEYS, GRMRewardManager
    from tests.verl_support import compose, last_valid_token, rollout_batch, word_tokenizer

    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    config = compose([
        f"actor_rollout_ref.model.path={tmp_path / 'tokenizer'}",
        "reward.num_workers=2",
        "reward.grm.judge.backend=" + CHECKSUM,
        "reward.grm.judge.k=2",
    ])
    rows = [
        {"prompt": "user what is two plus two assistant", "response": r, "ground_truth": "4", "uid": "q1",
         "raw_prompt": [{"role": "user", "content": "What is two plus two?"}]}
        for r in ("four", "it is five", "four the answer")
    ] + [
        {"prompt": "user name a fruit assistant", "response": r, "uid": "q2",
         "raw_prompt": [{"role": "user", "content": "UNJUDGEABLE: name a fruit."}]}
        for r in ("apple", "pear")
    ] + [{"prompt": "user the sky colour assistant", "response": "blue", "uid": "q3",
          "raw_prompt": [{"role": "user", "content": "What colour is the sky?"}]}]
    batch = rollout_batch(tokenizer, rows)

    manager = RewardLoopManager(config)
    assert manager.reward_manager_cls is GRMRewardManager  # resolved by name on the driver, too
    out = manager.compute_rm_score(batch)

    assert out.meta_info["reward_extra_keys"] == list(EXTRA_INFO_KEYS)
    rm_scores = out.batch["rm_scores"]
    assert rm_scores.shape == batch.batch["responses"].shape
    expected = [(checksum_score(r["response"]) - 1) / 9 for r in rows]
    expected[3] = expected[4] = 0.0  # unjudgeable: failure_reward unset (0.0), and marked failed
    for row, position in enumerate(last_valid_token(batch)):
        assert rm_scores[row, position].item() == pytest.approx(expected[row])
        assert rm_scores[row].abs().sum().item() == pytest.approx(expected[row])
    assert out.non_tensor_batch["grm_failed"].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # Two workers of three rollouts each: "four"/"it is five"/"four the answer" share one, judged listwise.
    assert out.non_tensor_batch["grm_critique"].tolist() == ["Checked 3."] * 3 + ["", "", "Checked 1."]


@pytest.mark.parametrize("mode", ["verl", "external"])
def test_launch_script_composes_a_grm_config(mode, tmp_path) -> None:
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "JUDGE_MODE": mode,
        "JUDGE_URL": "http://judge:8000/v1",
        "K": "8",
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    script = os.path.join(ROOT, "integrations", "verl", "run_grpo_grm.sh")
    proc = subprocess.run(
        [script, "trainer.total_epochs=3"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    )
    config = yaml.safe_load(proc.stdout)
    reward = config["reward"]
    assert reward["reward_manager"]["name"] == "grm"
    assert reward["grm"]["judge"]["k"] == 8 and config["trainer"]["total_epochs"] == 3
    assert config["algorithm"]["adv_estimator"] == "grpo"
    if mode == "verl":
        assert reward["reward_model"]["enable"] is True
        assert reward["custom_reward_function"]["path"] == "pkg://grm_reward.adapters.verl"
        assert reward["reward_model"]["model_path"] == "BBQGOD/DeepSeek-GRM-16B"
    else:
        assert reward["reward_model"]["enable"] is False
        assert reward["grm"]["judge"]["backend"] == "openai"
        assert reward["grm"]["judge"]["openai"]["base_url"] == "http://judge:8000/v1"
