"""CPU smoke run of the verl SPCT recipe: the reward path of ``run_grpo.sh``, through verl's own code.

verl cannot train on these CPU-only machines (its rollouts need vLLM/SGLang on a GPU), so this
runs everything around the training step that verl does for the reward, with verl's own classes:

1. ``prepare_data.py`` turns the shipped smoke rl-data into verl parquet;
2. ``run_grpo.sh`` (``DRY_RUN=1``) composes the launch config; that exact config is used below;
3. verl's ``RLHFDataset`` loads the parquet (``data.prompt_key``, ``filter_overlong_prompts``);
4. a tiny random policy (1-layer Llama, SmolLM2's tokenizer and chat template) generates judge
   outputs for each chat-templated judge prompt, on CPU; beside them, one hand-written output per
   prompt (a correct verdict for even rows, a tie for odd rows) so that both +1 and -1 occur;
5. the rollouts become a ``DataProto`` laid out as verl's trainer hands it to the reward loop
   (left-padded prompts, right-padded responses ending in EOS);
6. ``load_reward_manager`` (verl's loader: ``reward.custom_reward_function.path=pkg://...``,
   ``reward.reward_manager.name=naive``) builds the manager; its ``run_single`` scores each rollout
   and ``assemble_rm_scores`` places each reward at the last valid response token.

It checks each reward against the rule applied to the decoded output, and writes ``summary.json``.

    python examples/verl/smoke.py --output-dir /tmp/verl-smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SMOKE_RL = HERE.parent / "data" / "spct" / "rl.jsonl"


def build_tiny_policy(path: Path) -> Any:
    """A 1-layer random Llama with the embedded SmolLM2 tokenizer (saved to ``path``); returns (model, tokenizer)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    if tokenizer.pad_token_id is None:  # as verl's hf_tokenizer does
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def launch_config(model_dir: Path, data_dir: Path) -> Any:
    """The config ``run_grpo.sh`` composes (verl's main_ppo with ``--cfg job``), as an OmegaConf object."""
    from omegaconf import OmegaConf

    env = {**os.environ, "DRY_RUN": "1", "MODEL": str(model_dir), "DATA_DIR": str(data_dir),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(HERE / "run_grpo.sh")], capture_output=True, text=True, env=env, check=True)
    return OmegaConf.create(proc.stdout)


