"""grm-reward: a plug-in generative reward model (DeepSeek-GRM style) for RL post-training.

A judge LLM writes principles, a critique and a score per response; it is sampled k times
(each sample sees the responses in its own shuffled order) and the scores are summed.

>>> from grm_reward import GenerativeRewardModel
>>> rm = GenerativeRewardModel(k=4)                      # doctest: +SKIP
>>> rm.score("What is 2+2?", ["4", "5"]).rewards         # doctest: +SKIP
[0.83, 0.21]

Importing this package loads no engine: torch, vllm, fastapi, trl and verl are imported only
by the backend or adapter that needs them. ``GRMReward`` (the TRL reward function) is loaded on
first access.
"""

from typing import TYPE_CHECKING, Any

from grm_reward.config import GRMConfig
from grm_reward.errors import (
    AllSamplesInvalidError,
    BackendCapabilityError,
    BackendError,
    BackendProtocolError,
    BackendUnavailableError,
    ConfigError,
    DeadlineExceededError,
    GenerationError,
    GRMError,
    InputError,
    JudgeUnavailableError,
    PromptTooLongError,
    TemplateError,
)
from grm_reward.model import GenerativeRewardModel
from grm_reward.parsing import parse_judgement
from grm_reward.types import Judgement, Principle, Request, RewardResult, Usage

if TYPE_CHECKING:
    from grm_reward.adapters.trl import GRMReward

__version__ = "0.1.0"

#: Names loaded on first access: {name: module}.
_LAZY = {"GRMReward": "grm_reward.adapters.trl"}

__all__ = [
    "AllSamplesInvalidError",
    "BackendCapabilityError",
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailableError",
    "ConfigError",
    "DeadlineExceededError",
    "GRMConfig",
    "GRMError",
    "GRMReward",
    "GenerationError",
    "GenerativeRewardModel",
    "InputError",
    "JudgeUnavailableError",
    "Judgement",
    "Principle",
    "PromptTooLongError",
    "Request",
    "RewardResult",
    "TemplateError",
    "Usage",
    "__version__",
    "parse_judgement",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'grm_reward' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
