"""Generation engines behind one async protocol (:class:`Backend`).

Engines are imported lazily: ``import grm_reward`` never imports torch, vllm or an HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from grm_reward.backends.base import (
    FORCED_SCORES_PREFIX,
    Backend,
    BackendStats,
    Generation,
    GenerationOutput,
    GenerationRequest,
    ScoreFill,
    ScoreFillRequest,
    score_block_regex,
)
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from grm_reward.config import GRMConfig

__all__ = [
    "FORCED_SCORES_PREFIX",
    "Backend",
    "BackendStats",
    "Generation",
    "GenerationOutput",
    "GenerationRequest",
    "ScoreFill",
    "ScoreFillRequest",
    "ScriptedBackend",
    "create_backend",
    "score_block_regex",
]

# name -> (module, class); each class has ``from_config(config)``.
_REGISTRY = {
    "transformers": ("grm_reward.backends.transformers", "TransformersBackend"),
    "openai": ("grm_reward.backends.openai", "OpenAIBackend"),
    "vllm": ("grm_reward.backends.vllm", "VLLMBackend"),
}


def create_backend(config: GRMConfig) -> Backend:
    """The backend ``config.backend`` names, built from the config.

    A ``package.module:factory`` value imports ``factory`` and calls ``factory(config)``, which
    must return a :class:`Backend`.
    """
    name = config.backend
    if name in _REGISTRY:
        module_name, class_name = _REGISTRY[name]
        module = importlib.import_module(module_name)
        backend = getattr(module, class_name).from_config(config)
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load backend factory {name!r}: {exc}") from exc
        backend = factory(config)
    else:
        raise BackendUnavailableError(f"the {name!r} backend is not available in this version of grm-reward")
    if not isinstance(backend, Backend):
        raise ConfigError(f"backend factory {name!r} returned {type(backend).__name__}, not a Backend")
    return backend
