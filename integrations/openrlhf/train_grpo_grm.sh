#!/usr/bin/env bash
# GRPO with OpenRLHF (>= 0.10.2 flags) and grm-reward as the reward model. An example to adapt:
# paths, GPU counts and batch sizes are placeholders. See docs/openrlhf.md.
#
#   JUDGE=BBQGOD/DeepSeek-GRM-27B POLICY=Qwen/Qwen2.5-7B-Instruct DATA=/data/prompts.jsonl \
#     bash integrations/openrlhf/train_grpo_grm.sh
#
# Two ways to hand rewards to OpenRLHF:
#   REWARD=server  (default) a vLLM judge server + `grm-reward serve`, reached over HTTP;
#   REWARD=file    OpenRLHF loads integrations/openrlhf/reward_func.py in each rollout actor,
#                  which talks to the same vLLM judge server through the `openai` backend.
set -euo pipefail

JUDGE=${JUDGE:-BBQGOD/DeepSeek-GRM-27B}
POLICY=${POLICY:-Qwen/Qwen2.5-7B-Instruct}
DATA=${DATA:-/data/prompts.jsonl}          # rows with "prompt" (chat messages) and "answer"
REWARD=${REWARD:-server}
JUDGE_GPUS=${JUDGE_GPUS:-0,1}              # GPUs for the judge's vLLM server
JUDGE_PORT=${JUDGE_PORT:-8000}
RM_PORT=${RM_PORT:-5000}
K=${K:-4}                                  # judge samples per response (votes)
TOKEN=${GRM_REWARD_SERVER_API_KEY:-$(python -c 'import secrets; print(secrets.token_hex(16))')}
HERE=$(cd "$(dirname "$0")" && pwd)

# 1. The judge: vLLM's OpenAI-compatible server (prefix caching shares the judge prompt between votes).
CUDA_VISIBLE_DEVICES=$JUDGE_GPUS vllm serve "$JUDGE" --port "$JUDGE_PORT" \
    --tensor-parallel-size 2 --enable-prefix-caching --max-model-len 8192 &
JUDGE_PID=$!
trap 'kill $JUDGE_PID ${RM_PID:-} 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$JUDGE_PORT/health" >/dev/null; do sleep 5; done

# 2. The reward model OpenRLHF talks to.
cat > /tmp/grm_judge.yaml <<YAML
backend: openai
model: $JUDGE
k: $K
max_new_tokens: 1024
format_guarantee: true
openai:
  base_url: http://127.0.0.1:$JUDGE_PORT/v1
  server: vllm
failure_reward: 0.0  # OpenRLHF needs a number for a sample no judge sample could read (grm_failed=1 marks it)
batching:
  group_by_prompt: true
  max_group_size: 8
  group_size: 8        # = --rollout.n_samples_per_prompt: a complete group is judged at once
  window_s: 5.0        # longer than a group's spread of finishing times; only incomplete groups wait for it
YAML

if [ "$REWARD" = server ]; then
    grm-reward serve --config /tmp/grm_judge.yaml --host 0.0.0.0 --port "$RM_PORT" --api-key "$TOKEN" &
    RM_PID=$!
    until curl -sf "http://127.0.0.1:$RM_PORT/health" >/dev/null; do sleep 2; done
    REWARD_ARGS=(--reward.remote_url "http://$(hostname -I | awk '{print $1}'):$RM_PORT/get_reward?token=$TOKEN")
    RUNTIME_ENV='{}'
else
    REWARD_ARGS=(--reward.remote_url "$HERE/reward_func.py")
    RUNTIME_ENV='{"env_vars": {"GRM_REWARD_CONFIG": "/tmp/grm_judge.yaml"}}'
fi

# 3. GRPO: group-relative advantages over n samples per prompt, rewards from the judge.
ray job submit --address="http://127.0.0.1:8265" --runtime-env-json="$RUNTIME_ENV" -- \
    python -m openrlhf.cli.train_ppo_ray \
    --actor.model_name_or_path "$POLICY" \
    --actor.num_nodes 1 --actor.num_gpus_per_node 4 \
    --ref.num_nodes 1 --ref.num_gpus_per_node 4 \
    --vllm.num_engines 2 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.5 \
    --train.colocate_all \
    --algo.advantage.estimator group_norm \
    --rollout.n_samples_per_prompt 8 \
    --rollout.batch_size 32 --rollout.micro_batch_size 4 --rollout.max_new_tokens 1024 \
    --train.batch_size 128 --train.micro_batch_size 2 \
    --data.prompt_dataset "$DATA" --data.input_key prompt --data.label_key answer --data.apply_chat_template \
    --data.max_len 4096 \
    "${REWARD_ARGS[@]}" \
    --algo.kl.init_coef 0.001 \
    --ckpt.output_dir ./ckpt/grpo-grm \
    --logger.logging_steps 1
