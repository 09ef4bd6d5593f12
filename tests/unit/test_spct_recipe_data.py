"""The recipes' data converters and shipped smoke data (no framework needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from grm_reward.spct.reward_funcs import parse_ground_truth

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "data" / "spct"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (SMOKE / name).read_text(encoding="utf-8").splitlines()]


def test_smoke_data_follow_the_spct_formats() -> None:
    for row in rows("rl.jsonl"):
        # as `grm-reward spct rl-data` writes them (make_smoke_data.py runs it)
        assert set(row) == {"prompt", "num_responses", "best", "label", "id", "score_range"}
        assert row["prompt"][-1]["role"] == "user" and "You are a skilled little expert" in row["prompt"][-1]["content"]
        parse_ground_truth({k: row[k] for k in ("num_responses", "best", "label", "score_range")})  # valid labels
    for row in rows("rft.jsonl"):  # rendered with the short smoke template (make_smoke_data.py)
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and isinstance(row["hinted"], bool)
        assert row["messages"][0]["content"].startswith("Score ")
        assert "\\boxed{" in row["messages"][1]["content"]
    assert {row["label"] for row in rows("meta.jsonl")} == {0, 1}
    assert {row["hinted"] for row in rows("rft.jsonl")} == {False, True}


def test_verl_rows_carry_the_ground_truth_encoding() -> None:
    prepare = load(ROOT / "examples" / "verl" / "prepare_data.py")
    row = prepare.verl_row({"prompt": "judge me", "num_responses": 2, "best": 1, "label": None, "id": "x"}, 0, "train")
    assert row["prompt"] == [{"role": "user", "content": "judge me"}]
    assert row["data_source"] == "grm_spct" and row["reward_model"]["style"] == "rule"
    assert parse_ground_truth(row["reward_model"]["ground_truth"]).best == 1
    single = prepare.verl_row({"prompt": "p", "num_responses": 1, "best": None, "label": 0, "score_range": [0, 1]}, 1, "test")
    assert parse_ground_truth(single["reward_model"]["ground_truth"]).score_range == (0, 1)
    assert row["extra_info"] == {"id": "x", "index": 0, "split": "train", "num_responses": 2}


def test_openrlhf_rows_and_the_reward_file() -> None:
    prepare = load(ROOT / "examples" / "openrlhf" / "prepare_data.py")
    row = prepare.openrlhf_row({"prompt": [{"role": "user", "content": "judge"}], "num_responses": 1, "best": None,
                                "label": 0, "id": 3}, 0)
    assert row["prompt"] == [{"role": "user", "content": "judge"}] and row["id"] == "3"
    assert parse_ground_truth(row["ground_truth"]).label == 0
    # The file OpenRLHF loads by path: the reward_func(queries, prompts, labels) contract, positional.
    reward_file = load(ROOT / "examples" / "openrlhf" / "judge_rule_reward.py")
    prompt = "<|im_start|>user\njudge<|im_end|>\n<|im_start|>assistant\n"
    out = reward_file.reward_func([prompt + "Scores: \\boxed{2}<|im_end|>"], [prompt], [row["ground_truth"]])
    assert out["rewards"] == [1.0] and out["scores"] == [1.0]


def test_trl_recipe_arguments(tmp_path, capsys) -> None:
    import pytest

    spct = load(ROOT / "examples" / "trl" / "spct.py")
    args = spct.parse_args(["--smoke", "--output-dir", str(tmp_path)])
    assert args.stages == ["sft", "grpo", "meta"] and args.items == SMOKE / "items.jsonl" and args.rl_data is None
    # smoke: learning rates a tiny random policy learns the format with; the paper's beta and G
    assert (args.rft_lr, args.rl_lr, args.beta, args.group_size) == (1e-2, 1e-4, 0.08, 4)
    assert args.template == str(SMOKE / "smoke_template.txt") and args.max_completion_length == 64
    args = spct.parse_args(["--model", "m", "--rft-data", "r.jsonl", "--rl-data", "rl.jsonl", "--meta-data", "m.jsonl",
                            "--output-dir", str(tmp_path)])
    assert (args.rft_lr, args.rl_lr, args.beta, args.group_size) == (5e-6, 4e-7, 0.08, 4)  # paper App. C.1
    assert args.template is None and spct.stage_steps(args, "sft") == -1  # one epoch
    args = spct.parse_args(["--stage", "meta", "--meta-data", "m.jsonl", "--output-dir", str(tmp_path)])
    assert args.stages == ["meta"]  # the meta RM needs no policy model
    with pytest.raises(SystemExit):
        spct.parse_args(["--stage", "grpo", "--rl-data", "rl.jsonl", "--output-dir", str(tmp_path)])
    assert "--model is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        spct.parse_args(["--stage", "sft", "--model", "m", "--output-dir", str(tmp_path)])
    assert "stage sft needs --rft-data" in capsys.readouterr().err
