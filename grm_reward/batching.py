"""`MicroBatcher`: many concurrent single requests -> few backend batches.

RL frameworks call a reward model one sample at a time, many at once: OpenRLHF sends one HTTP
request per rollout, verl's reward loop calls ``run_single`` per sample. Sending each on its own
wastes the engine. The batcher collects the calls that arrive within ``max_wait_s`` (or until
``max_batch_requests``), scores them with one ``ascore_batch``, and hands each caller its own
result. A batch takes its members when it gets one of the ``max_concurrent_batches`` slots, not
when its window closes: while every slot is busy, arrivals keep joining the next batch, so a
burst that arrives over a longer time than the window still fills batches instead of queueing
many small ones. With ``group_by_prompt``, single-response requests that share a prompt (a GRPO group)
are judged together in one listwise request of at most ``max_group_size`` responses, as the
paper allows (its Table 11: list input and pair input agree within 0.5 points); with ``group_size``
too, a group is judged the moment its last response arrives, without waiting for the window.

Failures stay local: if a batch fails with a request's error (:mod:`grm_reward.chunking`), its
requests are retried one by one, so only the request that caused it gets the error. Abandoned work stops: a batch runs under the latest
deadline of its members (:mod:`grm_reward.deadlines`) and is cancelled once every caller it serves
has gone (timed out, disconnected). See ``docs/server.md``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from grm_reward import deadlines
from grm_reward._tasks import gather_cancelling
from grm_reward.chunking import ascore_chunk
from grm_reward.config import BatchingOptions
from grm_reward.errors import DeadlineExceededError, GRMError
from grm_reward.model import GenerativeRewardModel
from grm_reward.types import Judgement, Request, RewardResult, Usage

__all__ = ["BatcherStats", "Grouped", "MicroBatcher", "group_key", "group_listwise", "split_result"]

logger = logging.getLogger("grm_reward.batching")
T = TypeVar("T")


#: A request to score and the inputs it answers: (input index, response index in a merged request,
#: or None when the request is the input itself).
Grouped = tuple[Request, list[tuple[int, int | None]]]


def group_listwise(requests: Sequence[Request], *, group_by_prompt: bool, max_group_size: int) -> list[Grouped]:
    """The requests to score for ``requests``: single-response requests of one prompt (same
    principles and reference: :func:`group_key`) merged, ``max_group_size`` at a time, into one
    listwise request; everything else as it is. :func:`split_result` reads an input's part back.
    """
    if not group_by_prompt:
        return [(request, [(i, None)]) for i, request in enumerate(requests)]
    plan: list[Grouped] = []
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        if request.n != 1:
            plan.append((request, [(i, None)]))
        else:
            groups.setdefault(_group_key(request), []).append(i)
    for members in groups.values():
        for start in range(0, len(members), max_group_size):
            chunk = members[start : start + max_group_size]
            if len(chunk) == 1:
                plan.append((requests[chunk[0]], [(chunk[0], None)]))
                continue
            first = requests[chunk[0]]
            merged = Request(
                prompt=first.prompt,
                responses=[requests[m].responses[0] for m in chunk],
                principles=first.principles,
                reference=first.reference,
            )
            plan.append((merged, [(m, i) for i, m in enumerate(chunk)]))
    return plan


def split_result(result: RewardResult, index: int) -> RewardResult:
    """The part of a listwise ``result`` that concerns response ``index``, as a one-response result.

    Each sample keeps its text, principles and critique (they discuss the whole list); its
    ``scores`` and ``token_scores`` keep only this response's value; ``order`` becomes ``[0]``.
    ``best`` is 0 when this response was the group's best, else None.
    """
    if not 0 <= index < len(result.rewards):
        raise IndexError(f"response {index} of a result with {len(result.rewards)} responses")
    samples = [
        Judgement(
            text=s.text,
            scores=None if s.scores is None else [s.scores[index]],
            order=[0],
            principles=list(s.principles),
            critique=s.critique,
            reason=s.reason,
            forced=s.forced,
            token_scores=None if s.token_scores is None else [s.token_scores[index]],
            meta_score=s.meta_score,
            seed=s.seed,
            completion_tokens=s.completion_tokens,
            finish_reason=s.finish_reason,
        )
        for s in result.samples
    ]
    share = len(result.rewards)
    usage = Usage(
        prompt_tokens=result.usage.prompt_tokens // share, completion_tokens=result.usage.completion_tokens // share
    )
    return RewardResult(
        rewards=[result.rewards[index]],
        votes=[result.votes[index]],
        samples=samples,
        num_voted=result.num_voted,
        best=0 if result.best == index else None,
        tie=result.tie and result.best == index,
        usage=usage,
        defences=result.defences[index : index + 1],
    )


@dataclass
class BatcherStats:
    """Counters for /metrics and benchmarks.

    ``queue_depth`` counts submissions not yet in a batch: collecting in the window, or waiting
    for a free batch slot. ``batch_sizes`` keeps the sizes
    of the last 1024 batches (a bounded history, so a long-running server does not grow).
    """

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    batches: int = 0
    batched_requests: int = 0  # backend requests after grouping
    grouped_requests: int = 0  # submissions merged into listwise requests
    retries: int = 0
    cancelled: int = 0  # batches cancelled because every caller they served had gone
    queue_depth: int = 0
    in_flight: int = 0
    batch_seconds: float = 0.0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))


@dataclass
class _Pending:
    request: Request
    future: asyncio.Future[RewardResult]
    deadline: float | None  # the caller's deadline (time.monotonic clock), None: none
    arrived: float  # loop time of the submission
    group: str | None = None  # its prompt group's key, when the batcher counts groups (``group_size``)


class MicroBatcher:
    """Collects concurrent ``submit`` calls and scores them in batches.

    Use it from one event loop (the server's, or a worker's). ``max_concurrent_batches`` bounds
    the batches in flight, so a slow engine applies back-pressure instead of an unbounded queue.
    """

    def __init__(
        self,
        rm: GenerativeRewardModel,
        *,
        max_wait_s: float = 0.01,
        max_batch_requests: int = 64,
        max_concurrent_batches: int = 4,
        group_by_prompt: bool = False,
        max_group_size: int = 8,
        group_size: int | None = None,
    ) -> None:
        if max_wait_s < 0 or max_batch_requests < 1 or max_concurrent_batches < 1 or max_group_size < 1:
            raise ValueError("max_wait_s >= 0, and max_batch_requests, max_concurrent_batches, max_group_size >= 1")
        if group_size is not None and group_size < 1:
            raise ValueError("group_size >= 1 (or None)")
        self.rm = rm
        self.max_wait_s = max_wait_s
        self.max_batch_requests = max_batch_requests
        self.max_concurrent_batches = max_concurrent_batches
        self.group_by_prompt = group_by_prompt
        self.max_group_size = max_group_size
        # Count single responses per prompt group only when a complete group may start a batch early.
        self.group_size = group_size if group_by_prompt else None
        self.stats = BatcherStats()
        self._group_counts: dict[str, int] = {}  # pending submissions per group key
        self._complete: set[str] = set()  # keys with at least group_size pending
        self._pending: deque[_Pending] = deque()
        self._window_opened = 0.0  # when the oldest pending submission arrived
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False  # the timer fires in the next loop iteration (a group is complete)
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._abandoned: set[asyncio.Task[None]] = set()
        self._closing = False

    @classmethod
    def from_options(cls, rm: GenerativeRewardModel, options: BatchingOptions) -> MicroBatcher:
        """A batcher with these settings (``GRMConfig.batching_for(entry)``; any left unset: the server's)."""
        resolved = options.resolved("server")
        return cls(
            rm,
            max_wait_s=resolved.window_s or 0.0,
            max_batch_requests=resolved.max_batch_requests,
            max_concurrent_batches=resolved.max_concurrent_batches,
            group_by_prompt=bool(resolved.group_by_prompt),
            max_group_size=resolved.max_group_size or 1,
            group_size=resolved.group_size,
        )

    async def submit(self, request: Request) -> RewardResult:
        """Score one request as part of the next batch."""
        if self._closing:
            raise GRMError("the micro-batcher is closed")
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), deadlines.current_deadline(), loop.time())
        if not self._pending:
            self._window_opened = pending.arrived
        self._pending.append(pending)
        self.stats.submitted += 1
        self.stats.queue_depth = len(self._pending)
        if self.group_size is not None and request.n == 1:
            pending.group = _group_key(request)
            count = self._group_counts[pending.group] = self._group_counts.get(pending.group, 0) + 1
            if count >= self.group_size:
                self._complete.add(pending.group)
            pending.future.add_done_callback(functools.partial(self._gave_up, pending))
        if len(self._pending) >= self.max_batch_requests:
            self._dispatch()
        elif self._complete and not self._soon:
            # A complete group goes now; groups completed in this loop iteration share its batch.
            if self._timer is not None:
                self._timer.cancel()
            self._soon = True
            self._timer = loop.call_later(0.0, self._on_timer)
        elif self._timer is None:
            # Even with a zero window, submissions made in the same loop iteration share a batch.
            delay = max(0.0, self._window_opened + self.max_wait_s - loop.time())
            self._timer = loop.call_later(delay, self._on_timer)
        return await pending.future

    async def submit_many(self, requests: Sequence[Request]) -> list[RewardResult]:
        """Submit several requests; results in order (each may still share a batch with others)."""
        return list(await asyncio.gather(*(self.submit(r) for r in requests)))

    async def probe(self) -> str | None:
        """Readiness of the judge behind this batcher: None when ready, else the reason."""
        return await self.rm.probe()

    async def aclose(self, *, drain: bool = True) -> None:
        """Close: score what is queued and wait for the batches in flight (``drain``), or fail
        the queued requests and cancel the batches in flight (a server shutting down)."""
        self._closing = True
        if not drain:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            closed = GRMError("the reward model is shutting down")
            while self._pending:
                self._fail(self._pending.popleft(), closed)
            self._group_counts.clear()
            self._complete.clear()
            self.stats.queue_depth = 0
            for task in list(self._tasks):
                task.cancel()
        self._dispatch()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- internals ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start batches while a slot is free and the queue is due (full, window over, or closing)."""
        loop = asyncio.get_running_loop()
        while self._pending and self._running < self.max_concurrent_batches:
            while self._pending and self._pending[0].future.done():  # the caller gave up (e.g. timed out)
                self._counted_out(self._pending.popleft())
            if not self._pending:
                break
            due = loop.time() >= self._window_opened + self.max_wait_s
            if self._closing or due or len(self._pending) >= self.max_batch_requests:
                batch = [self._pending.popleft() for _ in range(min(self.max_batch_requests, len(self._pending)))]
            elif self._complete:
                batch = self._take_complete_groups()
                if self._pending:  # the rest keeps its own window
                    self._window_opened = self._pending[0].arrived
            else:
                break
            for member in batch:
                self._counted_out(member)
            batch = [member for member in batch if not member.future.done()]
            if not batch:
                continue
            self._running += 1
            # A fresh context: the batch serves many callers, not the one whose submit dispatched it.
            task = contextvars.Context().run(loop.create_task, self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
            orphaned = functools.partial(self._abandon_if_orphaned, task, batch)
            for member in batch:
                member.future.add_done_callback(orphaned)
        self.stats.queue_depth = len(self._pending)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._soon = False
        if self._pending and self._running < self.max_concurrent_batches:
            # Wait for the window to close; when all slots are busy, a finishing batch dispatches.
            delay = max(0.0, self._window_opened + self.max_wait_s - loop.time())
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._soon = False
        self._dispatch()

    def _take_complete_groups(self) -> list[_Pending]:
        """Every pending member of the complete groups (at most ``max_batch_requests``), out of the queue."""
        taken: list[_Pending] = []
        kept: deque[_Pending] = deque()
        for member in self._pending:
            if member.group in self._complete and len(taken) < self.max_batch_requests:
                taken.append(member)
            else:
                kept.append(member)
        self._pending = kept
        return taken

    def _gave_up(self, member: _Pending, _: object = None) -> None:
        self._counted_out(member)  # a no-op once it left the queue

    def _counted_out(self, member: _Pending) -> None:
        """``member`` left the queue (or its caller gave up): it no longer counts towards its group."""
        group, member.group = member.group, None
        if group is None or group not in self._group_counts:
            return
        left = self._group_counts[group] - 1
        if left:
            self._group_counts[group] = left
        else:
            del self._group_counts[group]
        if self.group_size is not None and left < self.group_size:
            self._complete.discard(group)

    def _abandon_if_orphaned(self, task: asyncio.Task[None], batch: list[_Pending], _: object = None) -> None:
        """Cancel a batch (and its backend call) once no caller waits for any of its results."""
        if task.done() or task in self._abandoned or not all(member.future.cancelled() for member in batch):
            return
        self._abandoned.add(task)
        self.stats.cancelled += 1
        task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._abandoned.discard(task)
        self._running -= 1
        if not task.cancelled():
            task.exception()  # retrieved: _run has already handed any failure to its callers
        self._dispatch()

    async def _run(self, batch: list[_Pending]) -> None:
        self.stats.in_flight += 1
        started = time.perf_counter()
        # The batch runs until its most patient member gives up (no deadline if one has none).
        member_deadlines = [member.deadline for member in batch]
        latest = None if None in member_deadlines else max(d for d in member_deadlines if d is not None)
        try:
            with deadlines.deadline_at(latest):
                plan = self._group(batch)
                self.stats.batches += 1
                self.stats.batched_requests += len(plan)
                self.stats.batch_sizes.append(len(plan))
                results = await self._score_plan([request for request, _ in plan])
            for (_, members), result in zip(plan, results):
                for member, index in members:
                    if isinstance(result, BaseException):
                        self._fail(member, result)
                    elif index is None:
                        self._resolve(member, result)
                    else:
                        self._resolve(member, split_result(result, index))
        except BaseException as exc:  # never leave a caller waiting
            closing = isinstance(exc, asyncio.CancelledError) and self._closing
            for member in batch:
                self._fail(member, GRMError("the reward model is shutting down") if closing else exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.stats.in_flight -= 1
            self.stats.batch_seconds += time.perf_counter() - started

    async def _score_plan(self, requests: list[Request]) -> list[RewardResult | BaseException]:
        """Score the backend requests of a batch, in calls of at most ``_CALL_CHARS`` characters.

        The model prepares a call's prompts on the event loop before it awaits the backend: bounding
        the text per call bounds that pause (a batch of huge requests becomes a few concurrent calls).
        """
        calls: list[list[Request]] = [[]]
        size = 0
        for request in requests:
            chars = request.text_chars
            if calls[-1] and size + chars > _CALL_CHARS:
                calls.append([])
                size = 0
            calls[-1].append(request)
            size += chars
        if len(calls) == 1:
            return await self._score_call(requests)
        parts = await gather_cancelling(self._score_call(call) for call in calls)
        return [result for part in parts for result in part]

    async def _score_call(self, requests: list[Request]) -> list[RewardResult | BaseException]:
        """One backend call; when it fails, find the culprits one by one (:mod:`grm_reward.chunking`)."""

        async def score(members: list[Request]) -> list[RewardResult]:
            return await _until_deadline(self.rm.ascore_batch(members))

        def retrying(exc: Exception) -> None:
            logger.info("a batch of %d failed (%s: %s); retrying its requests one by one",
                        len(requests), type(exc).__name__, exc)
            self.stats.retries += 1

        return list(await ascore_chunk(score, requests, on_retry=retrying))

    def _group(self, batch: list[_Pending]) -> list[tuple[Request, list[tuple[_Pending, int | None]]]]:
        """Backend requests for a batch, each with the submissions it answers (and their index)."""
        grouped = group_listwise(
            [p.request for p in batch], group_by_prompt=self.group_by_prompt, max_group_size=self.max_group_size
        )
        self.stats.grouped_requests += sum(len(members) for _, members in grouped if len(members) > 1)
        return [(request, [(batch[i], index) for i, index in members]) for request, members in grouped]

    def _resolve(self, member: _Pending, result: RewardResult) -> None:
        if not member.future.done():
            member.future.set_result(result)
            self.stats.completed += 1

    def _fail(self, member: _Pending, exc: BaseException) -> None:
        if not member.future.done():
            member.future.set_exception(exc)
            self.stats.failed += 1


#: Most characters of request text (prompts, responses, references, principles) in one model call.
_CALL_CHARS = 1 << 20


async def _until_deadline(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` until the deadline in force; past it, cancel it and raise DeadlineExceededError."""
    left = deadlines.remaining()
    if left is None:
        return await work
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=left)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if not done:
        raise DeadlineExceededError("the deadline of every request in the batch passed before the judge answered")
    return task.result()


def _group_key(request: Request) -> str:
    data: dict[str, Any] = request.to_dict()
    data.pop("responses")
    return json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)


def group_key(request: Request) -> str:
    """The key the batcher groups requests by: everything but the responses (prompt, reference, principles)."""
    return _group_key(request)
