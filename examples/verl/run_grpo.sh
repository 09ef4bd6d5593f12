#!/usr/bin/env bash
# SPCT stage 2 with verl >= 0.9: rule-based GRPO of a judge with the Eq. 11 reward (paper §3.2, App. C.1).
#
# The policy is the judge (start from your RFT checkpoint, e.g. examples/trl/spct.py --stage sft);
# its rollouts are judge outputs for `grm-reward spct rl-data` prompts, converted to verl parquet by
#   python examples/verl/prepare_data.py rl.jsonl -o $DATA_DIR
# The reward is grm_reward.spct.reward_funcs.compute_score (+1 / -1), loaded by verl's own loader
# through verl 0.9's keys (reward.*; the legacy top-level custom_reward_function.* and
# reward_model.* keys are silently ignored by main_ppo in 0.9).
#
# Paper defaults: KL beta 0.08 (27B; 0.002 for 16B), G = 4, lr 4e-7, batch 512, 900 steps, no format reward.
# DRY_RUN=1 prints the composed config (Hydra's --cfg job) instead of training.
# Extra arguments are passed to verl as Hydra overrides.
set -euo pipefail

MODEL=${MODEL:-runs/spct/sft}           # the RFT judge
DATA_DIR=${DATA_DIR:-$HOME/data/grm_spct}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
TP=${TP:-4}                              # rollout tensor parallel size (27B)
BETA=${BETA:-0.08}
GROUP=${GROUP:-4}
LR=${LR:-4e-7}
BATCH=${BATCH:-512}                      # prompts per step (the paper's unit is not stated)
STEPS=${STEPS:-900}

DRY_RUN_ARGS=()
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  DRY_RUN_ARGS=(--cfg job)
fi

exec python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  algorithm.use_kl_in_reward=False \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="$DATA_DIR/test.parquet" \
  data.prompt_key=prompt \
  data.train_batch_size="$BATCH" \
  data.max_prompt_length=6144 \
  data.max_response_length=1024 \
  data.filter_overlong_prompts=True \
  data.truncation=error \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.ppo_mini_batch_size=128 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.actor.use_kl_loss=True \
  actor_rollout_ref.actor.kl_loss_coef="$BETA" \
  actor_rollout_ref.actor.kl_loss_type=low_var_kl \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.actor.fsdp_config.param_offload=True \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.n="$GROUP" \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.tensor_model_parallel_size="$TP" \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.ref.fsdp_config.param_offload=True \
  reward.reward_manager.name=naive \
  reward.custom_reward_function.path=pkg://grm_reward.spct.reward_funcs \
  reward.custom_reward_function.name=compute_score \
  trainer.n_gpus_per_node="$N_GPUS" \
  trainer.nnodes="$NNODES" \
  trainer.total_training_steps="$STEPS" \
  trainer.project_name=grm_spct \
  trainer.experiment_name=spct_grpo \
  trainer.logger='["console"]' \
  trainer.save_freq=100 \
  trainer.test_freq=50 \
  "$@" \
  "${DRY_RUN_ARGS[@]}"
