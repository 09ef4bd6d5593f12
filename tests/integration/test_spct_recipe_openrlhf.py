"""The OpenRLHF SPCT recipe: its launch flags parsed by OpenRLHF 0.11's own parser, and the smoke run.

OpenRLHF is installed ``--no-deps`` (its CUDA pins cannot install here), so its trainer module cannot
be imported; the flag check builds the trainer's argument parser from the installed
``openrlhf/cli/train_ppo_ray.py`` source (the statements of its ``__main__`` block up to
``parse_args``) and parses the launch script's arguments with it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import is_available, requires_embedded, requires_torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not is_available("openrlhf"), reason="needs openrlhf (--no-deps)")]

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "examples" / "openrlhf"


def openrlhf_file(*parts: str) -> Path:
    spec = importlib.util.find_spec("openrlhf")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0], *parts)


def train_ppo_ray_parser() -> argparse.ArgumentParser:
    path = openrlhf_file("cli", "train_ppo_ray.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))
    body = []
    for stmt in main.body:
        if isinstance(stmt, ast.Assign) and "parse_args" in ast.unparse(stmt.value):
            break
        body.append(stmt)
    namespace = {"argparse": argparse, "os": os, "datetime": datetime}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["parser"]


def hierarchize(args: argparse.Namespace):
    spec = importlib.util.spec_from_file_location("openrlhf_config", openrlhf_file("utils", "config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.hierarchize(args)


def test_launch_flags_parse_with_openrlhf_011(tmp_path) -> None:
    proc = subprocess.run(
        [str(HERE / "train_grpo.sh"), "--train.seed", "7"],
        capture_output=True, text=True, env={**os.environ, "DRY_RUN": "1", "MODEL": "/models/rft"}, check=True,
    )
    args = hierarchize(train_ppo_ray_parser().parse_args(proc.stdout.splitlines()))
    assert args.reward.remote_url == str(HERE / "judge_rule_reward.py")
    assert args.reward.remote_url.endswith(".py")  # OpenRLHF's test for the reward_func file form
    assert (args.data.input_key, args.data.label_key, args.data.apply_chat_template) == ("prompt", "ground_truth", True)
    assert args.algo.advantage.estimator == "group_norm"
    assert args.algo.kl.use_loss and args.algo.kl.estimator == "k3" and args.algo.kl.init_coef == 0.08
    assert args.rollout.n_samples_per_prompt == 4 and args.actor.adam.lr == 4e-7
    assert args.actor.model_name_or_path == "/models/rft" and args.train.seed == 7


@requires_torch
@requires_embedded
def test_smoke_run_rewards_rollouts_inside_openrlhfs_executor(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / "smoke.py"), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["prompts"] == 8 and summary["rollouts"] == 24
    assert summary["extra_log_keys"] == ["judge_split_failed", "judge_tie", "judge_valid"]
    # Recompute every reward from what OpenRLHF's executor produced (the decoded action, the label it
    # passed) with the library's rule, instead of trusting the script's own checks and counts.
    expected = []
    for record in summary["records"]:
        value = rule_from_truth(record["text"], record["label"])
        expected.append(value)
        assert record["reward"] == value, record
        assert record["text"].strip() and record["text"].strip() in record["query"]  # the judged response was sent
        assert record["truncated_prompt"] == (not record["query"].startswith(record["prompt"]))
        if value == 1.0:
            assert record["extra_logs"]["judge_valid"] == 1.0  # a correct verdict was read
        if record["source"] == "hand-written correct":
            assert value == 1.0
        elif record["source"] == "hand-written tie/wrong":
            assert value == -1.0 and record["extra_logs"]["judge_valid"] == 1.0  # readable, but a tie or wrong side
    # both split paths ran: prompts OpenRLHF left-truncated, and whole ones
    assert 0 < sum(r["truncated_prompt"] for r in summary["records"]) < 24
    assert [r["source"] for r in summary["records"]].count("hand-written correct") == 4
    assert (expected.count(1.0), expected.count(-1.0)) == (summary["plus_one"], summary["minus_one"]) == (4, 20)


def rule_from_truth(text: str, truth) -> float:
    from grm_reward.spct.rewards import rule_reward

    data = json.loads(truth) if isinstance(truth, str) else truth
    return rule_reward(text, data["num_responses"], best=data.get("best"), label=data.get("label"),
                       score_range=tuple(data.get("score_range") or (1, 10)), threshold=data.get("threshold"))
