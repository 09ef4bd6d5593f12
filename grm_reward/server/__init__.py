"""The reward server behind ``grm-reward serve`` (FastAPI + uvicorn; ``pip install 'grm-reward[serve]'``).

Three layers, as vLLM's OpenAI server has them: :mod:`.protocol` (request/response models),
:mod:`.serving` (:class:`RewardService`: scores protocol requests through the micro-batcher; no
HTTP), :mod:`.app` (routes, body limits, auth, and the one exception-to-status mapping).
Importing this package imports FastAPI; ``import grm_reward`` does not.
"""

from grm_reward.server.app import build_app, create_app, error_response
from grm_reward.server.serving import Metrics, RewardService

__all__ = ["Metrics", "RewardService", "build_app", "create_app", "error_response"]
