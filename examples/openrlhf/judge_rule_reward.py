"""The SPCT rule reward (paper Eq. 11) as OpenRLHF's reward-function file (OpenRLHF >= 0.10.2).

    --reward.remote_url /path/to/examples/openrlhf/judge_rule_reward.py \
    --data.input_key prompt --data.label_key ground_truth --data.apply_chat_template

OpenRLHF loads this file by path in every vLLM rollout actor and calls
``reward_func(queries, prompts, labels)`` from worker threads, one rollout per call. ``queries``
are the chat-templated judge prompt followed by the judge's output (special tokens kept);
``labels`` are the ``ground_truth`` column written by ``examples/openrlhf/prepare_data.py``
(``{"num_responses", "best", "label"}`` as JSON). It returns ``rewards`` (+1 / -1), ``scores``
(1 correct / 0, for ``--algo.dynamic_filtering_enable``) and ``extra_logs`` (``judge_valid``,
``judge_tie``, ``judge_split_failed``). Pure Python, thread-safe, no model: the rule needs none.
"""

from __future__ import annotations

from typing import Any

from grm_reward.spct.reward_funcs import openrlhf_reward_func


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """``{"rewards": [±1.0], "scores": [0.0 | 1.0], "extra_logs": {...}}``, one number per query."""
    return openrlhf_reward_func(queries, prompts, labels, **kwargs)
