"""TRL adapter: :class:`GRMReward`, a generative reward model as a ``GRPOTrainer`` reward function.

``GRPOTrainer(reward_funcs=[GRMReward(k=4), ...])``: ``__call__`` is a coroutine (TRL >= 1.14
awaits it); :meth:`GRMReward.as_sync` serves trainers that call reward functions synchronously.
Completions of one prompt are judged together, listwise; a completion no judge sample could read
gets its group's mean by default. Flags, formats, failures and pitfalls: docs/trl.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal, get_args

from grm_reward.adapters._common import (
    as_principles,
    as_reference,
    critique,
    defence_summary,
    fill_failed_with_group_mean,
    hacking_stats,
    mean_stats,
    sample_scores,
)
from grm_reward.adapters.probes import BUILTIN_PROBES, Probe, arun_probes
from grm_reward.batching import group_key, group_listwise, split_result
from grm_reward.config import GRMConfig
from grm_reward.deadlines import deadline_scope
from grm_reward.errors import ConfigError, InputError
from grm_reward.model import GenerativeRewardModel
from grm_reward.types import Message, Request, RewardResult, completion_text

__all__ = ["GRMReward", "SyncGRMReward", "completion_text"]

LogExtra = Callable[[str, list[Any]], None]
LogMetric = Callable[[str, float], None]
OnFailure = Literal["group_mean", "none"]

logger = logging.getLogger(__name__)


class GRMReward:
    """A generative reward model as a TRL reward function (picklable, async).

    ``rm`` is a ready :class:`~grm_reward.GenerativeRewardModel`, a :class:`~grm_reward.GRMConfig`,
    or the path of a YAML/JSON config file; keyword arguments not listed below are
    ``GRMConfig`` fields (``k=8``, ``model=...``, ``backend="openai"``, ``openai={...}``) and
    override the config. With neither, the embedded judge is used. Listwise grouping follows the
    config's ``batching`` section (TRL's defaults: ``group_by_prompt`` on, ``max_group_size`` 4;
    e.g. ``GRMReward(batching={"max_group_size": 8})``).

    Args:
        name: The name TRL logs the reward under (``rewards/<name>/mean``) and the prefix of
            the logged columns and metrics. Give two instances different names.
        reference_column: Dataset column holding a reference answer shown to the judge; rows
            where it is missing or empty get none.
        principles_column: Dataset column holding the principles (a rubric: a string or a list
            of strings) the judge must use instead of writing its own.
        include_reasoning: Show the judge a conversational completion's ``reasoning_content``
            (as a ``<think>`` block before the answer).
        on_failure: What a completion none of whose judge samples could be read gets.
            ``"group_mean"``: the mean reward of the judged completions of its group in this call
            (its advantage from this reward is then ~0, alone or beside other reward functions);
            the config's ``failure_reward`` (default None) when none of its group was judged.
            ``"none"``: the config's ``failure_reward`` always; TRL sums a
            ``None`` (NaN) as 0 beside other reward functions, the worst reward on the unit
            scale, and a warning is logged once the first time that matters.
        probe_every: Run the probes (a canary measuring the judge: known-bad answers carrying
            injections beside clean good ones) on the first call and every ``probe_every`` calls
            after, logging ``<name>/hacking/probe_injected_win_share``; None: never.
        probes: The probes to run (default :data:`~grm_reward.adapters.probes.BUILTIN_PROBES`;
            add your own :class:`~grm_reward.adapters.probes.Probe` items).
        deadline_s: Longest one call (a step's rewards) may take; judge calls are timed out and
            not retried past it (docs/trl.md). None: no deadline, each judge call is still bounded
            by the latency-derived timeout. The first call warms the judge up first, outside it.

    What it logs when TRL passes ``log_extra`` / ``log_metric`` (TRL >= 1.0, ``GRPOTrainer``
    and ``RLOOTrainer``): columns ``<name>_critique`` (the first readable sample's critique) and
    ``<name>_votes`` (each sample's score, None where unreadable) in the completions table, and
    metrics ``<name>/invalid_share``, ``<name>/forced_share``, ``<name>/failed_share`` and
    ``<name>/vote_spread`` (see :func:`grm_reward.adapters._common.result_stats`); the hacking
    monitor: column ``<name>_defences`` and metrics ``<name>/hacking/neutralised_share``,
    ``injection_share``, ``length_reward_corr`` and ``flagged_best_share``
    (:func:`grm_reward.adapters._common.hacking_stats`, docs/reward-hacking.md).
    """

    #: The stable name TRL uses for metric keys (``rewards/grm/mean``); ``name=`` overrides it.
    __name__ = "grm"

    def __init__(
        self,
        rm: GenerativeRewardModel | GRMConfig | str | os.PathLike[str] | None = None,
        /,
        *,
        name: str | None = None,
        reference_column: str | None = "reference",
        principles_column: str | None = "principles",
        include_reasoning: bool = False,
        on_failure: OnFailure = "group_mean",
        probe_every: int | None = None,
        probes: Sequence[Probe] = BUILTIN_PROBES,
        deadline_s: float | None = None,
        **config: Any,
    ) -> None:
        moved = sorted(key for key in ("group_by_prompt", "max_group_size") if key in config)
        if moved:
            raise ConfigError(
                f"{', '.join(moved)} moved to the config's batching section (one for every entry point): "
                f"GRMReward(batching={{{', '.join(repr(k) + ': ...' for k in moved)}}}); docs/trl.md"
            )
        # With a ready model, ``batching`` still applies to this reward function (the rest belongs to the model).
        batching = config.pop("batching", None) if isinstance(rm, GenerativeRewardModel) else None
        if isinstance(rm, GenerativeRewardModel):
            if config:
                raise ConfigError(
                    f"pass judge settings ({', '.join(sorted(config))}) to the GenerativeRewardModel, not beside it"
                )
            self.rm = rm
        elif isinstance(rm, GRMConfig):
            self.rm = GenerativeRewardModel(rm.updated(**config) if config else rm)
        elif rm is not None:
            self.rm = GenerativeRewardModel(GRMConfig.from_file(os.fspath(rm), **config))
        else:
            self.rm = GenerativeRewardModel(GRMConfig.build(**config))
        settings = self.rm.config if batching is None else self.rm.config.updated(batching=batching)
        self.batching = settings.batching_for("trl")
        if name is not None:
            if not name.isidentifier():
                raise ConfigError(f"name {name!r} must be an identifier (it prefixes metric and column names)")
            self.__name__ = name
        self.reference_column = reference_column
        self.principles_column = principles_column
        self.include_reasoning = include_reasoning
        if on_failure not in get_args(OnFailure):
            raise ConfigError(f"on_failure must be one of {', '.join(get_args(OnFailure))}, got {on_failure!r}")
        self.on_failure: OnFailure = on_failure
        if deadline_s is not None and not deadline_s > 0:
            raise ConfigError(f"deadline_s must be a positive number of seconds or None, got {deadline_s!r}")
        self.deadline_s = deadline_s
        self._warned_none = False
        if probe_every is not None and probe_every < 1:
            raise ConfigError(f"probe_every must be a positive number of calls, got {probe_every}")
        self.probe_every = probe_every
        self.probes = tuple(probes)
        self._calls = 0

    def __repr__(self) -> str:
        return f"GRMReward(name={self.__name__!r}, {self.rm!r}, group_by_prompt={self.batching.group_by_prompt})"

    async def __call__(
        self,
        *,
        prompts: Sequence[str | Sequence[Message]],
        completions: Sequence[str | Sequence[Message]],
        completion_ids: Sequence[Sequence[int]] | None = None,
        log_extra: LogExtra | None = None,
        log_metric: LogMetric | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """One reward per completion, in the order given (within ``deadline_s`` when set)."""
        requests = self.requests(prompts, completions, columns)
        await self.rm.awarmup()  # the first step: engine and this loop's clients, outside the deadline
        with deadline_scope(self.deadline_s):
            results = await self.ascore_requests(requests)
        self.log(results, log_extra, log_metric, groups=[group_key(r) for r in requests])
        self._calls += 1
        if self.probe_every is not None and log_metric is not None and (self._calls - 1) % self.probe_every == 0:
            report = await arun_probes(self.rm, self.probes)
            log_metric(f"{self.__name__}/hacking/probe_injected_win_share", report.injected_win_share)
        return self.rewards(requests, results)

    def as_sync(self) -> SyncGRMReward:
        """The same reward function with a blocking ``__call__``, for callers that do not await."""
        return SyncGRMReward(self)

    # --- the steps of a call --------------------------------------------------------------------
    def requests(
        self,
        prompts: Sequence[str | Sequence[Message]],
        completions: Sequence[str | Sequence[Message]],
        columns: Mapping[str, Any],
    ) -> list[Request]:
        """One single-response request per completion, with its row's reference and principles."""
        if len(prompts) != len(completions):
            raise InputError(f"{len(prompts)} prompts for {len(completions)} completions")
        references = _column(columns, self.reference_column, len(completions))
        principles = _column(columns, self.principles_column, len(completions))
        requests = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            try:
                requests.append(
                    Request(
                        prompt=prompt,
                        responses=[completion_text(completion, include_reasoning=self.include_reasoning)],
                        principles=as_principles(principles[i]),
                        reference=as_reference(references[i]),
                    )
                )
            except InputError as exc:
                raise InputError(f"completion {i}: {exc}") from exc
        return requests

    async def ascore_requests(self, requests: Sequence[Request]) -> list[RewardResult]:
        """Score single-response requests in one backend batch, same-prompt ones listwise."""
        if not requests:
            return []
        b = self.batching
        grouped = group_listwise(requests, group_by_prompt=bool(b.group_by_prompt), max_group_size=b.max_group_size or 1)
        scored = await self.rm.ascore_batch([request for request, _ in grouped])
        results: list[RewardResult | None] = [None] * len(requests)
        for (_, members), result in zip(grouped, scored, strict=True):
            for i, index in members:
                results[i] = result if index is None else split_result(result, index)
        return [r for r in results if r is not None]

    def rewards(self, requests: Sequence[Request], results: Sequence[RewardResult]) -> list[float | None]:
        """One reward per completion, failures handled as ``on_failure`` says."""
        rewards = [result.rewards[0] for result in results]
        failed = [result.all_invalid for result in results]
        if not any(failed):
            return rewards
        groups = [group_key(request) for request in requests]
        if self.on_failure == "group_mean":
            rewards = fill_failed_with_group_mean(rewards, failed, groups)
        if not self._warned_none:
            judged = {g for g, reward, bad in zip(groups, rewards, failed) if not bad and reward is not None}
            if any(reward is None and g in judged for g, reward in zip(groups, rewards)):
                self._warned_none = True
                logger.warning(
                    "%s: no judge sample could be read for a completion whose group-mates were judged; it gets None. "
                    "Beside other reward functions TRL (multi_objective_aggregation='sum_then_normalize', the "
                    "default) sums this NaN as 0, the worst reward on the unit scale, so the failure reads as a bad "
                    "answer. Use on_failure='group_mean' (the default) or multi_objective_aggregation="
                    "'normalize_then_sum' to keep it neutral; see docs/trl.md, 'When the judge fails'. "
                    "Logged once per reward function.",
                    self.__name__,
                )
        return rewards

    def log(
        self,
        results: Sequence[RewardResult],
        log_extra: LogExtra | None,
        log_metric: LogMetric | None,
        *,
        groups: Sequence[Hashable] | None = None,
    ) -> None:
        """Report critiques, votes and defences per completion; the batch's judge and hacking statistics.

        ``groups[i]`` is completion i's GRPO group (its prompt); by default each is its own.
        """
        name = self.__name__
        if log_extra is not None:
            log_extra(f"{name}_critique", [critique(r) for r in results])
            log_extra(f"{name}_votes", [sample_scores(r) for r in results])
            log_extra(f"{name}_defences", [defence_summary(r) for r in results])
        if log_metric is not None:
            for key, value in mean_stats(results).items():
                log_metric(f"{name}/{key}", value)
            if results:
                keys = groups if groups is not None else range(len(results))
                for key, value in hacking_stats(results, list(keys)).items():
                    log_metric(f"{name}/hacking/{key}", value)


class SyncGRMReward:
    """A blocking view of a :class:`GRMReward`, for trainers that call reward functions synchronously.

    It runs the async call on the reward model's own event loop (the one its sync API uses), so
    backend resources bound to a loop stay on one loop between calls.
    """

    def __init__(self, reward: GRMReward) -> None:
        self.reward = reward

    @property
    def __name__(self) -> str:
        return self.reward.__name__

    def __repr__(self) -> str:
        return f"{self.reward!r}.as_sync()"

    def __call__(self, **kwargs: Any) -> list[float | None]:
        return self.reward.rm.run_sync(self.reward(**kwargs))


def _column(columns: Mapping[str, Any], name: str | None, length: int) -> Sequence[Any]:
    if name is None or name not in columns or columns[name] is None:
        return [None] * length
    values = columns[name]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != length:
        raise InputError(f"column {name!r} must hold one value per completion ({length})")
    return values

