"""grm-reward as OpenRLHF's in-process reward function.

OpenRLHF loads this file by path in every vLLM rollout actor and calls
``reward_func(queries, prompts, labels)`` from many threads, one sample per call:

    --reward.remote_url /path/to/integrations/openrlhf/reward_func.py      # OpenRLHF >= 0.10.2
    --remote_rm_url     /path/to/integrations/openrlhf/reward_func.py      # OpenRLHF <= 0.10.1

Configure it with environment variables (they reach Ray actors through ``runtime_env``):

- ``GRM_REWARD_CONFIG=/path/judge.yaml``: a GRMConfig file; the judge runs in this process
  (each rollout actor loads its own judge: fine for an ``openai`` backend pointing at a shared
  vLLM/SGLang server, heavy for a local model).
- ``GRM_REWARD_URL=http://host:5000/get_reward``: forward to a running ``grm-reward serve``
  instead (``GRM_REWARD_SERVER_API_KEY`` is sent as a bearer token if set).

The query splitting, label handling and answer shape are the server's (grm_reward.adapters.openrlhf).
"""

from __future__ import annotations

import threading
from typing import Any

from grm_reward.adapters.openrlhf import RewardFunction

_lock = threading.Lock()
_reward: RewardFunction | None = None


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """``{"rewards": [...], "scores": [...], "extra_logs": {...}}``, one number per query."""
    global _reward
    with _lock:
        if _reward is None:
            _reward = RewardFunction.from_env()
    return _reward(queries, prompts, labels, **kwargs)
