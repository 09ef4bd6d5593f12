"""SPCT with TRL: train a DeepSeek-GRM-style judge (rejective fine-tuning, then rule-based GRPO).

Stages (paper §3.2, App. C.1):

1. ``sft``  — rejective fine-tuning (RFT): TRL ``SFTTrainer`` on chat rows from
   ``grm-reward spct rft-data`` (judge prompt -> accepted principles/critique/scores), lr 5e-6.
2. ``grpo`` — rule-based online RL: TRL ``GRPOTrainer`` on ``grm-reward spct rl-data`` rows with
   the Eq. 11 reward :func:`grm_reward.spct.reward_funcs.judge_rule_reward` (+1 if the judge's
   scores pick the labelled best strictly, -1 otherwise, ties and unreadable output included),
   no format reward, a large KL coefficient (beta 0.08 for 27B, 0.002 for 16B), G = 4, lr 4e-7.
3. ``meta`` — the meta reward model: ``grm-reward spct train-meta`` on ``grm-reward spct meta-data``
   rows (binary cross-entropy, lr 1e-5 in the paper); ``GRMConfig(meta_rm=<output-dir>/meta)`` loads it.

The RL rows can also be built here from preference items (``--items``, through
``grm-reward spct rl-data``); the RFT and meta rows need judge samples, so build them first with
``grm-reward spct rft-data`` / ``meta-data`` (see docs/spct.md).

    # the whole recipe on a GPU node (see examples/trl/README.md for the full commands)
    python examples/trl/spct.py --stage all --model google/gemma-2-27b \
        --rft-data rft.jsonl --rl-data rl.jsonl --meta-data meta.jsonl --output-dir runs/spct

    # CPU smoke run: a tiny random policy with SmolLM2's tokenizer, the shipped smoke data, a short judge
    # template; 150 RFT steps (it learns the answer format), 8 GRPO steps, 2 meta-RM steps
    python examples/trl/spct.py --smoke --output-dir /tmp/spct-smoke

Each stage writes its model to ``<output-dir>/<stage>/`` and its ``log_history.json`` (TRL's log
records: loss, ``rewards/judge_rule_reward/mean``, ``judge_rule_reward/unreadable_share``, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SMOKE_DATA = HERE.parent / "data" / "spct"

# Paper hyper-parameters (App. C.1). Batch sizes there are 1024 (RFT) and 512 (RL), 900 steps each.
RFT_LR = 5e-6
RL_LR = 4e-7
BETA_27B = 0.08
GROUP_SIZE = 4

# Smoke settings (CPU, a tiny random policy): enough RFT for the policy to learn the judge's output
# format from the RFT rows, so GRPO samples at temperature 1 are sometimes right (+1) and sometimes not
# (-1), and a GRPO learning rate large enough that the policy visibly leaves the reference (KL > 0).
SMOKE_TEMPLATE = SMOKE_DATA / "smoke_template.txt"  # a short judge prompt: the RFT rows and RL rows use it
SMOKE_STEPS = {"sft": 150, "grpo": 8, "meta": 2}
SMOKE_RFT_LR = 1e-2
SMOKE_RL_LR = 1e-4


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def save_logs(trainer: Any, out: Path) -> None:
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1), encoding="utf-8")


def build_tiny_policy(path: Path) -> str:
    """A 1-layer random Llama (about 3.2M parameters, mostly the tied embedding) with the embedded SmolLM2
    tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    # SmolLM2's generation config ends a turn at <|im_end|> (its tokenizer's eos_token is <|im_start|>):
    # without it, GRPO rollouts would run on past the judge's answer to max_completion_length.
    generation = GenerationConfig.from_pretrained(embedded_model_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=generation.eos_token_id,
        pad_token_id=generation.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def stage_steps(args: argparse.Namespace, stage: str) -> int:
    """--max-steps, else the smoke run's steps for this stage, else -1 (the epochs decide)."""
    if args.max_steps is not None:
        return int(args.max_steps)
    return SMOKE_STEPS[stage] if args.smoke else -1


def common_args(args: argparse.Namespace, stage: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "logging_steps": 1 if args.smoke else 10,
        "report_to": "none" if args.smoke else args.report_to,
        "save_strategy": "no" if args.smoke else "steps",
        "seed": args.seed,
        "max_steps": stage_steps(args, stage),
    }
    if args.smoke:  # CPU: TRL's configs default to bf16 and gradient checkpointing
        values |= {"bf16": False, "gradient_checkpointing": False, "dataloader_pin_memory": False}
        values |= {"lr_scheduler_type": "constant"}  # a few steps: no decay to zero
    return values


def run_sft(args: argparse.Namespace, model: str, out: Path) -> str:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # Prompt-completion rows: the loss covers the judge's answer, not the long judge prompt.
    rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in read_jsonl(args.rft_data)]
    config = SFTConfig(
        output_dir=str(out),
        learning_rate=args.rft_lr,
        per_device_train_batch_size=2 if args.smoke else args.per_device_batch_size,
        gradient_accumulation_steps=1 if args.smoke else args.gradient_accumulation_steps,
        max_length=args.max_length,
        num_train_epochs=1,
        **common_args(args, "sft"),
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model(str(out))
    save_logs(trainer, out)
    return str(out)


def run_grpo(args: argparse.Namespace, model: str, out: Path) -> str:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from grm_reward.spct.reward_funcs import judge_rule_reward

    rows = read_jsonl(args.rl_data)
    config = GRPOConfig(
        output_dir=str(out),
        learning_rate=args.rl_lr,
        beta=args.beta,
        num_generations=args.group_size,
        per_device_train_batch_size=args.group_size if args.smoke else args.per_device_batch_size,
        gradient_accumulation_steps=1 if args.smoke else args.gradient_accumulation_steps,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        loss_type="grpo",  # the paper uses GRPO's original setting
        scale_rewards="group",  # advantage = (r - mean) / std within the group (Eq. 15)
        log_completions=True,
        num_completions_to_print=1 if args.smoke else None,
        use_vllm=args.use_vllm,
        **common_args(args, "grpo"),
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=judge_rule_reward, args=config, train_dataset=Dataset.from_list(rows)
    )
    trainer.train()
    trainer.save_model(str(out))
    save_logs(trainer, out)
    return str(out)


def grm_reward_cli(*args: str) -> None:
    """Run ``grm-reward <args>`` with this interpreter."""
    subprocess.run([sys.executable, "-m", "grm_reward", *args], check=True)


def build_rl_data(args: argparse.Namespace) -> Path:
    """``grm-reward spct rl-data ITEMS -o <output-dir>/rl-data.jsonl`` (judge prompts, shown best / label)."""
    out = args.output_dir / "rl-data.jsonl"
    template = ["--template", str(args.template)] if args.template else []
    grm_reward_cli("spct", "rl-data", str(args.items), "-o", str(out), "--seed", str(args.seed), *template)
    return out


def run_meta(args: argparse.Namespace, out: Path, base_model: str | None) -> str:
    """``grm-reward spct train-meta``: a one-logit sequence classifier, binary cross-entropy."""
    command = ["spct", "train-meta", str(args.meta_data), "-o", str(out), "--lr", str(args.meta_lr)]
    if base_model:
        command += ["--base-model", base_model]
    if stage_steps(args, "meta") > 0:
        command += ["--max-steps", str(stage_steps(args, "meta"))]
    if args.smoke:
        command += ["--batch-size", "2", "--max-length", "1024", "--eval-split", "0"]
    grm_reward_cli(*command)
    return str(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stage", choices=["all", "sft", "grpo", "meta"], default="all")
    p.add_argument("--model", help="base model (the paper trains from pretrained Gemma-2-27B / DeepSeek-V2-Lite)")
    p.add_argument("--rft-data", type=Path, help="`grm-reward spct rft-data` output (chat SFT rows)")
    p.add_argument("--rl-data", type=Path, help="`grm-reward spct rl-data` output (judge prompts + labels)")
    p.add_argument("--items", type=Path, help="preference items: build --rl-data from them with `grm-reward spct rl-data`")
    p.add_argument("--meta-data", type=Path, help="`grm-reward spct meta-data` output ({text, label})")
    p.add_argument("--meta-base-model", help="base model of the meta RM (default: train-meta's; smoke: the tiny policy)")
    p.add_argument("--meta-lr", type=float, default=1e-5, help="meta RM learning rate (paper: 1e-5)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny random policy, shipped smoke data, CPU; steps {SMOKE_STEPS}, lr {SMOKE_RFT_LR} / {SMOKE_RL_LR}")
    p.add_argument("--rft-lr", type=float, help=f"RFT learning rate (paper: {RFT_LR})")
    p.add_argument("--rl-lr", type=float, help=f"GRPO learning rate (paper: {RL_LR})")
    p.add_argument("--template", help="judge template of the RL rows built from --items (smoke: smoke_template.txt)")
    p.add_argument("--beta", type=float, default=BETA_27B, help="KL coefficient (0.08 for 27B, 0.002 for 16B)")
    p.add_argument("--group-size", type=int, default=GROUP_SIZE, help="GRPO group size G")
    p.add_argument("--temperature", type=float, default=1.0, help="rollout temperature (not given by the paper)")
    p.add_argument("--max-length", type=int, default=4096, help="SFT sequence length")
    p.add_argument("--max-completion-length", type=int, default=1024, help="judge output tokens in GRPO rollouts (smoke: 64)")
    p.add_argument("--per-device-batch-size", type=int, default=4)
    p.add_argument("--gradient-accumulation-steps", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=None, help="steps per stage (default: 1 epoch; smoke: see --smoke)")
    p.add_argument("--use-vllm", action="store_true", help="GRPO rollouts with vLLM (TRL's colocate mode)")
    p.add_argument("--report-to", default="none")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.smoke:
        args.rft_data = args.rft_data or SMOKE_DATA / "rft.jsonl"
        if args.rl_data is None:
            args.items = args.items or SMOKE_DATA / "items.jsonl"
        args.meta_data = args.meta_data or SMOKE_DATA / "meta.jsonl"
        args.template = args.template or str(SMOKE_TEMPLATE)
        args.max_length = min(args.max_length, 1024)
        args.max_completion_length = min(args.max_completion_length, 64)  # the RFT answers are 47 tokens
    if args.rft_lr is None:
        args.rft_lr = SMOKE_RFT_LR if args.smoke else RFT_LR
    if args.rl_lr is None:
        args.rl_lr = SMOKE_RL_LR if args.smoke else RL_LR
    needs = {"sft": ["rft_data"], "grpo": ["rl_data"], "meta": ["meta_data"]}
    stages = ["sft", "grpo", "meta"] if args.stage == "all" else [args.stage]
    if not args.smoke and not args.model and {"sft", "grpo"} & set(stages):
        p.error("--model is required (or --smoke)")
    for stage in stages:
        for name in needs[stage]:
            if getattr(args, name) is None and not (name == "rl_data" and args.items):
                p.error(f"stage {stage} needs --{name.replace('_', '-')}")
    args.stages = stages
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if args.smoke and model is None:
        model = build_tiny_policy(args.output_dir / "tiny-policy")
    meta_base = args.meta_base_model or (model if args.smoke else None)
    if args.rl_data is None and args.items is not None and "grpo" in args.stages:
        args.rl_data = build_rl_data(args)
    timings: dict[str, float] = {}
    for stage in args.stages:
        start = time.perf_counter()
        out = args.output_dir / stage
        if stage == "sft":
            model = run_sft(args, model, out)
        elif stage == "grpo":
            model = run_grpo(args, model, out)
        else:
            run_meta(args, out, meta_base)
        timings[stage] = round(time.perf_counter() - start, 1)
        print(f"[{stage}] done in {timings[stage]} s -> {out}")
    (args.output_dir / "timings.json").write_text(json.dumps(timings), encoding="utf-8")


if __name__ == "__main__":
    main()
