"""OpenRLHF (0.9.1 - 0.11.x): from its reward protocol to grm-reward requests and back.

A ``query`` (templated prompt + response) is split by :mod:`grm_reward.chat_templates`, its
``label`` becomes a reference and/or principles (:func:`label_fields`), and results take
OpenRLHF's shape (:func:`openrlhf_response`). Used by the server's ``/get_reward`` and the
file form (:class:`RewardFunction`); the protocol and its pitfalls are in docs/openrlhf.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from grm_reward.adapters._common import as_principles, defence_flags, result_stats
from grm_reward.adapters._common import as_reference as reference_text
from grm_reward.chat_templates import END_TOKENS, SplitQuery, parse_chat_prompt, split_query, strip_end_tokens
from grm_reward.config import GRMConfig
from grm_reward.errors import InputError
from grm_reward.types import Request, RewardResult
from grm_reward.voting import normalize

__all__ = [
    "END_TOKENS",
    "EXTRA_LOG_KEYS",
    "RewardFunction",
    "SplitQuery",
    "build_request",
    "label_fields",
    "openrlhf_response",
    "parse_chat_prompt",
    "split_query",
    "strip_end_tokens",
]

#: The ``extra_logs`` keys of every /get_reward answer (OpenRLHF needs the same keys each time);
#: the numbers of :func:`grm_reward.adapters._common.result_stats` and ``defence_flags`` (the hacking
#: monitor, docs/reward-hacking.md), named as verl's adapter names them.
EXTRA_LOG_KEYS = (
    "grm_invalid_share",
    "grm_forced_share",
    "grm_failed",
    "grm_vote_spread",
    "grm_vote",
    "grm_neutralised",
    "grm_injection",
    "grm_response_chars",
    "grm_samples_drawn",
)

def label_fields(label: Any, *, as_reference: bool = True) -> tuple[str | None, str | list[str] | None]:
    """(reference answer, principles) from an OpenRLHF label.

    A string (or number) label is the reference answer when ``as_reference``; a JSON object may
    carry ``reference`` and ``principles`` (a string or a list of strings). Anything else is ignored.
    """
    if isinstance(label, Mapping):
        reference = label.get("reference")
        if reference is not None and (isinstance(reference, bool) or not isinstance(reference, (str, int, float))):
            raise InputError(f"label 'reference' must be a string or a number, got {type(reference).__name__}")
        return reference_text(reference), as_principles(label.get("principles"))
    if as_reference and isinstance(label, (str, int, float)) and not isinstance(label, bool):
        return reference_text(label), None
    return None, None


def build_request(query: str, prompt: str | None, label: Any = None, *, label_as_reference: bool = True) -> Request:
    """The grm-reward request for one OpenRLHF sample."""
    split = split_query(query, prompt)
    if isinstance(split.prompt, str) and not split.prompt.strip():
        raise InputError("cannot tell the prompt from the response: send 'prompts' (OpenRLHF always does)")
    if not split.prompt:
        raise InputError("the prompt has no text, only chat-template markers: there is nothing to judge against")
    reference, principles = label_fields(label, as_reference=label_as_reference)
    return Request(prompt=split.prompt, responses=[split.response], principles=principles, reference=reference)


def openrlhf_response(
    results: Sequence[RewardResult], *, score_range: tuple[int, int], failure_reward: float
) -> dict[str, Any]:
    """``{"rewards", "scores", "extra_logs"}`` for single-response results, one number per query.

    ``rewards`` uses the configured normalisation; ``scores`` is always the [0, 1] value (for
    OpenRLHF's dynamic filtering). A result with no readable sample gets ``failure_reward`` (pass
    :attr:`GRMConfig.numeric_failure_reward`: OpenRLHF needs a number) and ``grm_failed = 1``.
    """
    rewards: list[float] = []
    scores: list[float] = []
    logs: dict[str, list[float]] = {key: [] for key in EXTRA_LOG_KEYS}
    for result in results:
        if len(result.rewards) != 1:
            raise ValueError("openrlhf_response takes single-response results")
        reward = result.rewards[0]
        failed = result.all_invalid
        fallback = float(failure_reward if reward is None else reward)
        rewards.append(fallback)
        scores.append(fallback if failed else normalize(result.votes[0], result.num_voted, score_range, "unit"))
        stats = result_stats(result) | defence_flags(result)
        for key in EXTRA_LOG_KEYS:
            logs[key].append(stats[key.removeprefix("grm_")])
    return {"rewards": rewards, "scores": scores, "extra_logs": logs}


class RewardFunction:
    """OpenRLHF's file form, in-process: ``reward_func(queries, prompts, labels, **kwargs)``.

    OpenRLHF calls it from many threads at once (``asyncio.to_thread``), one query per call; the
    calls meet in one :class:`~grm_reward.batching.MicroBatcher` on a private event loop, so the
    judge sees batches. With ``url`` it forwards to a running ``grm-reward serve`` instead,
    through the one HTTP layer (:mod:`grm_reward._http`) with the ``openai`` section's retry
    policy, breaker and budget, errors mapped onto :mod:`grm_reward.errors`.
    """

    def __init__(self, config: GRMConfig | None = None, *, url: str | None = None, rm: Any = None) -> None:
        self.url = url
        self.config = config if config is not None else (rm.config if rm is not None else GRMConfig())
        self._rm = rm
        self._lock = threading.Lock()
        self._batcher: Any = None
        self._loop: Any = None
        self._http: Any = None

    @classmethod
    def from_env(cls) -> RewardFunction:
        """``$GRM_REWARD_URL`` (a running server's /get_reward) or ``$GRM_REWARD_CONFIG`` (a YAML/JSON file)."""
        url = os.environ.get("GRM_REWARD_URL")
        if url:
            return cls(url=url)
        path = os.environ.get("GRM_REWARD_CONFIG")
        return cls(GRMConfig.from_file(path) if path else GRMConfig())

    def __call__(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
        if not (len(queries) == len(prompts) == len(labels)):
            raise InputError(f"queries, prompts and labels differ in length ({len(queries)}, {len(prompts)}, {len(labels)})")
        if self.url:
            return self._post(list(queries), list(prompts), list(labels))
        server = self.config.server
        requests = [
            build_request(q, p, label, label_as_reference=server.label_as_reference)
            for q, p, label in zip(queries, prompts, labels)
        ]
        loop, batcher = self._started()
        results = loop.run(batcher.submit_many(requests))
        return openrlhf_response(results, score_range=self.config.score_range, failure_reward=self.config.numeric_failure_reward)

    def close(self) -> None:
        with self._lock:
            loop, batcher, rm, http = self._loop, self._batcher, self._rm, self._http
            self._loop = self._batcher = self._http = None
        if loop is not None:
            if batcher is not None:
                loop.run(batcher.aclose())
                if rm is not None:
                    loop.run(rm.aclose())
            if http is not None:
                loop.run(http.aclose())
            loop.close()

    def _started(self) -> tuple[Any, Any]:
        with self._lock:
            if self._batcher is None:
                from grm_reward._sync import LoopThread
                from grm_reward.batching import MicroBatcher
                from grm_reward.model import GenerativeRewardModel

                if self._rm is None:
                    self._rm = GenerativeRewardModel(self.config)
                self._loop = LoopThread(name="grm-reward-openrlhf")
                self._batcher = MicroBatcher.from_options(self._rm, self.config.batching_for("server"))
            return self._loop, self._batcher

    def _post(self, queries: list[str], prompts: list[str], labels: list[Any]) -> dict[str, Any]:
        """Forward to the reward server: retried and mapped by the HTTP layer, answer checked."""
        loop, http = self._forwarder()
        count = len(queries)

        def malformed(body: dict[str, Any]) -> str | None:
            rewards = body.get("rewards")
            if not isinstance(rewards, list) or len(rewards) != count:
                return f"expected {count} rewards, got {str(rewards)[:80]}"
            return None

        payload = {"query": queries, "prompts": prompts, "labels": labels}
        data: dict[str, Any] = loop.run(http.post_json("", payload, validate=malformed))
        return data

    def _forwarder(self) -> tuple[Any, Any]:
        with self._lock:
            if self._http is None:
                from grm_reward._http import HTTPEndpoint, HTTPPolicy
                from grm_reward._sync import LoopThread

                token = os.environ.get("GRM_REWARD_SERVER_API_KEY")
                # The server answers within request_timeout_s (504 beyond): wait a little longer than that.
                timeout = self.config.server.request_timeout_s + 10.0
                self._http = HTTPEndpoint(
                    str(self.url),
                    HTTPPolicy.from_options(self.config.openai, timeout_s=timeout),
                    headers={"Authorization": f"Bearer {token}"} if token else {},
                    label="reward server",
                    auth_hint="; set $GRM_REWARD_SERVER_API_KEY to the server's api_key",
                )
                self._loop = self._loop or LoopThread(name="grm-reward-openrlhf")
            return self._loop, self._http