def hand_written_output(truth: Any, *, correct: bool) -> str:
    """A judge output the rule calls correct (or, with ``correct=False``, a tie / the wrong side of the threshold)."""
    if truth.num_responses == 1:
        lo, hi = truth.score_range
        score = (hi if truth.label == 1 else lo) if correct else (lo if truth.label == 1 else hi)
        return f"Specific Criteria: Accuracy.\nAnalysis: Checked.\nScores: \\boxed{{{score}}}"
    scores = [3] * truth.num_responses
    scores[truth.best] = 9
    if not correct:  # a tie at the top is wrong (Eq. 10's strict inequality)
        scores[(truth.best + 1) % truth.num_responses] = 9
    return f"Specific Criteria: Accuracy.\nAnalysis: Compared.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def rollout_batch(tokenizer: Any, rollouts: list[dict[str, Any]]) -> Any:
    """A DataProto as verl's trainer builds it: left-padded prompts, right-padded responses, masks."""
    import numpy as np
    import torch
    from tensordict import TensorDict
    from verl import DataProto

    pad = tokenizer.pad_token_id
    p_len = max(len(r["prompt_ids"]) for r in rollouts)
    r_len = max(len(r["response_ids"]) for r in rollouts)
    prompts, responses, masks = [], [], []
    for r in rollouts:
        p, s = r["prompt_ids"], r["response_ids"]
        prompts.append([pad] * (p_len - len(p)) + p)
        responses.append(s + [pad] * (r_len - len(s)))
        masks.append([0] * (p_len - len(p)) + [1] * len(p) + [1] * len(s) + [0] * (r_len - len(s)))
    prompts_t, responses_t, mask = torch.tensor(prompts), torch.tensor(responses), torch.tensor(masks)
    batch = TensorDict(
        {
            "prompts": prompts_t,
            "responses": responses_t,
            "input_ids": torch.cat([prompts_t, responses_t], dim=1),
            "attention_mask": mask,
            "position_ids": torch.clamp(mask.cumsum(dim=1) - 1, min=0),
        },
        batch_size=len(rollouts),
    )
    keys = ("data_source", "reward_model", "extra_info", "raw_prompt", "uid")
    non_tensor = {k: np.fromiter((r[k] for r in rollouts), dtype=object, count=len(rollouts)) for k in keys}
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--rl-data", type=Path, default=SMOKE_RL)
    p.add_argument("--samples", type=int, default=2, help="policy samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=12)
    args = p.parse_args(argv)
    start = time.perf_counter()

    import torch
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from grm_reward.spct import reward_funcs
    from grm_reward.spct.reward_funcs import judge_verdict, parse_ground_truth

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(HERE / "prepare_data.py"), str(args.rl_data), "-o", str(out / "data")],
                   check=True, stdout=subprocess.DEVNULL)
    model, tokenizer = build_tiny_policy(out / "policy")
    config = launch_config(out / "policy", out / "data")
    dataset = RLHFDataset(data_files=[str(out / "data" / "train.parquet")], tokenizer=tokenizer, config=config.data)

    rollouts: list[dict[str, Any]] = []
    generator = torch.Generator().manual_seed(0)
    for i in range(len(dataset)):
        item = dataset[i]
        text = tokenizer.apply_chat_template(list(item["raw_prompt"]), add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        base = {k: item[k] for k in ("data_source", "reward_model", "extra_info", "raw_prompt")}
        base["uid"] = f"prompt-{i}"
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        with torch.no_grad():
            inputs = torch.tensor([prompt_ids] * args.samples)
            generated = model.generate(
                inputs, attention_mask=torch.ones_like(inputs), do_sample=True, temperature=1.0,
                max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            )
        for row in generated[:, len(prompt_ids):].tolist():
            ids = row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row
            rollouts.append({**base, "prompt_ids": prompt_ids, "response_ids": ids, "source": "policy"})
        truth = parse_ground_truth(item["reward_model"]["ground_truth"])
        written = hand_written_output(truth, correct=i % 2 == 0)
        ids = tokenizer(written, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rollouts.append({**base, "prompt_ids": prompt_ids, "response_ids": ids,
                         "source": "hand-written correct" if i % 2 == 0 else "hand-written tie/wrong"})
    data = rollout_batch(tokenizer, rollouts)

    manager = load_reward_manager(config, tokenizer)
    assert isinstance(manager, NaiveRewardManager), type(manager)
    # verl wraps the loaded function in partial(_call_with_kwargs, fn, reward_kwargs)
    assert manager.compute_score.args[0] is reward_funcs.compute_score, manager.compute_score

    async def score_all() -> list[dict[str, Any]]:
        return await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(data))))

    results = manager.loop.run_until_complete(score_all())
    scores = [float(r["reward_score"]) for r in results]
    rm_scores = manager.assemble_rm_scores(data, scores)

    prompt_len = data.batch["prompts"].shape[1]
    last = (data.batch["attention_mask"][:, prompt_len:].sum(dim=1) - 1).tolist()
    texts = []
    for i, r in enumerate(rollouts):
        decoded = tokenizer.decode(r["response_ids"], skip_special_tokens=True)
        texts.append(decoded)
        expected = judge_verdict(decoded, parse_ground_truth(r["reward_model"]["ground_truth"])).reward
        assert scores[i] == expected, (i, r["source"], decoded, scores[i])
        if r["source"] == "hand-written correct":
            assert scores[i] == 1.0, (i, decoded)
        if r["source"] == "hand-written tie/wrong":
            assert scores[i] == -1.0, (i, decoded)
        assert rm_scores[i, last[i]].item() == scores[i]
        assert rm_scores[i].abs().sum().item() == 1.0  # only the last valid token carries the reward
    keys = sorted({tuple(sorted(r["reward_extra_info"])) for r in results})
    assert keys == [("correct", "score", "tie", "valid")], keys

    summary = {
        "rollouts": len(rollouts),
        "prompts": len(dataset),
        "manager": f"{type(manager).__module__}.{type(manager).__name__}",
        "compute_score": config.reward.custom_reward_function.path + ":" + config.reward.custom_reward_function.name,
        "rewards": scores,
        "sources": [r["source"] for r in rollouts],
        # the raw material, for a reader to recompute every reward without this script's bookkeeping
        "texts": texts,
        "ground_truths": [r["reward_model"]["ground_truth"] for r in rollouts],
        "uids": [r["uid"] for r in rollouts],
        "reward_tensor_rows": [rm_scores[i].tolist() for i in range(len(rollouts))],
        "response_lengths": [len(r["response_ids"]) for r in rollouts],
        "reward_positions": last,
        "plus_one": scores.count(1.0),
        "minus_one": scores.count(-1.0),
        "policy_valid_share": sum(r["reward_extra_info"]["valid"] for r, s in zip(results, rollouts)
                                  if s["source"] == "policy") / max(1, sum(s["source"] == "policy" for s in rollouts)),
        "reward_extra_keys": list(keys[0]),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    listed = ("rewards", "sources", "reward_positions", "texts", "ground_truths", "uids", "reward_tensor_rows",
              "response_lengths")
    print(json.dumps({k: v for k, v in summary.items() if k not in listed}))
    return summary


if __name__ == "__main__":
    main()
