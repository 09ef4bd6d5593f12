"""`GenerativeRewardModel`: request -> plan -> backend -> parse -> fill/rate -> vote -> `RewardResult`.

The one core path every layer calls: :mod:`grm_reward.planning` plans each request (orders,
seeds, one prompt per shown order), one backend call samples every prompt, each sample is read
in its shown order; then optional forced/token-probability scores, meta-RM ratings, the vote.
:meth:`GenerativeRewardModel.ajudge_batch` is the judging step alone (SPCT). See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import random
import weakref
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

from grm_reward._sync import LoopThread, run_cpu
from grm_reward.adaptive import drawn_k_meta, round_sizes, settled, voter_scores
from grm_reward.backends import create_backend
from grm_reward.backends.base import (
    FORCED_SCORES_PREFIX,
    Backend,
    GenerationOutput,
    GenerationRequest,
    ScoreFillRequest,
)
from grm_reward.caches import LRUStore, config_identity, dedup_batch, expand_result, principle_key, result_key
from grm_reward.config import GRMConfig
from grm_reward.embedded import EMBEDDED_MODEL_LABEL
from grm_reward.errors import AllSamplesInvalidError, BackendCapabilityError, BackendProtocolError, InputError
from grm_reward.meta_rm import MetaRewardModel, create_meta_rm, meta_conversation
from grm_reward.parsing import parse_judgement, parse_principles, score_section_start
from grm_reward.planning import Plan, derive_seed, plan_requests, sample_seeds
from grm_reward.prompts import format_conversation, principles_template_text, render_principles_prompt
from grm_reward.types import Judgement, Message, Principle, Request, RequestLike, RewardResult, Usage
from grm_reward.voting import normalize, unpermute, vote

__all__ = ["GenerativeRewardModel", "Judging", "sample_seeds"]

T = TypeVar("T")


class Judging(NamedTuple):
    """One request's judging step: its plan, its judgements (in sample order) and the tokens spent."""

    plan: Plan
    judgements: list[Judgement]
    usage: Usage


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
        # Reuse (docs/scoring.md): repeated requests' results, and each prompt's shared principles.
        self._results: LRUStore[RewardResult] | None = (
            LRUStore(config.reuse.result_cache) if config.reuse.result_cache else None
        )
        self._principles: LRUStore[tuple[str, ...]] = LRUStore(config.principles.cache_size)
        self._writing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[dict[str, Usage]]]] = (
            weakref.WeakKeyDictionary()
        )

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

    def load(self) -> None:
        """Build the engine and the meta RM now, so a missing model or dependency fails here, not in the
        first scoring call (raises what building raises: :class:`BackendUnavailableError`, ...)."""
        _ = self.backend
        _ = self.meta_rm

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
        await asyncio.to_thread(self.load)
        return await self.backend.probe()

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
        model = self.config.model or EMBEDDED_MODEL_LABEL
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
        reuse = self.config.reuse
        if reuse.dedup or reuse.result_cache or self.config.principles.shared:
            return await self._ascore_reusing(requests)
        return await self._ascore_fresh(requests)

    async def _ascore_fresh(self, requests: Sequence[RequestLike]) -> list[RewardResult]:
        plans = await self._aplans(requests)
        if not plans:
            return []
        if self.config.adaptive.enabled and self.config.k > self.config.adaptive.min_k:
            per_plan, usages = await self._judge_adaptively(plans)
        else:
            per_plan, usages = await self._judge_and_rate(plans, None)
        return [self._result(plan, judgements, usage) for plan, judgements, usage in zip(plans, per_plan, usages)]

    async def _judge_and_rate(
        self, plans: list[Plan], windows: Sequence[range] | None
    ) -> tuple[list[list[Judgement]], list[Usage]]:
        """Judge (the samples of ``windows``, default all), fill and rate: the vote's inputs."""
        per_plan, usages = await self._judge(plans, temperature=self.config.effective_temperature, windows=windows)
        if self.config.format_guarantee or self.config.token_prob:
            await self._fill(plans, per_plan, usages)
        if self.meta_rm is not None:
            await self._rate(plans, per_plan)
        return per_plan, usages

    async def _judge_adaptively(self, plans: list[Plan]) -> tuple[list[list[Judgement]], list[Usage]]:
        """Adaptive k (docs/scoring.md): rounds of samples, each a further slice of the fixed-k plan, until
        :func:`~grm_reward.adaptive.settled` says more could not change the reward's use. Each round is
        judged, filled and rated like a fixed-k batch; only the requests still open take part."""
        cfg = self.config
        k = cfg.k
        per_plan: list[list[Judgement]] = [[] for _ in plans]
        usages = [Usage() for _ in plans]
        open_ = list(range(len(plans)))
        for size in round_sizes(k, cfg.adaptive):
            windows = [range(len(per_plan[p]), len(per_plan[p]) + size) for p in open_]
            new, new_usages = await self._judge_and_rate([plans[p] for p in open_], windows)
            still_open = []
            for p, judgements, usage in zip(open_, new, new_usages):
                per_plan[p].extend(judgements)
                usages[p].add(usage)
                drawn = len(per_plan[p])
                k_meta = drawn_k_meta(cfg.effective_k_meta, drawn, k) if self._meta_rm is not None else None
                rows = voter_scores(per_plan[p], k_meta, use_token_scores=cfg.token_prob)
                if not settled(rows, k - drawn, cfg.adaptive, cfg.score_range):
                    still_open.append(p)
            open_ = still_open
            if not open_:
                break
        return per_plan, usages

    def judge_batch(
        self,
        requests: Sequence[RequestLike],
        *,
        hints: Sequence[int | None] | None = None,
        k: int | None = None,
        temperature: float | None = None,
        purpose: str = "",
    ) -> list[Judging]:
        """The judging step alone (blocking): see :meth:`ajudge_batch`."""
        return self._loop.run(self.ajudge_batch(requests, hints=hints, k=k, temperature=temperature, purpose=purpose))

    async def ajudge_batch(
        self,
        requests: Sequence[RequestLike],
        *,
        hints: Sequence[int | None] | None = None,
        k: int | None = None,
        temperature: float | None = None,
        purpose: str = "",
    ) -> list[Judging]:
        """Each request's plan and judgements read strictly, before any forcing, rating or vote.

        ``hints[i]`` (an index into request i's responses, or None) appends the SPCT hint;
        ``k``/``temperature`` override the config's; ``purpose`` salts the orders and seeds
        (:func:`~grm_reward.planning.plan_request`). The reward path is this step, then
        :meth:`ascore_batch`'s fill, rating and vote.
        """
        if hints is not None and len(hints) != len(requests):
            raise InputError(f"{len(hints)} hints for {len(requests)} requests")
        plans = await self._aplans(requests, hints=hints, k=k, purpose=purpose)
        if not plans:
            return []
        temperature = self.config.effective_temperature if temperature is None else temperature
        per_plan, usages = await self._judge(plans, temperature=temperature)
        return [Judging(plan, judgements, usage) for plan, judgements, usage in zip(plans, per_plan, usages)]

    # --- reuse: deduplication, result cache, shared principles (caches.py, docs/scoring.md) -----
    async def _ascore_reusing(self, requests: Sequence[RequestLike]) -> list[RewardResult]:
        """Each distinct request judged once (duplicates removed with ``reuse.dedup``), repeats answered
        from the result cache, shared principles attached; results mapped back to the inputs."""
        cfg = self.config
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise InputError("score_batch expects a list of requests")
        coerced = [Request.coerce(item, index=i) for i, item in enumerate(requests)]
        for i, request in enumerate(coerced):  # checked as given: duplicates do not hide an oversized request
            if request.n > cfg.max_responses:
                raise InputError(f"{request.n} responses exceed max_responses={cfg.max_responses}", index=i)
        batch = None
        if cfg.reuse.dedup or cfg.reuse.result_cache:  # fingerprints: off the event loop for big batches, as planning
            big = sum(request.text_chars for request in coerced) > _PLAN_INLINE_CHARS
            dedup = functools.partial(dedup_batch, coerced, responses=cfg.reuse.dedup)
            batch = await run_cpu(dedup) if big else dedup()
        unique = coerced if batch is None else batch.unique
        results: list[RewardResult | None] = [None] * len(unique)
        keys: list[str] = []
        if self._results is not None and batch is not None:
            identity = config_identity(cfg, self.backend.name)
            keys = [result_key(identity, print_) for print_ in batch.fingerprints]
            for u, key in enumerate(keys):
                stored = self._results.get(key)
                if stored is not None:
                    results[u] = _reused(stored)
        todo = [u for u, result in enumerate(results) if result is None]
        if todo:
            judged = [unique[u] for u in todo]
            extra: list[Usage] = []
            if cfg.principles.shared:
                judged, extra = await self._share_principles(judged)
            try:
                fresh = await self._ascore_fresh(judged)
            except InputError as exc:
                if exc.index is None or batch is None or not 0 <= exc.index < len(todo):
                    raise
                where = batch.first_input[todo[exc.index]]
                raise InputError(str(exc).removeprefix(f"request {exc.index}: "), index=where) from exc
            for t, (u, result) in enumerate(zip(todo, fresh)):
                if extra:
                    result.usage.add(extra[t])
                results[u] = result
                if keys and self._results is not None and not result.all_invalid:
                    self._results.put(keys[u], copy.deepcopy(result))
        done = [r for r in results if r is not None]
        if batch is None:
            return done
        out = []
        answered: set[int] = set()
        for slot, mapping in zip(batch.slots, batch.maps):
            result = done[slot] if slot not in answered else _reused(done[slot])
            answered.add(slot)
            out.append(expand_result(result, mapping))
        return out

    async def _share_principles(self, requests: list[Request]) -> tuple[list[Request], list[Usage]]:
        """Requests without principles get their prompt's shared principles, written once per key (one
        greedy judge call, concurrent batches sharing it) and cached; the tokens are charged to the
        request whose call wrote them. A prompt whose judge wrote no readable principles keeps the
        judge-written path."""
        loop = asyncio.get_running_loop()
        writing = self._writing.setdefault(loop, {})
        template = principles_template_text()
        judge = self.backend.name
        keys: list[str | None] = []
        mine: dict[str, Request] = {}
        for request in requests:
            key = None
            if request.principles is None:
                key = principle_key(judge, self.config, template, format_conversation(request.prompt))
                if key not in self._principles and key not in writing and key not in mine:
                    mine[key] = request
            keys.append(key)
        spent: dict[str, Usage] = {}
        if mine:
            task = asyncio.ensure_future(self._write_principles(mine))
            for key in mine:
                writing[key] = task

            def forget(done: asyncio.Future[dict[str, Usage]], written: tuple[str, ...] = tuple(mine)) -> None:
                for key in written:
                    writing.pop(key, None)
                if not done.cancelled():
                    done.exception()  # retrieved here too: every caller that waited may have gone

            task.add_done_callback(forget)
            spent = await asyncio.shield(task)
        for other in {writing[key] for key in keys if key is not None and key in writing}:
            await asyncio.shield(other)
        shared: list[Request] = []
        usages: list[Usage] = []
        for request, key in zip(requests, keys):
            principles = self._principles.get(key) if key is not None else None
            shared.append(replace(request, principles=list(principles)) if principles else request)
            usages.append(spent.pop(key, Usage()) if key is not None else Usage())
        return shared, usages

    async def _write_principles(self, wanted: dict[str, Request]) -> dict[str, Usage]:
        """One greedy judge call per key writing the query's principles; stores them, returns the tokens."""
        cfg = self.config
        backend = self.backend
        generation_requests = []
        for key, request in wanted.items():
            messages: list[Message] = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
            messages.append({"role": "user", "content": render_principles_prompt(request.prompt)})
            generation_requests.append(
                GenerationRequest(
                    messages=tuple(messages),
                    n=1,
                    seed=derive_seed(cfg.seed, key, "principles"),
                    max_tokens=cfg.max_new_tokens,
                    temperature=0.0,
                    top_p=cfg.top_p,
                )
            )
        outputs = await backend.generate(generation_requests)
        if len(outputs) != len(generation_requests):
            raise BackendProtocolError(
                f"backend {backend.name!r} returned {len(outputs)} outputs for {len(generation_requests)} requests"
            )
        spent: dict[str, Usage] = {}
        for key, output in zip(wanted, outputs):
            self._check_output(output, 1, backend)
            sample = output.samples[0]
            self._principles.put(key, tuple(_principle_line(p) for p in parse_principles(sample.text)))
            spent[key] = Usage(prompt_tokens=output.prompt_tokens, completion_tokens=sample.completion_tokens)
        return spent

    # --- planning and sampling ----------------------------------------------------------------
    async def _aplans(
        self, requests: Sequence[RequestLike], *, hints: Sequence[int | None] | None = None, k: int | None = None,
        purpose: str = "",
    ) -> list[Plan]:
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise InputError("score_batch expects a list of requests")
        coerced = [Request.coerce(item, index=i) for i, item in enumerate(requests)]

        def plan_all() -> list[Plan]:
            return plan_requests(coerced, self.config, k=k, hints=hints, purpose=purpose)

        # Planning (fingerprints, defences, rendering) is CPU work linear in the text: a large batch is
        # planned in a worker thread so the event loop (the server's /health, other requests) stays free.
        big = sum(request.text_chars for request in coerced) > _PLAN_INLINE_CHARS
        return await run_cpu(plan_all) if big else plan_all()

    async def _judge(
        self, plans: list[Plan], *, temperature: float, windows: Sequence[range] | None = None
    ) -> tuple[list[list[Judgement]], list[Usage]]:
        """One backend call for every prompt group of every plan; judgements per plan, in sample order.

        ``windows[p]`` (adaptive k) limits plan p to the samples it covers: in each prompt group they
        are consecutive, so they are one request seeded as the fixed-k plan seeds them.
        """
        backend = self.backend
        asked = [
            (p, group, [j for j in group.samples if windows is None or j in windows[p]])
            for p, plan in enumerate(plans)
            for group in plan.groups
        ]
        asked = [(p, group, samples) for p, group, samples in asked if samples]
        generation_requests = [
            GenerationRequest(
                messages=group.messages,
                n=len(samples),
                seed=plans[p].seeds[samples[0]],  # the group's base seed (+ rank): sample i of it is seed + i
                max_tokens=self.config.max_new_tokens,
                temperature=temperature,
                top_p=self.config.top_p,
            )
            for p, group, samples in asked
        ]
        outputs = await backend.generate(generation_requests)
        if len(outputs) != len(generation_requests):
            raise BackendProtocolError(
                f"backend {backend.name!r} returned {len(outputs)} outputs for {len(generation_requests)} requests"
            )
        slots: list[list[Judgement | None]] = [[None] * len(plan.seeds) for plan in plans]
        usages = [Usage() for _ in plans]
        for (p, group, samples), output in zip(asked, outputs):
            plan = plans[p]
            self._check_output(output, len(samples), backend)
            usages[p].prompt_tokens += output.prompt_tokens
            for j, generation in zip(samples, output.samples):
                usages[p].completion_tokens += generation.completion_tokens
                slots[p][j] = self._judge_sample(plan, group.order, plan.seeds[j], generation)
        per_plan = [[j for j in judgements if j is not None] for judgements in slots]
        return per_plan, usages

    # --- reading samples ------------------------------------------------------------------------
    @staticmethod
    def _check_output(output: GenerationOutput, expected: int, backend: Backend) -> None:
        if len(output.samples) != expected:
            raise BackendProtocolError(
                f"backend {backend.name!r} returned {len(output.samples)} samples, {expected} were asked for"
            )

    def _judge_sample(self, plan: Plan, order: Sequence[int], seed: int, generation: Any) -> Judgement:
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

    async def _fill(self, plans: list[Plan], per_plan: list[list[Judgement]], usages: list[Usage]) -> None:
        """Forced scores for unreadable samples and/or token-probability scores, in one backend call."""
        cfg = self.config
        targets: list[tuple[int, int]] = []
        fill_requests: list[ScoreFillRequest] = []
        # Collect (plan p, sample s) pairs to fill: an unreadable sample is forced (format
        # guarantee), a readable one gets expected scores (token_prob); each is re-asked with its
        # own prompt and its own text up to the score block, then the fills are mapped back below.
        for p, (plan, judgements) in enumerate(zip(plans, per_plan)):
            for s, judgement in enumerate(judgements):
                force = cfg.format_guarantee and not judgement.valid
                if not (force or (cfg.token_prob and judgement.valid)):
                    continue
                messages = plan.group_of(judgement.order).messages
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
            raise BackendProtocolError(f"backend returned {len(fills)} score fills for {len(fill_requests)} requests")
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
                raise BackendProtocolError(f"backend filled invalid scores {fill.values} for {request.num_scores} responses")
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

    async def _rate(self, plans: list[Plan], per_plan: list[list[Judgement]]) -> None:
        """Meta RM ratings for every sample that can vote (one call for the whole batch)."""
        assert self.meta_rm is not None
        targets = [(p, s) for p, judgements in enumerate(per_plan) for s, j in enumerate(judgements) if j.valid]
        if not targets:
            return
        conversations = [meta_conversation(plans[p].request, per_plan[p][s]) for p, s in targets]
        ratings = await self.meta_rm.rate(conversations)
        if len(ratings) != len(targets):
            raise BackendProtocolError(f"meta RM returned {len(ratings)} ratings for {len(targets)} samples")
        for (p, s), rating in zip(targets, ratings):
            per_plan[p][s] = replace(per_plan[p][s], meta_score=float(rating))

    # --- voting ----------------------------------------------------------------------------------
    def _result(self, plan: Plan, judgements: list[Judgement], usage: Usage) -> RewardResult:
        cfg = self.config
        n = plan.request.n
        tie_rng = random.Random(derive_seed(cfg.seed, plan.fingerprint, "tie"))
        k_meta = drawn_k_meta(cfg.effective_k_meta, len(judgements), cfg.k) if self._meta_rm is not None else None
        outcome = vote(
            judgements, n, k_meta=k_meta, use_token_scores=cfg.token_prob, tie_break=cfg.tie_break, rng=tie_rng
        )
        if not outcome.voters:
            if cfg.on_all_invalid == "raise":
                reasons = "; ".join(sorted({j.reason or "?" for j in judgements}))
                raise AllSamplesInvalidError(f"none of the {len(judgements)} judge samples could be read ({reasons})")
            rewards: list[float | None] = [cfg.failure_reward] * n
        else:
            rewards = [normalize(t, len(outcome.voters), cfg.score_range, cfg.normalize) for t in outcome.votes]
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


#: Batches with more request text than this are planned off the event loop.
_PLAN_INLINE_CHARS = 65_536


def _reused(result: RewardResult) -> RewardResult:
    """A copy of a result answered again without judging: marked cached, with no tokens spent."""
    again = copy.deepcopy(result)
    again.cached = True
    again.usage = Usage()
    return again


def _principle_line(principle: Principle) -> str:
    """A judge-written principle as a given one, its weight written back ("Accuracy (Weight: 40%)")."""
    if principle.weight is None:
        return principle.text
    weight = f"{principle.weight:.0%}" if principle.weight <= 1 else f"{principle.weight:g}"
    return f"{principle.text} (Weight: {weight})"


def _forced_prefix(text: str) -> str:
    """The sample's own text, cut before any (broken) score block, then the forced score opener."""
    cut = score_section_start(text)
    if cut is not None:
        text = text[:cut]
    text = text.rstrip()
    return f"{text}\n{FORCED_SCORES_PREFIX}" if text else FORCED_SCORES_PREFIX
