"""SPCT end to end on CPU: meta-RM data -> train-meta -> the checkpoint rates samples; rft-data on the embedded judge.

The meta RM trained here is a tiny random Llama with the embedded model's tokenizer (built in the
test, no hub). Its data come from a scripted judge that is right on some items and wrong on
others, and says so in its analysis ("careful" / "reversed"), so a few steps can learn the label.
"""

from __future__ import annotations

import json
import math

import pytest

from grm_reward import GenerativeRewardModel, GRMConfig
from grm_reward.backends import ScriptedBackend
from grm_reward.backends.scripted import JudgeCall
from grm_reward.cli import main
from tests.conftest import requires_embedded, requires_torch
from tests.helpers import judge_text
from tests.spct_helpers import quality

pytestmark = [pytest.mark.slow, requires_torch, requires_embedded]


def careful_or_reversed_judge(call: JudgeCall) -> str:
    """Right on prompts without "hard" (analysis "careful"); reverses the scores on the others ("reversed")."""
    scores = [quality(r) for r in call.responses]
    if "hard" in call.prompt:
        return judge_text([11 - s for s in scores], analysis="reversed")
    return judge_text(scores, analysis="careful")


def careful_backend(config: object) -> ScriptedBackend:
    return ScriptedBackend(careful_or_reversed_judge)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    """A tiny random causal LM (2 layers, hidden 64) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-base")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_meta_data_train_meta_and_the_checkpoint_rates_judgements(tmp_path, tiny_base, capsys) -> None:
    rows = [
        {"id": f"{kind}{i}", "prompt": f"{kind} question {i}", "chosen": f"GOOD {i}", "rejected": f"BAD {i}"}
        for i in range(12) for kind in ("easy", "hard")
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data, ckpt = tmp_path / "meta.jsonl", tmp_path / "meta-rm"
    backend = "tests.integration.test_spct_meta_rm:careful_backend"
    assert main(["spct", "meta-data", str(src), "-o", str(data), "--backend", backend, "--samples", "2",
                 "--tokenizer", tiny_base]) == 0
    meta_rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    assert len(meta_rows) == 48 and sum(r["label"] for r in meta_rows) == 24
    assert all(("careful" in r["text"]) == (r["label"] == 1) for r in meta_rows)
    assert meta_rows[0]["text"].startswith("<|im_start|>")  # the base's chat template, as at inference
    capsys.readouterr()

    code = main(["spct", "train-meta", str(data), "-o", str(ckpt), "--base-model", tiny_base, "--lr", "3e-3",
                 "--batch-size", "8", "--epochs", "10", "--max-steps", "40", "--max-length", "256",
                 "--eval-split", "0.25", "--log-every", "10"])
    log = capsys.readouterr().out
    assert code == 0, log
    assert "step 1/40  loss" in log and "step 40/40  loss" in log and "held-out after training" in log
    report = json.loads((ckpt / "meta_rm_training.json").read_text(encoding="utf-8"))
    assert report["steps"] == 40 and report["eval_rows"] == 12 and report["train_rows"] == 36
    assert all(math.isfinite(loss) for _, loss in report["losses"])
    assert report["eval_after"]["loss"] < report["eval_before"]["loss"]
    assert report["eval_after"]["accuracy"] == 1.0

    # The checkpoint is a meta RM: it rates each sample, and sound judgements rate higher.
    def judge(call: JudgeCall) -> str:
        return careful_or_reversed_judge(call) if call.sample_index % 2 else judge_text([5, 5], analysis="reversed")

    config = GRMConfig(k=4, meta_rm=str(ckpt), k_meta=2, shuffle="none", meta={"max_length": 256})
    with GenerativeRewardModel(config, backend=ScriptedBackend(judge)) as rm:
        result = rm.score("easy question 99", ["GOOD 99", "BAD 99"])
    ratings = {s.text.split("\n")[1]: s.meta_score for s in result.samples}
    assert all(r is not None and math.isfinite(r) for r in ratings.values())
    assert ratings["Analysis: careful"] > ratings["Analysis: reversed"]
    voters = sorted(result.samples, key=lambda s: -(s.meta_score or 0))[:2]
    assert all("careful" in s.text for s in voters) and result.best == 0


def test_rft_data_on_the_embedded_judge(tmp_path, capsys) -> None:
    rows = [
        {"id": "math", "prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5."},
        {"id": "single", "prompt": "Name a prime number.", "response": "7 is prime.", "label": 1},
    ]
    src = tmp_path / "items.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out, traj = tmp_path / "rft.jsonl", tmp_path / "traj.jsonl"
    code = main(["spct", "rft-data", str(src), "-o", str(out), "--trajectories", str(traj), "--samples", "2",
                 "--max-new-tokens", "24", "--transformers-device", "cpu", "--hint", "both"])
    summary = capsys.readouterr().out
    assert code == 0, summary
    trajectories = [json.loads(line) for line in traj.read_text(encoding="utf-8").splitlines()]
    plain = [t for t in trajectories if not t["hinted"]]
    assert len(plain) == 4 and {t["id"] for t in plain} == {"math", "single"}
    # whatever the 135M model wrote, each trajectory was read strictly and labelled by Eq. 10
    assert all(t["correct"] is False or t["scores"] is not None for t in trajectories)
    easy = {i for i in ("math", "single") if all(p["correct"] for p in plain if p["id"] == i)}
    hinted = [t for t in trajectories if t["hinted"]]
    assert [t["id"] for t in hinted] == ([] if "math" in easy else ["math"])  # a single response is never hinted
    kept = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(kept) == sum(t["correct"] for t in trajectories if t["id"] not in easy)
    assert all(row["messages"][0]["content"].count("The best response is") == 0 for row in kept)
    assert "plain samples: 4" in summary and "rows written" in summary
