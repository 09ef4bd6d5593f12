"""verl adapter: the reward manager ``grm`` for verl's reward loop (verl >= 0.9).

A ``verl.plugins`` entry point registers it in every verl process (``reward.reward_manager.name=grm``);
settings live in ``reward.grm`` (:class:`GRMVerlSettings`, judge fields under ``reward.grm.judge``).
It scores through verl's own judge router when verl hosts the judge, else the configured backend,
with one :class:`~grm_reward.batching.MicroBatcher` per reward worker. Config and pitfalls: docs/verl.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.experimental.reward_loop.reward_manager.registry import register

from grm_reward.adapters._common import as_principles, as_reference, critique, defence_flags, result_stats
from grm_reward.batching import MicroBatcher
from grm_reward.config import GRMConfig
from grm_reward.deadlines import deadline_scope
from grm_reward.errors import ConfigError, InputError
from grm_reward.model import GenerativeRewardModel
from grm_reward.types import Message, Request, RewardResult

__all__ = ["EXTRA_INFO_KEYS", "GRMRewardManager", "GRMVerlSettings", "compute_score", "judge_config"]

logger = logging.getLogger(__name__)

#: The keys of ``reward_extra_info``, identical for every rollout (verl takes them from the first).
EXTRA_INFO_KEYS = (
    "grm_invalid_share",
    "grm_forced_share",
    "grm_failed",
    "grm_vote_spread",
    "grm_vote",
    "grm_critique",
    "grm_neutralised",
    "grm_injection",
    "grm_response_chars",
    "grm_samples_drawn",
)


#: ``reward.grm`` keys that moved into the judge's config (``reward.grm.judge``): old key -> new one.
MOVED_KEYS = {
    "group_by_prompt": "batching.group_by_prompt",
    "max_group_size": "batching.max_group_size",
    "max_wait_s": "batching.window_s",
    "max_batch_requests": "batching.max_batch_requests",
    "max_concurrent_batches": "batching.max_concurrent_batches",
    "failure_score": "failure_reward",
}


class GRMVerlSettings(BaseModel):
    """The ``reward.grm`` block of verl's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_file: str | None = Field(None, description="A GRMConfig YAML/JSON file; `judge` overrides its values.")
    judge: dict[str, Any] = Field(
        default_factory=dict,
        description="GRMConfig fields (k, model, backend, openai: {base_url, ...}, ...); null means 'not set'.",
    )
    reference_key: str | None = Field(
        "reference", description="extra_info key holding a reference answer (wins over the ground truth)."
    )
    principles_key: str | None = Field(
        "principles", description="extra_info key holding principles (a rubric: string or list of strings)."
    )
    ground_truth_as_reference: bool = Field(
        True, description="Show reward_model.ground_truth to the judge as the reference answer."
    )
    deadline_s: float | None = Field(
        None,
        gt=0,
        description=(
            "Longest a rollout's reward may take (queueing included); judge calls are timed out and not retried "
            "past it. None: no deadline (each call is still bounded by the judge's latency-derived timeout)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            for key in values:
                if key in MOVED_KEYS:
                    raise ValueError(
                        f"reward.grm.{key} is now reward.grm.judge.{MOVED_KEYS[key]} (one setting for every entry "
                        "point; docs/verl.md)"
                    )
        return values

    @classmethod
    def from_verl(cls, config: Any) -> GRMVerlSettings:
        """Read ``config.reward.grm`` (absent: defaults) from verl's OmegaConf config."""
        from omegaconf import OmegaConf

        section = config.reward.get("grm") if "reward" in config else None
        values = {} if section is None else OmegaConf.to_container(section, resolve=True)
        if not isinstance(values, dict):
            raise ConfigError(f"reward.grm must be a mapping, got {type(values).__name__}")
        try:
            return cls(**{str(key): value for key, value in values.items()})
        except ValidationError as exc:
            raise ConfigError(f"invalid reward.grm settings: {exc}") from exc


def judge_config(
    settings: GRMVerlSettings, *, reward_router_address: str | None = None, reward_model_path: str | None = None
) -> GRMConfig:
    """The judge's :class:`GRMConfig`: the file, then ``judge``, then verl's router if it gave one.

    >>> judge_config(GRMVerlSettings(judge={"k": 4}), reward_router_address="10.0.0.1:3000",
    ...              reward_model_path="/models/judge").openai.base_url
    'http://10.0.0.1:3000/v1'
    """
    judge = _drop_unset(settings.judge)
    if settings.config_file:
        config = GRMConfig.from_file(settings.config_file).updated(**judge)
    else:
        config = GRMConfig.build(**judge)
    if reward_router_address is None:
        return config
    if config.backend != "openai" and "backend" in judge:
        logger.warning("verl hosts the judge: backend=%r is replaced by its router", config.backend)
    changes: dict[str, Any] = {"backend": "openai", "openai": {"base_url": f"http://{reward_router_address}/v1"}}
    if reward_model_path:
        changes["model"] = reward_model_path  # verl's servers serve the model under its path
    return config.updated(**changes)


@register("grm")
class GRMRewardManager(RewardManagerBase):
    """Scores each rollout with the generative reward model (one instance per reward worker).

    ``run_single`` returns ``{"reward_score": float, "reward_extra_info": {...}}`` with the keys
    in :data:`EXTRA_INFO_KEYS`, failures included. The judge sees the chat prompt
    (``raw_prompt``, else the decoded prompt tokens), the decoded response, the reference answer
    (``extra_info[reference_key]``, else ``reward_model.ground_truth``) and the principles
    (``extra_info[principles_key]``). ``compute_score`` (verl's rule-based function) is not used.
    Backend errors propagate, as verl's own reward-model calls do after their retries.
    """

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        **kwargs: Any,
    ) -> None:
        # Settings first: a bad one fails before verl's base class opens an event loop.
        reward_model = config.reward.reward_model
        if reward_model.enable and not config.reward.custom_reward_function.get("path"):
            raise ConfigError(
                "reward.reward_model.enable=True needs reward.custom_reward_function.path set, or verl never calls "
                "the grm manager (it posts to /classify instead): add "
                "reward.custom_reward_function.path=pkg://grm_reward.adapters.verl"
            )
        self.settings = GRMVerlSettings.from_verl(config)
        self.judge_config = judge_config(
            self.settings,
            reward_router_address=reward_router_address,
            reward_model_path=reward_model.model_path if reward_router_address else None,
        )
        self.batching = self.judge_config.batching_for("verl")
        rollout_n = _rollout_n(config)
        if self.batching.group_size is None and rollout_n is not None and rollout_n > 1:
            self.batching = self.batching.model_copy(update={"group_size": rollout_n})  # a GRPO group: judge it whole
        super().__init__(config, tokenizer, compute_score)
        self.rm = GenerativeRewardModel(self.judge_config)
        self._batcher: tuple[asyncio.AbstractEventLoop, MicroBatcher] | None = None

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        request = self.request(data)
        await self.rm.awarmup()  # the first call on this loop: engine and clients, outside the deadline
        with deadline_scope(self.settings.deadline_s):
            result = await self.batcher().submit(request)
        return self.output(result)

    def batcher(self) -> MicroBatcher:
        """The micro-batcher every ``run_single`` on the running event loop shares."""
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher[0] is not loop:
            self._batcher = (loop, MicroBatcher.from_options(self.rm, self.batching))
        return self._batcher[1]

    # --- DataProto -> Request -> verl's answer -----------------------------------------------------
    def request(self, data: DataProto) -> Request:
        """The judge request for a one-trajectory ``DataProto`` (its last sequence, as verl's managers do)."""
        if len(data) == 0:  # was an IndexError from deep inside DataProto
            raise InputError("the grm reward manager scores one trajectory per call: got an empty DataProto")
        item = data[-1:][0]
        tensors, fields = item.batch, item.non_tensor_batch
        prompt_ids, response_ids = tensors["prompts"], tensors["responses"]
        mask = tensors["attention_mask"]
        prompt_length = int(mask[: prompt_ids.shape[-1]].sum())
        response_length = int(mask[-response_ids.shape[-1] :].sum())
        response = self._decode(response_ids[:response_length])
        prompt = _messages(fields.get("raw_prompt")) or self._decode(prompt_ids[prompt_ids.shape[-1] - prompt_length :])

        extra_info = fields.get("extra_info")
        extra_info = extra_info if isinstance(extra_info, Mapping) else {}
        s = self.settings
        reference = as_reference(extra_info.get(s.reference_key)) if s.reference_key else None
        reward_model = fields.get("reward_model")
        if reference is None and s.ground_truth_as_reference and isinstance(reward_model, Mapping):
            reference = as_reference(reward_model.get("ground_truth"))
        principles = as_principles(extra_info.get(s.principles_key)) if s.principles_key else None
        return Request(prompt=prompt, responses=[response], principles=principles, reference=reference)

    def output(self, result: RewardResult) -> dict[str, Any]:
        """verl's answer for one rollout: the score and the same extra-info keys every time."""
        reward = result.rewards[0]
        stats = result_stats(result) | defence_flags(result)
        info: dict[str, float | str] = {f"grm_{key}": value for key, value in stats.items()}
        info["grm_critique"] = critique(result)
        return {
            "reward_score": self.judge_config.numeric_failure_reward if reward is None else float(reward),
            "reward_extra_info": {key: info[key] for key in EXTRA_INFO_KEYS},
        }

    def _decode(self, ids: Any) -> str:
        tokenizer: Any = self.tokenizer  # verl annotates it as AutoTokenizer; it is a tokenizer instance
        return str(tokenizer.decode(ids.tolist(), skip_special_tokens=True))


def compute_score(*args: Any, **kwargs: Any) -> float:
    """The hook verl needs to route its reward loop to ``grm`` when it hosts the judge; not a scorer.

    With ``reward.reward_model.enable=True``, verl calls a manager's ``run_single`` only if
    ``reward.custom_reward_function.path`` names a function; ``pkg://grm_reward.adapters.verl``
    names this one. :class:`GRMRewardManager` never calls it; any other manager that does gets
    this error rather than a made-up score.
    """
    raise ConfigError(
        "grm_reward.adapters.verl.compute_score only routes verl's reward loop to the grm reward manager; "
        "set reward.reward_manager.name=grm"
    )


def _rollout_n(config: Any) -> int | None:
    """verl's GRPO group size (``actor_rollout_ref.rollout.n``), None when the config has none."""
    try:
        n = config.actor_rollout_ref.rollout.n
    except (AttributeError, KeyError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _drop_unset(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings without the nulls the overlay uses for 'not set' (nested sections included)."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            value = _drop_unset(value)
            if not value:
                continue
        if value is not None:
            kept[key] = value
    return kept


def _messages(raw_prompt: Any) -> list[Message] | None:
    """verl's ``raw_prompt`` (chat messages, possibly a numpy object array) as a list, if usable."""
    if raw_prompt is None or isinstance(raw_prompt, (str, bytes)):
        return None
    try:
        messages = list(raw_prompt)
    except TypeError:
        return None
    if messages and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages):
        return [dict(m) for m in messages]
    return None

