#!/usr/bin/env bash
# GRPO with grm-reward's generative reward model as the reward (verl >= 0.9).
#
#   JUDGE_MODE=verl     (default) verl starts vLLM judge servers on their own GPUs and a router;
#                       the grm manager scores through the router (OpenAI-compatible).
#   JUDGE_MODE=external the judge is already served at JUDGE_URL (vllm serve, SGLang, an API).
#
# Data: verl's GSM8K parquet files (python3 examples/data_preprocess/gsm8k.py in verl's repo);
# their reward_model.ground_truth is shown to the judge as the reference answer.
# DRY_RUN=1 prints the composed config (Hydra's --cfg job) instead of training.
# Extra arguments are passed to verl as Hydra overrides.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

POLICY=${POLICY:-Qwen/Qwen2.5-0.5B-Instruct}
JUDGE=${JUDGE:-BBQGOD/DeepSeek-GRM-16B}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/gsm8k/train.parquet}
VAL_FILES=${VAL_FILES:-$HOME/data/gsm8k/test.parquet}
N_GPUS=${N_GPUS:-4}             # GPUs for the policy (actor, rollout, reference)
JUDGE_MODE=${JUDGE_MODE:-verl}
JUDGE_GPUS=${JUDGE_GPUS:-4}     # JUDGE_MODE=verl: GPUs of the judge's resource pool
JUDGE_TP=${JUDGE_TP:-2}         # JUDGE_MODE=verl: tensor parallel size of each judge server
JUDGE_URL=${JUDGE_URL:-http://127.0.0.1:8000/v1}  # JUDGE_MODE=external
K=${K:-4}                       # judge samples per rollout (voting)

case "$JUDGE_MODE" in
  verl)
    JUDGE_ARGS=(
      reward.reward_model.enable=True
      reward.reward_model.enable_resource_pool=True
      reward.reward_model.nnodes=1
      reward.reward_model.n_gpus_per_node="$JUDGE_GPUS"
      reward.reward_model.model_path="$JUDGE"
      reward.reward_model.rollout.name=vllm
      reward.reward_model.rollout.tensor_model_parallel_size="$JUDGE_TP"
      reward.reward_model.rollout.gpu_memory_utilization=0.85
      reward.reward_model.rollout.prompt_length=6144
      reward.reward_model.rollout.response_length=2048
    )
    ;;
  external)
    JUDGE_ARGS=(
      reward.grm.judge.backend=openai
      reward.grm.judge.model="$JUDGE"
      reward.grm.judge.openai.base_url="$JUDGE_URL"
    )
    ;;
  *)
    echo "JUDGE_MODE must be 'verl' or 'external', got '$JUDGE_MODE'" >&2
    exit 2
    ;;
esac

DRY_RUN_ARGS=()
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  DRY_RUN_ARGS=(--cfg job)
fi

exec python3 -m verl.trainer.main_ppo \
  --config-path="$HERE/config" \
  --config-name=grm_grpo \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.train_batch_size=64 \
  data.max_prompt_length=512 \
  data.max_response_length=1024 \
  data.filter_overlong_prompts=True \
  actor_rollout_ref.model.path="$POLICY" \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
  reward.grm.judge.k="$K" \
  reward.grm.judge.max_new_tokens=1024 \
  trainer.n_gpus_per_node="$N_GPUS" \
  trainer.nnodes=1 \
  trainer.project_name=grm_reward \
  trainer.experiment_name="grpo_grm_${JUDGE_MODE}" \
  trainer.logger='["console"]' \
  trainer.total_epochs=1 \
  "${JUDGE_ARGS[@]}" \
  "$@" \
  "${DRY_RUN_ARGS[@]}"
