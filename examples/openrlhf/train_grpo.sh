#!/usr/bin/env bash
# SPCT stage 2 with OpenRLHF >= 0.10.2 (flags checked against 0.11.2): rule-based GRPO of a judge.
#
# The policy is the judge (start from your RFT checkpoint); the reward is the paper's Eq. 11 rule,
# read strictly, from the file judge_rule_reward.py (OpenRLHF's `reward_func` file form: no reward
# model, no server). Data: python examples/openrlhf/prepare_data.py rl.jsonl -o $PROMPTS
#
# Paper defaults: KL beta 0.08 (27B; 0.002 for 16B) as a k3 KL loss (GRPO), G = 4 samples per
# prompt, group-normalised advantages, lr 4e-7, batch 512 prompts, no format reward.
# Needs a Ray cluster (`ray start --head`) with GPUs; DRY_RUN=1 prints the trainer's arguments, one per line.
# Extra arguments are appended to the trainer's command line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

MODEL=${MODEL:-runs/spct/sft}           # the RFT judge
PROMPTS=${PROMPTS:-$HOME/data/grm_spct/prompts.jsonl}
SAVE=${SAVE:-runs/spct/openrlhf_grpo}
N_GPUS=${N_GPUS:-8}
VLLM_ENGINES=${VLLM_ENGINES:-2}
VLLM_TP=${VLLM_TP:-4}
BETA=${BETA:-0.08}
GROUP=${GROUP:-4}
LR=${LR:-4e-7}
BATCH=${BATCH:-512}                      # prompts per rollout step (the paper's unit is not stated)

ARGS=(
  --actor.model_name_or_path "$MODEL"
  --reward.remote_url "$HERE/judge_rule_reward.py"
  --data.prompt_dataset "$PROMPTS"
  --data.input_key prompt
  --data.label_key ground_truth
  --data.apply_chat_template
  --data.max_len 7168
  --rollout.max_new_tokens 1024
  --rollout.temperature 1.0
  --rollout.n_samples_per_prompt "$GROUP"
  --rollout.batch_size "$BATCH"
  --rollout.micro_batch_size 4
  --train.batch_size $((BATCH * GROUP))
  --train.micro_batch_size 1
  --train.max_epochs 1
  --train.num_episodes 1
  --algo.advantage.estimator group_norm
  --algo.kl.use_loss
  --algo.kl.estimator k3
  --algo.kl.init_coef "$BETA"
  --actor.adam.lr "$LR"
  --actor.num_nodes 1
  --actor.num_gpus_per_node "$N_GPUS"
  --ref.num_nodes 1
  --ref.num_gpus_per_node "$N_GPUS"
  --vllm.num_engines "$VLLM_ENGINES"
  --vllm.tensor_parallel_size "$VLLM_TP"
  --vllm.gpu_memory_utilization 0.6
  --train.colocate_all
  --ds.zero_stage 3
  --ds.param_dtype bf16
  --actor.gradient_checkpointing_enable
  --ckpt.output_dir "$SAVE"
  "$@"
)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${ARGS[@]}"
  exit 0
fi

exec ray job submit --address="${RAY_ADDRESS:-http://127.0.0.1:8265}" \
  --runtime-env-json="{\"working_dir\": \"$HERE\"}" \
  -- python3 -m openrlhf.cli.train_ppo_ray "${ARGS[@]}"
