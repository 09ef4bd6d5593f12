"""The serving layer: protocol objects in, protocol objects out. It sees only the scorer.

The scorer is a :class:`~grm_reward.batching.MicroBatcher` around a
:class:`~grm_reward.GenerativeRewardModel`: every request is submitted on its own and
concurrent ones meet in the batcher's window. Per-request CPU work (limits, query splitting) runs
in a worker thread, off the event loop. Nothing here knows about HTTP; the routes in
:mod:`grm_reward.server.app` decode bodies, call :class:`RewardService` and map exceptions.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from grm_reward._sync import run_cpu
from grm_reward._tasks import gather_cancelling
from grm_reward.adapters.openrlhf import build_request, openrlhf_response
from grm_reward.batching import MicroBatcher
from grm_reward.config import GRMConfig
from grm_reward.embedded import EMBEDDED_MODEL_LABEL
from grm_reward.errors import (
    BackendCapabilityError,
    BackendError,
    BackendProtocolError,
    BackendUnavailableError,
    GenerationError,
    GRMError,
    InputError,
    JudgeUnavailableError,
)
from grm_reward.prompts import format_conversation, format_principles
from grm_reward.server.protocol import (
    ErrorDetail,
    GetRewardRequest,
    GetRewardResponse,
    ItemError,
    RewardOut,
    RewardsRequest,
    RewardsResponse,
)
from grm_reward.types import Request, RewardResult

__all__ = ["Metrics", "RewardService", "Scorer", "public_error_message"]

logger = logging.getLogger("grm_reward.server")

#: What a client is told when the judge fails; the details (with the judge's URL) go to the log.
_JUDGE_FAILURES: tuple[tuple[type[BackendError], str], ...] = (
    (JudgeUnavailableError, "the judge server keeps failing: calls fail fast until it recovers"),
    (BackendProtocolError, "the judge's answer broke the backend contract"),
    (BackendUnavailableError, "the judge backend is unavailable"),
    (BackendCapabilityError, "the judge backend cannot do what the configuration asks"),
    (GenerationError, "the judge server failed to generate an answer"),
    (BackendError, "the judge failed"),
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
#: /health starts a new readiness probe in the background when the last one is older than this.
_READY_STALE_S = 10.0


def public_error_message(exc: BaseException) -> str:
    """The message a client may see for ``exc``: a judge failure is named by its kind, never by its URL.

    >>> public_error_message(GenerationError("POST http://10.0.0.7:8000/v1/completions: 500"))
    'the judge server failed to generate an answer (details in the server log)'
    """
    if isinstance(exc, BackendError):
        kind = next(text for cls, text in _JUDGE_FAILURES if isinstance(exc, cls))
        return f"{kind} (details in the server log)"
    return redact_urls(str(exc))


def redact_urls(text: str) -> str:
    """``text`` with every URL replaced by ``<url>``.

    >>> redact_urls("probe of https://judge.internal:8000/v1/models timed out")
    'probe of <url> timed out'
    """
    return _URL.sub("<url>", text)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0)


class Scorer(Protocol):
    """What :class:`RewardService` scores through: a :class:`MicroBatcher`, or the Ray fleet's scorer."""

    @property
    def stats(self) -> Any: ...

    async def submit(self, request: Request) -> RewardResult: ...

    async def probe(self) -> str | None: ...

    async def aclose(self, *, drain: bool = True) -> None: ...


