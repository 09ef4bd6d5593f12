"""`GenerativeRewardModel`: request -> prompts -> backend -> parse -> vote -> `RewardResult`.

The one core path every layer (CLI, TRL adapter, reward server, verl manager, eval harness)
calls. Per request it

1. derives a stable fingerprint and, for each of the k samples, the order the responses are
   shown in and a seed (:func:`sample_seeds`: the one seed rule of every backend and transport);
2. renders one judge prompt per distinct order and asks the backend for that prompt's samples
   in one request (so the samples sharing an order share its prefill);
3. parses each sample in its shown order and maps its scores back to the original order;
4. optionally fills scores under a constraint (format guarantee) or reads token-probability
   scores, for the samples that need it;
5. optionally rates each readable sample with a meta RM, keeping the top ``k_meta`` for the vote;
6. votes, breaks ties, normalises.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from grm_reward._sync import LoopThread
from grm_reward.backends import create_backend
from grm_reward.backends.base import (
    FORCED_SCORES_PREFIX,
    Backend,
    GenerationOutput,
    GenerationRequest,
    ScoreFillRequest,
)
from grm_reward.config import GRMConfig
from grm_reward.errors import AllSamplesInvalidError, BackendCapabilityError, GRMError, InputError
from grm_reward.meta_rm import MetaRewardModel, create_meta_rm, meta_conversation
from grm_reward.parsing import parse_judgement, score_section_start
from grm_reward.prompts import JudgeTemplate, render_judge_prompt, select_template
from grm_reward.prompts.defences import defend_request
from grm_reward.types import (
    DefenceRecord,
    Judgement,
    Message,
    Principle,
    Request,
    RequestLike,
    RewardResult,
    Usage,
)
from grm_reward.voting import normalise, unpermute, vote

__all__ = ["GenerativeRewardModel", "sample_seeds"]

T = TypeVar("T")


@dataclass
class _Plan:
    """How one request is sampled: its k seeds and orders, grouped by order into prompts."""

    request: Request
    template: JudgeTemplate
    fingerprint: str
    seeds: list[int]
    orders: list[list[int]]
    # one entry per distinct order: (order, sample indices, chat messages)
    groups: list[tuple[list[int], list[int], tuple[Message, ...]]] = field(default_factory=list)
    defences: list[DefenceRecord] = field(default_factory=list)


class GenerativeRewardModel:
    """A generative reward model: a judge LLM sampled k times, its scores summed.

    >>> from grm_reward.backends import ScriptedBackend
    >>> rm = GenerativeRewardModel(backend=ScriptedBackend(["Analysis: ok.\\nScores: \\\\boxed{6, 9}"]))
    >>> result = rm.score("What is 2+2?", ["5", "4"], )
    >>> sorted(result.votes)   # which response got 9 depends on the seeded shuffle
    [6.0, 9.0]

    Build it from a :class:`GRMConfig`, from keyword arguments (``GenerativeRewardModel(k=8)``),
    or both (keywords override the config). ``backend`` is a backend name (a setting, like
    ``backend="openai"``) or a ready :class:`Backend` instance to inject; otherwise the engine
    ``config.backend`` names is built on first use. ``meta_rm`` injects a ready meta RM likewise.
    """

    def __init__(
        self,
        config: GRMConfig | None = None,
        *,
        backend: Backend | str | None = None,
        meta_rm: MetaRewardModel | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(backend, str):  # a backend *name* is a setting, like the other keywords
            overrides["backend"], backend = backend, None
        if config is None:
            config = GRMConfig.build(**overrides)
        elif overrides:
            config = config.updated(**overrides)
        self.config = config
        self._backend = backend
        self._meta_rm = meta_rm
        self._loop = LoopThread()
        self._warmups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[str | None]] = (
            weakref.WeakKeyDictionary()
        )
        if backend is not None:
            self._check_capabilities(backend)

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The generation engine (built from the config on first use)."""
        if self._backend is None:
            backend = create_backend(self.config)
            self._check_capabilities(backend)
            self._backend = backend
        return self._backend

    @property
    def meta_rm(self) -> MetaRewardModel | None:
        """The meta reward model rating samples, if one is configured (built on first use)."""
        if self._meta_rm is None and self.config.meta_rm is not None:
            self._meta_rm = create_meta_rm(self.config)
        return self._meta_rm

    def _check_capabilities(self, backend: Backend) -> None:
        needed = []
        if self.config.format_guarantee:
            needed.append(("score_fill", "format_guarantee"))
        if self.config.token_prob:
            needed.append(("token_prob", "token_prob"))
        for capability, setting in needed:
            if capability not in backend.capabilities:
                raise BackendCapabilityError(
                    f"{setting}=True needs a backend that can {capability.replace('_', ' ')}; "
                    f"the {backend.name!r} backend cannot"
                )

    async def probe(self) -> str | None:
        """Readiness: None when the judge can answer now, else why not (the backend is not built here)."""
        if self._backend is None:
            return "the judge is not loaded yet"
        return await self._backend.probe()

    async def awarmup(self) -> str | None:
        """Pay the cold start now, not in the first scoring call: build the engine (and meta RM) and
        open this event loop's HTTP clients with one cheap readiness call (the backend's ``probe``).

        Once per event loop (concurrent callers share it). Returns None when the judge is ready,
        else why not (it does not raise: scoring calls report failures). See docs/backends.md.
        """
        loop = asyncio.get_running_loop()
        task = self._warmups.get(loop)
        if task is None:
            task = self._warmups[loop] = loop.create_task(self._warm())
        return await asyncio.shield(task)

    async def _warm(self) -> str | None:
        backend = await asyncio.to_thread(lambda: self.backend)
        await asyncio.to_thread(lambda: self.meta_rm)
        return await backend.probe()

    def warmup(self) -> str | None:
        """Blocking twin of :meth:`awarmup`, on the private loop the sync methods use."""
        return self._loop.run(self.awarmup())

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()
        if self._meta_rm is not None:
            await self._meta_rm.aclose()

    def close(self) -> None:
        """Release the backend, the meta RM and the private event loop of the sync API."""
        if self._backend is not None or self._meta_rm is not None:
            self._loop.run(self.aclose())
        self._loop.close()

    def __enter__(self) -> GenerativeRewardModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for multiprocess trainers: the engine and the loop are rebuilt on first use.
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def __repr__(self) -> str:
        model = self.config.model or "embedded SmolLM2-135M-Instruct"
        return f"GenerativeRewardModel(model={model!r}, backend={self.config.backend!r}, k={self.config.k})"

    # --- public API ---------------------------------------------------------------------------
    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the private event loop the sync methods use, and wait for it.

        For sync wrappers around async code that uses this model (engines that hold loop-bound
        resources, such as HTTP connection pools, then stay on one loop between calls).
        """
        return self._loop.run(coro)

    def score(
        self,
        prompt: str | Sequence[Message],
        responses: Sequence[str],
        *,
        principles: str | Sequence[str] | None = None,
        reference: str | None = None,
    ) -> RewardResult:
        """Score 1..n responses to one prompt (blocking)."""
        return self._loop.run(self.ascore(prompt, responses, principles=principles, reference=reference))

    def score_batch(self, requests: Sequence[RequestLike]) -> list[RewardResult]:
        """Score many requests in one backend batch (blocking); results in input order."""
        return self._loop.run(self.ascore_batch(requests))

    async def ascore(
        self,
        prompt: str | Sequence[Message],
        responses: Sequence[str],
        *,
        principles: str | Sequence[str] | None = None,
        reference: str | None = None,
    ) -> RewardResult:
        """Async twin of :meth:`score`."""
        request = Request(prompt=prompt, responses=responses, principles=principles, reference=reference)
        return (await self.ascore_batch([request]))[0]

    async def ascore_batch(self, requests: Sequence[RequestLike]) -> list[RewardResult]:
        """Async twin of :meth:`score_batch`."""
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise InputError("score_batch expects a list of requests")
        coerced = [Request.coerce(item, index=i) for i, item in enumerate(requests)]

        def plan_all() -> list[_Plan]:
            return [self._plan(request, i) for i, request in enumerate(coerced)]

        # Planning (fingerprints, defences, rendering) is CPU work linear in the text: a large batch is
        # planned in a worker thread so the event loop (the server's /health, other requests) stays free.
        big = sum(request.text_chars for request in coerced) > _PLAN_INLINE_CHARS
        plans = await asyncio.to_thread(plan_all) if big else plan_all()
        if not plans:
            return []
        backend = self.backend
        generation_requests = [
            GenerationRequest(
                messages=messages,
                n=len(samples),
                seed=plan.seeds[samples[0]],  # the group's base seed: sample i of it is base + i
                max_tokens=self.config.max_new_tokens,
                temperature=self.config.effective_temperature,
                top_p=self.config.top_p,
            )
            for plan in plans
            for (_, samples, messages) in plan.groups
        ]
        outputs = await backend.generate(generation_requests)
        if len(outputs) != len(generation_requests):
            raise GRMError(
                f"backend {backend.name!r} returned {len(outputs)} outputs for {len(generation_requests)} requests"
            )
        per_plan: list[list[Judgement]] = []
        usages: list[Usage] = []
        cursor = 0
        for plan in plans:
            judgements: list[Judgement | None] = [None] * self.config.k
            usage = Usage()
            for order, samples, _ in plan.groups:
                output = outputs[cursor]
                cursor += 1
                self._check_output(output, len(samples), backend)
                usage.prompt_tokens += output.prompt_tokens
                for j, generation in zip(samples, output.samples):
                    usage.completion_tokens += generation.completion_tokens
                    judgements[j] = self._judge_sample(plan, order, plan.seeds[j], generation)
            per_plan.append([j for j in judgements if j is not None])
            usages.append(usage)
        if self.config.format_guarantee or self.config.token_prob:
            await self._fill(plans, per_plan, usages)
        if self.meta_rm is not None:
            await self._rate(plans, per_plan)
        return [self._result(plan, judgements, usage) for plan, judgements, usage in zip(plans, per_plan, usages)]

    # --- planning -----------------------------------------------------------------------------
    def _plan(self, request: Request, index: int) -> _Plan:
        cfg = self.config
        n = request.n
        if n > cfg.max_responses:
            raise InputError(f"{n} responses exceed max_responses={cfg.max_responses}", index=index)
        try:
            template = select_template(cfg.template, num_responses=n, has_principles=request.principles is not None)
        except GRMError as exc:
            raise InputError(str(exc), index=index) from exc
        fingerprint = _fingerprint(request)
        orders = _orders(cfg.shuffle, n, cfg.k, random.Random(_derive_seed(cfg.seed, fingerprint, "order")))
        seeds = sample_seeds(orders, lambda order: group_seed(cfg.seed, fingerprint, order))
        # The judge (and the meta RM) see the defended responses; seeds come from the request as given.
        shown, defences = defend_request(request, rewrite=cfg.defences.neutralise, flag=cfg.defences.flag_injections)
        notice = cfg.defences.injection_notice and any(d.any_flagged or d.any_neutralised for d in defences)
        plan = _Plan(shown, template, fingerprint, seeds, orders, defences=defences)
        by_order: dict[tuple[int, ...], list[int]] = {}
        for j, order in enumerate(orders):
            by_order.setdefault(tuple(order), []).append(j)
        for order_key, samples in by_order.items():
            try:
                text = render_judge_prompt(shown, order_key, template, cfg.score_range, injection_notice=notice)
            except GRMError as exc:
                raise InputError(str(exc), index=index) from exc
            messages: list[Message] = []
            if cfg.system_prompt:
                messages.append({"role": "system", "content": cfg.system_prompt})
            messages.append({"role": "user", "content": text})
            plan.groups.append((list(order_key), samples, tuple(messages)))
        return plan

    # --- reading samples ------------------------------------------------------------------------
    @staticmethod
    def _check_output(output: GenerationOutput, expected: int, backend: Backend) -> None:
        if len(output.samples) != expected:
            raise GRMError(f"backend {backend.name!r} returned {len(output.samples)} samples, {expected} were asked for")

    def _judge_sample(self, plan: _Plan, order: list[int], seed: int, generation: Any) -> Judgement:
        n = plan.request.n
        shown = parse_judgement(generation.text, n, self.config.score_range)
        reason = shown.reason
        if reason is not None and generation.finish_reason == "length" and not reason.startswith("truncated"):
            reason = f"truncated: the sample hit max_new_tokens={self.config.max_new_tokens} ({reason})"
        principles = shown.principles
        if plan.request.principles is not None:
            given = plan.request.principles
            principles = [Principle(p.strip()) for p in ([given] if isinstance(given, str) else given) if p.strip()]
        return Judgement(
            text=generation.text,
            scores=[int(s) for s in unpermute(shown.scores, order)] if shown.scores is not None else None,
            order=list(order),
            principles=principles,
            critique=shown.critique,
            reason=reason,
            seed=seed,
            completion_tokens=generation.completion_tokens,
            finish_reason=generation.finish_reason,
        )

    async def _fill(self, plans: list[_Plan], per_plan: list[list[Judgement]], usages: list[Usage]) -> None:
        """Forced scores for unreadable samples and/or token-probability scores, in one backend call."""
        cfg = self.config
        targets: list[tuple[int, int]] = []
        fill_requests: list[ScoreFillRequest] = []
        for p, (plan, judgements) in enumerate(zip(plans, per_plan)):
            for s, judgement in enumerate(judgements):
                force = cfg.format_guarantee and not judgement.valid
                if not (force or (cfg.token_prob and judgement.valid)):
                    continue
                messages = next(m for order, _, m in plan.groups if order == judgement.order)
                fill_requests.append(
                    ScoreFillRequest(
                        messages=messages,
                        assistant_prefix=_forced_prefix(judgement.text),
                        num_scores=plan.request.n,
                        score_range=cfg.score_range,
                        expectation=cfg.token_prob,
                    )
                )
                targets.append((p, s))
        if not fill_requests:
            return
        fills = await self.backend.fill_scores(fill_requests)
        if len(fills) != len(fill_requests):
            raise GRMError(f"backend returned {len(fills)} score fills for {len(fill_requests)} requests")
        lo, hi = cfg.score_range
        for (p, s), request, fill in zip(targets, fill_requests, fills):
            judgement = per_plan[p][s]
            usages[p].prompt_tokens += fill.prompt_tokens
            usages[p].completion_tokens += fill.completion_tokens
            if fill.values is None:
                # The backend could not fill valid scores: the sample keeps its state, and why.
                if not judgement.valid:
                    per_plan[p][s] = replace(judgement, reason=f"{judgement.reason}; forcing failed: {fill.reason}")
                continue
            if len(fill.values) != request.num_scores or not all(lo <= v <= hi for v in fill.values):
                raise GRMError(f"backend filled invalid scores {fill.values} for {request.num_scores} responses")
            changes: dict[str, Any] = {}
            if not judgement.valid:
                # ``text`` stays what the judge wrote; the forced block is implied by ``scores``.
                changes = {
                    "scores": [int(v) for v in unpermute(fill.values, judgement.order)],
                    "forced": True,
                    "reason": f"forced after {judgement.reason}",
                }
            if fill.expected is not None:
                changes["token_scores"] = unpermute(fill.expected, judgement.order)
            per_plan[p][s] = replace(judgement, **changes)

    async def _rate(self, plans: list[_Plan], per_plan: list[list[Judgement]]) -> None:
        """Meta RM ratings for every sample that can vote (one call for the whole batch)."""
        assert self.meta_rm is not None
        targets = [(p, s) for p, judgements in enumerate(per_plan) for s, j in enumerate(judgements) if j.valid]
        if not targets:
            return
        conversations = [meta_conversation(plans[p].request, per_plan[p][s]) for p, s in targets]
        ratings = await self.meta_rm.rate(conversations)
        if len(ratings) != len(targets):
            raise GRMError(f"meta RM returned {len(ratings)} ratings for {len(targets)} samples")
        for (p, s), rating in zip(targets, ratings):
            per_plan[p][s] = replace(per_plan[p][s], meta_score=float(rating))

    # --- voting ----------------------------------------------------------------------------------
    def _result(self, plan: _Plan, judgements: list[Judgement], usage: Usage) -> RewardResult:
        cfg = self.config
        n = plan.request.n
        tie_rng = random.Random(_derive_seed(cfg.seed, plan.fingerprint, "tie"))
        k_meta = cfg.effective_k_meta if self._meta_rm is not None else None
        outcome = vote(
            judgements, n, k_meta=k_meta, use_token_scores=cfg.token_prob, tie_break=cfg.tie_break, rng=tie_rng
        )
        if not outcome.voters:
            if cfg.on_all_invalid == "raise":
                reasons = "; ".join(sorted({j.reason or "?" for j in judgements}))
                raise AllSamplesInvalidError(f"none of the {len(judgements)} judge samples could be read ({reasons})")
            rewards: list[float | None] = [cfg.failure_reward] * n
        else:
            rewards = [normalise(t, len(outcome.voters), cfg.score_range, cfg.normalize) for t in outcome.votes]
        return RewardResult(
            rewards=rewards,
            votes=outcome.votes,
            samples=judgements,
            num_voted=len(outcome.voters),
            best=outcome.best,
            tie=outcome.tie,
            usage=usage,
            defences=list(plan.defences),
        )


#: Strings at least this long enter a request's fingerprint by their own digest (see _fingerprint).
_DIGEST_CHARS = 16_384


#: Batches with more request text than this are planned off the event loop.
_PLAN_INLINE_CHARS = 65_536


def _fingerprint(request: Request) -> str:
    """The request's identity, for its seeds. Runs on the event loop: a string of ``_DIGEST_CHARS`` or
    more is hashed directly (5x cheaper than JSON-escaping it, measured on 262K-char prompts);
    shorter ones are JSON-encoded as they always were, so their fingerprints (and seeds) are unchanged."""

    def digest_long(value: Any) -> Any:
        if isinstance(value, str) and len(value) >= _DIGEST_CHARS:  # a dict: no string can collide with it
            raw = value.encode("utf-8", "surrogatepass")
            return {"blake2b": hashlib.blake2b(raw, digest_size=16).hexdigest(), "chars": len(value)}
        if isinstance(value, list):
            return [digest_long(item) for item in value]
        if isinstance(value, dict):
            return {key: digest_long(item) for key, item in value.items()}
        return value

    payload = json.dumps(digest_long(request.to_dict()), ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def _derive_seed(base: int, fingerprint: str, purpose: str) -> int:
    digest = hashlib.blake2b(f"{base}|{fingerprint}|{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF  # fits every engine's seed type


#: Group base seeds lie below this, so base + i stays a positive int32 for every k <= 1024.
_GROUP_SEED_SPACE = 2**31 - 2048


def group_seed(base: int, fingerprint: str, order: Sequence[int]) -> int:
    """The base seed of the samples of one request shown in ``order``."""
    key = "order:" + ",".join(str(i) for i in order)
    return _derive_seed(base, fingerprint, key) % _GROUP_SEED_SPACE


def sample_seeds(orders: Sequence[Sequence[int]], base_of: Callable[[tuple[int, ...]], int]) -> list[int]:
    """The seed rule: sample j's seed is its shown order's base seed + its rank among the samples
    shown in that order so far.

    The samples sharing an order become one generation request ``(n, seed=base)``, and sample i of
    it is seeded ``base + i``, which is what vLLM does with ``n`` (``ParentRequest``), what a
    fan-out of single requests sends, and what :class:`Judgement.seed` records. Sample j's seed
    depends only on ``orders[:j + 1]``, never on k, so fewer samples are a prefix of more.

    >>> sample_seeds([[0, 1], [1, 0], [0, 1], [0, 1]], lambda order: 100 if order == (0, 1) else 500)
    [100, 500, 101, 102]
    """
    ranks: dict[tuple[int, ...], int] = {}
    seeds = []
    for order in orders:
        key = tuple(order)
        rank = ranks.get(key, 0)
        ranks[key] = rank + 1
        seeds.append(base_of(key) + rank)
    return seeds


def _orders(shuffle: str, n: int, k: int, rng: random.Random) -> list[list[int]]:
    """The order responses are shown in, for each of the k samples."""
    identity = list(range(n))
    if shuffle == "none" or n == 1:
        return [identity] * k
    if shuffle == "balanced":
        base = identity[:]
        rng.shuffle(base)
        return [base[j % n :] + base[: j % n] for j in range(k)]
    orders = []
    for _ in range(k):
        order = identity[:]
        rng.shuffle(order)
        orders.append(order)
    return orders


def _forced_prefix(text: str) -> str:
    """The sample's own text, cut before any (broken) score block, then the forced score opener."""
    cut = score_section_start(text)
    if cut is not None:
        text = text[:cut]
    text = text.rstrip()
    return f"{text}\n{FORCED_SCORES_PREFIX}" if text else FORCED_SCORES_PREFIX