class RewardService:
    """Scores protocol requests through the scorer and keeps the serving metrics."""

    def __init__(self, scorer: Scorer, config: GRMConfig) -> None:
        self.scorer = scorer
        self.config = config
        self.metrics = Metrics()
        self.closing = False
        self._probe: asyncio.Future[str | None] | None = None
        self._last_probe: tuple[str | None, float] | None = None  # (reason, time.monotonic()) of the last probe

    def openrlhf_body(self, data: Any) -> GetRewardRequest:
        """A decoded /get_reward body, validated; ``max_queries`` first (see :meth:`native_body`)."""
        if isinstance(data, dict) and isinstance(data.get("query"), list):
            self._check_count(len(data["query"]), "queries")
        return GetRewardRequest.model_validate(data)

    def native_body(self, data: Any) -> RewardsRequest:
        """A decoded /v1/rewards body (or a bare list of items), validated. ``max_queries`` and
        ``max_messages`` are checked first: validation's CPU grows with the counts however small each
        item is (200,000 tiny items took 6 s before the count refused them). Shapes that are wrong
        otherwise are left to the validation, which says what is wrong."""
        items = data.get("requests") if isinstance(data, dict) else data
        if isinstance(items, list):
            self._check_count(len(items), "requests")
            limit = self.config.server.max_messages
            for i, item in enumerate(items):
                prompt = item.get("prompt") if isinstance(item, dict) else None
                if isinstance(prompt, list) and len(prompt) > limit:
                    raise InputError(
                        f"the prompt has {len(prompt)} messages, over the server's max_messages={limit}", index=i
                    )
        return RewardsRequest.model_validate({"requests": data} if isinstance(data, list) else data)

    async def get_reward(self, body: GetRewardRequest) -> GetRewardResponse:
        """OpenRLHF's /get_reward: one reward per query; an empty batch gets empty lists."""
        requests = await run_cpu(self._openrlhf_requests, body)  # splitting: CPU, off the loop
        results = await self._score(requests)
        answer = openrlhf_response(
            results, score_range=self.config.score_range, failure_reward=self.config.numeric_failure_reward
        )
        return GetRewardResponse(**answer)

    async def rewards(self, body: RewardsRequest) -> RewardsResponse:
        """The native API: per request, rewards and judgements, or the error that request met."""
        requests = await run_cpu(self._native_requests, body)
        outcomes = await self._score(requests, per_item=True)
        results: list[RewardOut | ItemError] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                message = public_error_message(outcome) if isinstance(outcome, GRMError) else "internal error (see the server log)"
                results.append(ItemError(error=ErrorDetail(type=type(outcome).__name__, message=message)))
                continue
            data = outcome.to_dict()
            if not body.include_samples:
                data.pop("samples")
            results.append(RewardOut.model_validate(data))
        return RewardsResponse(results=results)

    async def readiness(self) -> str | None:
        """Probe the judge now: None when it can answer, else why not (bounded by ``ready_timeout_s``).

        Concurrent callers share one probe; the answer is kept for :meth:`health`.
        """
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._run_probe())
        return await asyncio.shield(self._probe)

    def health(self) -> dict[str, Any]:
        """Liveness (cheap: never waits for the judge) and the last readiness probe's answer.

        A probe older than a few seconds is refreshed in the background for the next call.
        """
        config = self.config
        ready: bool | None = None
        reason: str | None = "not probed yet"
        checked: float | None = None
        if self._last_probe is not None:
            reason, at = self._last_probe
            ready, checked = reason is None, round(time.monotonic() - at, 3)
        stale = checked is None or checked > _READY_STALE_S
        if stale and not self.closing and (self._probe is None or self._probe.done()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the server's loop: report what is known
                loop = None
            if loop is not None:
                self._probe = loop.create_task(self._run_probe())
        return {
            "status": "ok",
            "ready": ready,
            "ready_reason": reason,
            "ready_checked_s_ago": checked,
            "backend": config.backend,
            "model": config.model or EMBEDDED_MODEL_LABEL,
            "k": config.k,
            "format_guarantee": config.format_guarantee,
            "token_prob": config.token_prob,
        }

    def metrics_text(self) -> str:
        return self.metrics.render(self.scorer.stats)

    async def aclose(self) -> None:
        """Shut down: queued requests fail at once, batches in flight are cancelled, the backend is closed."""
        self.closing = True
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self.scorer.aclose(drain=False)
        if isinstance(self.scorer, MicroBatcher):
            await self.scorer.rm.aclose()

    # --- internals ------------------------------------------------------------------------------
    def _check_count(self, n: int, what: str) -> None:
        limit = self.config.server.max_queries
        if n > limit:
            raise InputError(f"{n} {what} in one body exceed the server's max_queries={limit}; split the batch")

    def _openrlhf_requests(self, body: GetRewardRequest) -> list[Request]:
        """Limits, then the split queries (runs in a worker thread)."""
        options = self.config.server
        n = len(body.query)
        prompts: Sequence[str | None] = body.prompts if body.prompts is not None else [None] * n
        labels: Sequence[Any] = body.labels if body.labels is not None else [None] * n
        requests = []
        for i, (query, prompt, label) in enumerate(zip(body.query, prompts, labels)):
            try:
                if prompt is not None:
                    self._check_size(len(prompt), options.max_prompt_chars, "the prompt", "max_prompt_chars")
                self._check_size(len(query), options.max_prompt_chars + options.max_response_chars, "the query",
                                 "max_prompt_chars + max_response_chars")
                if isinstance(label, str):
                    self._check_size(len(label), options.max_prompt_chars, "the label", "max_prompt_chars")
                request = build_request(query, prompt, label, label_as_reference=options.label_as_reference)
                self._check_size(len(request.responses[0]), options.max_response_chars, "the response",
                                 "max_response_chars")
            except InputError as exc:
                raise InputError(f"query {i}: {exc}") from exc
            requests.append(request)
        return requests

    def _native_requests(self, body: RewardsRequest) -> list[Request]:
        """Limits, then the requests (runs in a worker thread)."""
        options = self.config.server
        requests = []
        for i, item in enumerate(body.requests):
            if len(item.responses) > self.config.max_responses:
                raise InputError(
                    f"{len(item.responses)} responses exceed the server's max_responses={self.config.max_responses}",
                    index=i,
                )
            try:
                request = Request(**item.to_request_dict())
                # what the judge reads, role labels and numbering included: 100,000 one-character messages
                # were counted as 100,000 characters and shown to the judge as 900,000
                size = len(format_conversation(request.prompt))
                self._check_size(size, options.max_prompt_chars, "the prompt", "max_prompt_chars")
                for j, response in enumerate(request.responses):
                    self._check_size(len(response), options.max_response_chars, f"response {j}", "max_response_chars")
                self._check_size(len(request.reference or ""), options.max_prompt_chars, "the reference",
                                 "max_prompt_chars")
                size = len(format_principles(request.principles)) if request.principles is not None else 0
                self._check_size(size, options.max_prompt_chars, "the principles", "max_prompt_chars")
            except InputError as exc:
                raise InputError(str(exc), index=i) from exc
            requests.append(request)
        return requests

    @staticmethod
    def _check_size(size: int, limit: int, what: str, name: str) -> None:
        if size > limit:
            raise InputError(f"{what} has {size} characters, over the server's {name}={limit}")

    async def _run_probe(self) -> str | None:
        timeout = self.config.server.ready_timeout_s
        try:
            reason = await asyncio.wait_for(self.scorer.probe(), timeout=timeout)
        except asyncio.TimeoutError:
            reason = f"the judge did not answer the readiness probe within ready_timeout_s={timeout:g}"
        except Exception as exc:  # a probe that fails is an answer: not ready
            logger.warning("readiness probe failed: %s: %s", type(exc).__name__, exc)
            reason = f"the readiness probe failed: {public_error_message(exc)}"
        if reason is not None:
            reason = redact_urls(reason)
        self._last_probe = (reason, time.monotonic())
        return reason

    async def _score(self, requests: list[Request], *, per_item: bool = False) -> list[Any]:
        if per_item:
            outcomes = await asyncio.gather(*(self.scorer.submit(r) for r in requests), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                    raise outcome  # cancelled: the caller has gone
                if isinstance(outcome, Exception) and not isinstance(outcome, GRMError):
                    logger.error("request failed: %s: %s", type(outcome).__name__, outcome, exc_info=outcome)
        else:
            outcomes = await gather_cancelling(self.scorer.submit(r) for r in requests)
        for outcome in outcomes:
            if isinstance(outcome, RewardResult):
                self.metrics.record_result(outcome)
            else:
                self.metrics.item_errors += 1
        return outcomes


class Metrics:
    """Counters and latency histograms, rendered in Prometheus' text format (no client library)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(_LATENCY_BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.judged = 0
        self.failed_judgements = 0
        self.samples = 0
        self.invalid_samples = 0
        self.forced_samples = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.item_errors = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency_buckets[route][bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum[route] += seconds

    def record_result(self, result: RewardResult) -> None:
        with self._lock:
            self.judged += len(result.rewards)
            self.failed_judgements += len(result.rewards) if result.all_invalid else 0
            self.samples += len(result.samples)
            self.invalid_samples += len(result.samples) - result.num_valid
            self.forced_samples += result.num_forced
            self.prompt_tokens += result.usage.prompt_tokens
            self.completion_tokens += result.usage.completion_tokens

    def render(self, batcher: Any) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {_number(value)}")

        with self._lock:
            metric("grm_requests_total", "counter", "HTTP requests answered, by route and status.",
                   [(f'{{route="{r}",status="{s}"}}', v) for (r, s), v in sorted(self.requests.items())])
            lines.append("# HELP grm_request_duration_seconds Time to answer an HTTP request, queueing included.")
            lines.append("# TYPE grm_request_duration_seconds histogram")
            for route, buckets in sorted(self.latency_buckets.items()):
                cumulative = 0
                for bound, count in zip([*_LATENCY_BUCKETS, float("inf")], buckets):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else _number(bound)
                    lines.append(f'grm_request_duration_seconds_bucket{{route="{route}",le="{le}"}} {cumulative}')
                lines.append(f'grm_request_duration_seconds_sum{{route="{route}"}} {_number(self.latency_sum[route])}')
                lines.append(f'grm_request_duration_seconds_count{{route="{route}"}} {cumulative}')
            metric("grm_responses_judged_total", "counter", "Responses that got a reward.", [("", self.judged)])
            metric("grm_judgements_failed_total", "counter",
                   "Responses whose judge samples were all unreadable (they got the failure reward).",
                   [("", self.failed_judgements)])
            metric("grm_request_errors_total", "counter", "Requests of a batch that failed (backend errors).",
                   [("", self.item_errors)])
            metric("grm_samples_total", "counter", "Judge samples read.", [("", self.samples)])
            metric("grm_samples_invalid_total", "counter", "Judge samples without readable scores.",
                   [("", self.invalid_samples)])
            metric("grm_samples_forced_total", "counter", "Samples whose scores the format guarantee filled in.",
                   [("", self.forced_samples)])
            share = self.invalid_samples / self.samples if self.samples else 0.0
            metric("grm_samples_invalid_share", "gauge", "Share of judge samples without readable scores, so far.",
                   [("", share)])
            metric("grm_backend_tokens_total", "counter", "Judge tokens, by kind.",
                   [('{kind="prompt"}', self.prompt_tokens), ('{kind="completion"}', self.completion_tokens)])
        metric("grm_queue_depth", "gauge", "Requests waiting for the backend (window and batch slots).",
               [("", batcher.queue_depth)])
        metric("grm_batches_in_flight", "gauge", "Backend batches running.", [("", batcher.in_flight)])
        metric("grm_batches_total", "counter", "Backend batches sent.", [("", batcher.batches)])
        metric("grm_batched_requests_total", "counter", "Backend requests sent (after listwise grouping).",
               [("", batcher.batched_requests)])
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
