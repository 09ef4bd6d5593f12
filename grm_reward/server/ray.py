"""A reward fleet on Ray Serve: the same HTTP app in front of many judge replicas (``docs/scaling.md``).

``grm-reward serve --ray`` or ``serve run grm_reward.server.ray:app``. A judge replica is one engine
with its own micro-batcher; requests of one prompt stick to one replica (sticky least-loaded
routing through Ray Serve's request-router API, shared by every ingress replica), and a request
whose replica dies is resent to another. Needs ``pip install 'grm-reward[ray]'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    import ray
    from ray import serve
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
    from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the Ray Serve fleet needs Ray Serve: pip install 'grm-reward[ray]'") from exc

from fastapi import FastAPI

from grm_reward.batching import MicroBatcher, _group_key
from grm_reward.config import GRMConfig, load_config_file
from grm_reward.errors import BackendError, BackendUnavailableError, ConfigError, GRMError
from grm_reward.server.app import create_app
from grm_reward.server.serving import RewardService
from grm_reward.types import Request, RewardResult

__all__ = [
    "FleetBoard",
    "FleetScorer",
    "FleetService",
    "StickyLeastLoadedRouter",
    "affinity_key",
    "app",
    "build_fleet",
    "run_fleet",
]

logger = logging.getLogger("grm_reward.server.ray")

#: Ray namespace of the fleet's shared board (one named actor per application).
NAMESPACE = "grm_reward"
JUDGE_DEPLOYMENT = "GRMJudge"
INGRESS_DEPLOYMENT = "GRMIngress"
#: Seconds between a judge replica's reports (it reports from Serve's health check).
REPORT_PERIOD_S = 2.0
#: A replica whose last report is older than this is not counted as up.
REPORT_STALE_S = 3 * REPORT_PERIOD_S + 1.0
_RETRYABLE = (RayActorError, WorkerCrashedError, ReplicaUnavailableError, DeploymentUnavailableError)


def affinity_key(request: Request) -> str:
    """The routing key of a request: requests the micro-batcher may group share it (same prompt)."""
    return hashlib.sha256(_group_key(request).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class FleetBoard:
    """What the fleet shares (a named Ray actor): prompt -> judge replica, and each replica's last report.

    Plain Python, so the policy is tested without Ray. ``assign`` keeps a key where it is while
    that replica is among the live ones; a new key goes to the least-loaded live replica (queue
    length, then keys held, then a random draw). The map keeps the ``max_keys`` most recent keys.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._owner: OrderedDict[str, str] = OrderedDict()
        self._held: dict[str, int] = {}
        self._reports: dict[str, tuple[float, dict[str, Any]]] = {}

    def assign(self, key: str, loads: Mapping[str, float]) -> str:
        if not loads:
            raise ValueError("no live replica to assign to")
        owner = self._owner.get(key)
        if owner is not None and owner in loads:
            self._owner.move_to_end(key)
            return owner
        if owner is not None:  # its replica died or was scaled away
            self._release(key)
        choice = min(loads, key=lambda r: (loads[r], self._held.get(r, 0), random.random()))
        self._owner[key] = choice
        self._held[choice] = self._held.get(choice, 0) + 1
        while len(self._owner) > self.max_keys:
            self._release(next(iter(self._owner)))
        return choice

    def owner(self, key: str) -> str | None:
        return self._owner.get(key)

    def held(self) -> dict[str, int]:
        return dict(self._held)

    def report(self, replica: str, stats: dict[str, Any]) -> None:
        self._reports[replica] = (time.monotonic(), stats)

    def forget(self, replica: str) -> None:
        self._reports.pop(replica, None)

    def fleet(self, max_age_s: float = REPORT_STALE_S) -> dict[str, dict[str, Any]]:
        """The replicas that reported within ``max_age_s``, with their last report."""
        now = time.monotonic()
        for replica in [r for r, (at, _) in self._reports.items() if now - at > 10 * max_age_s]:
            del self._reports[replica]
        return {r: {**stats, "age_s": now - at} for r, (at, stats) in self._reports.items() if now - at <= max_age_s}

    def _release(self, key: str) -> None:
        replica = self._owner.pop(key)
        self._held[replica] -= 1
        if not self._held[replica]:
            del self._held[replica]


def _board(app_name: str) -> Any:
    """The application's board actor, created by whoever asks first (detached: it outlives replicas)."""
    return (
        ray.remote(FleetBoard)
        .options(
            name=f"fleet-board:{app_name}", namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
            num_cpus=0, max_restarts=-1,
        )
        .remote()
    )


class StickyLeastLoadedRouter(RequestRouter):
    """Ray Serve request router: a new prompt goes to the least-loaded judge replica and stays there.

    The routing key is the request's ``session_id`` (the ingress sets :func:`affinity_key`). Each
    router keeps a local cache; the assignment itself is made by the application's
    :class:`FleetBoard`, so every ingress replica sends a prompt to the same judge replica.
    Requests without a key go to the replica with the shortest queue.
    """

    def initialize_state(self, app_name: str = "grm-reward", cache_size: int = 65_536, **_: Any) -> None:
        self._app_name = app_name
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._assigning: dict[str, asyncio.Future[str]] = {}
        self._board_handle: Any = None
        self._board_failed_at = -1e9

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        key = pending_request.metadata.session_id if pending_request is not None else ""
        if not key or not candidate_replicas:
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        cached = self._cache.get(key)
        if cached is None or cached not in by_id:
            cached = await self._assign(key, candidate_replicas)
        self._cache[key] = cached
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        replica = by_id.get(cached)
        return [[replica]] if replica is not None else [candidate_replicas]

    async def _assign(self, key: str, candidates: list[RunningReplica]) -> str:
        running = self._assigning.get(key)
        if running is not None:  # the other samples of a group arriving together wait for the first
            return await asyncio.shield(running)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._assigning[key] = future
        try:
            loads = await self._loads(candidates)
            choice = await self._ask_board(key, loads)
            future.set_result(choice)
            return choice
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters get it too
            raise
        finally:
            del self._assigning[key]

    async def _loads(self, candidates: list[RunningReplica]) -> dict[str, float]:
        probed = await self._probe_queue_lens(candidates, 0)
        loads = {r.replica_id.unique_id: float(q) for r, q in probed if q is not None}
        return loads or {r.replica_id.unique_id: 0.0 for r in candidates}

    async def _ask_board(self, key: str, loads: dict[str, float]) -> str:
        if time.monotonic() - self._board_failed_at > 5.0:
            try:
                if self._board_handle is None:
                    self._board_handle = _board(self._app_name)
                choice: str = await asyncio.wait_for(self._board_handle.assign.remote(key, loads), timeout=5.0)
                return choice
            except Exception:
                logger.warning("fleet board unreachable; routing by this router's own view for 5 s", exc_info=True)
                self._board_handle = None
                self._board_failed_at = time.monotonic()
        return min(loads, key=lambda r: (loads[r], random.random()))


@dataclass
class _Call:
    """Requests of one affinity key sent to the fleet in one handle call."""

    items: list[tuple[Request, asyncio.Future[RewardResult]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass
class FleetStats:
    """The fleet's batcher counters, summed over live replicas (what ``/metrics`` renders)."""

    queue_depth: int = 0
    in_flight: int = 0
    batches: int = 0
    batched_requests: int = 0


class FleetScorer:
    """The ingress side of the fleet: ``submit`` sends a request to its judge replica through Ray Serve.

    Requests of one prompt submitted in the same loop turn (one body) go in one call, so the
    replica's batcher groups them as a single process would. A call whose replica dies (or cannot
    be reached) is resent, up to ``ray.retries`` times, to the replica the router picks next; after
    that it fails with :class:`BackendUnavailableError`. Judge errors come back as themselves.
    """

    def __init__(self, judge: Any, config: GRMConfig) -> None:
        self.judge = judge
        self.config = config
        self.board: Any = None
        self.stats = FleetStats()
        self.replicas: dict[str, dict[str, Any]] = {}
        self.resent = 0
        self._poller: asyncio.Task[None] | None = None
        self._forming: dict[str, _Call] = {}

    async def submit(self, request: Request) -> RewardResult:
        key = affinity_key(request)
        loop = asyncio.get_running_loop()
        call = self._forming.get(key)
        if call is None:  # requests of one prompt submitted together (one body) travel as one call
            call = self._forming[key] = _Call()
            loop.call_soon(self._launch, key)
        future: asyncio.Future[RewardResult] = loop.create_future()
        call.items.append((request, future))
        try:
            return await future
        except asyncio.CancelledError:
            if call.task is not None and all(f.done() for _, f in call.items):
                call.task.cancel()  # every caller left: stop the judge's work
            raise

    async def probe(self) -> str | None:
        """Ready while at least one judge replica reports in (each replica probes its own judge)."""
        return None if self.replicas else "no judge replica has reported yet"

    def _launch(self, key: str) -> None:
        call = self._forming.pop(key)
        call.task = asyncio.get_running_loop().create_task(self._send(key, call))

    async def _send(self, key: str, call: _Call) -> None:
        try:
            outcomes = await self._remote(key, [request for request, _ in call.items])
            for (_, future), outcome in zip(call.items, outcomes):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except BaseException as exc:
            for _, future in call.items:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else GRMError("the fleet is shutting down"))
            if not isinstance(exc, Exception):
                raise

    async def _remote(self, key: str, requests: list[Request]) -> list[RewardResult | GRMError]:
        handle = self.judge.options(session_id=key)
        attempts = self.config.ray.retries + 1
        for attempt in range(attempts):
            try:
                outcomes: list[RewardResult | GRMError] = await _own_request_id(handle.score.remote, requests)
                return outcomes
            except RayTaskError as exc:
                raise BackendError(f"judge replica failed: {type(exc.cause).__name__}: {exc.cause}") from exc
            except _RETRYABLE as exc:
                if attempt + 1 >= attempts:
                    raise BackendUnavailableError(
                        f"judge replica lost {attempts} times for this request ({type(exc).__name__}); "
                        "the fleet is restarting replicas"
                    ) from exc
                self.resent += len(requests)
                logger.warning("judge replica lost (%s); resending %d requests", type(exc).__name__, len(requests))
                await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def refresh(self) -> None:
        """Read every live replica's last report from the board."""
        if self.board is None:
            self.board = _board(self.config.ray.app_name)
        self.replicas = await self.board.fleet.remote()
        stats = FleetStats()
        for report in self.replicas.values():
            stats.queue_depth += int(report.get("queue_depth", 0))
            stats.in_flight += int(report.get("in_flight", 0))
            stats.batches += int(report.get("batches", 0))
            stats.batched_requests += int(report.get("batched_requests", 0))
        self.stats = stats

    def start(self) -> None:
        async def poll() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception:
                    logger.warning("cannot read the fleet board", exc_info=True)
                    self.board = None
                await asyncio.sleep(1.0)

        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(poll())

    async def aclose(self, *, drain: bool = True) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None


def _own_request_id(call: Any, *args: Any) -> Any:
    """``call(*args)`` with a fresh Serve-internal request id.

    Ray Serve gives every handle call made while serving one HTTP request that request's
    internal id, and a router that places each call by its own key (this one) matches a chosen
    replica to its call by that id: calls fanned out from one body (``/get_reward`` with several
    queries) would share it and all but one would never be placed.
    """
    from ray.serve.context import _get_serve_request_context, _serve_request_context

    variable: Any = _serve_request_context
    token = variable.set(dataclasses.replace(_get_serve_request_context(), _internal_request_id=""))
    try:
        return call(*args)
    finally:
        variable.reset(token)


class FleetService(RewardService):
    """:class:`RewardService` over the fleet: the same protocol; ``/health`` and ``/metrics`` show the replicas."""

    scorer: FleetScorer

    def __init__(self, scorer: FleetScorer, config: GRMConfig) -> None:
        super().__init__(scorer, config)
        self.scorer = scorer

    def fleet(self) -> dict[str, Any]:
        options = self.config.ray
        replicas = self.scorer.replicas
        return {
            "replicas_up": len(replicas),
            "replicas_wanted": options.replicas if options.min_replicas is None else [options.min_replicas, options.max_replicas],
            "requests_resent": self.scorer.resent,
            "replicas": {
                name: {k: report.get(k) for k in ("queue_depth", "in_flight", "submitted", "completed", "failed", "pid")}
                for name, report in sorted(replicas.items())
            },
        }

    def health(self) -> dict[str, Any]:
        answer = super().health()
        fleet = self.fleet()
        answer["status"] = "ok" if fleet["replicas_up"] else "starting"
        answer["fleet"] = fleet
        return answer

    def metrics_text(self) -> str:
        lines = [
            "# HELP grm_fleet_replicas_up Judge replicas that reported in the last "
            f"{REPORT_STALE_S:g} s.",
            "# TYPE grm_fleet_replicas_up gauge",
            f"grm_fleet_replicas_up {len(self.scorer.replicas)}",
            "# HELP grm_fleet_requests_resent_total Requests resent because their judge replica was lost.",
            "# TYPE grm_fleet_requests_resent_total counter",
            f"grm_fleet_requests_resent_total {self.scorer.resent}",
            "# HELP grm_fleet_replica_queue_depth Requests waiting in a judge replica's micro-batcher.",
            "# TYPE grm_fleet_replica_queue_depth gauge",
        ]
        for name, report in sorted(self.scorer.replicas.items()):
            lines.append(f'grm_fleet_replica_queue_depth{{replica="{name}"}} {int(report.get("queue_depth", 0))}')
        lines.append("# HELP grm_fleet_replica_completed_total Requests a judge replica answered.")
        lines.append("# TYPE grm_fleet_replica_completed_total counter")
        for name, report in sorted(self.scorer.replicas.items()):
            lines.append(f'grm_fleet_replica_completed_total{{replica="{name}"}} {int(report.get("completed", 0))}')
        return super().metrics_text() + "\n".join(lines) + "\n"

    async def aclose(self) -> None:
        await self.scorer.aclose(drain=False)


class JudgeReplica:
    """One judge engine with its own micro-batcher (a Ray Serve replica)."""

    def __init__(self, config: GRMConfig) -> None:
        from grm_reward.model import GenerativeRewardModel

        self.config = config
        self.rm = GenerativeRewardModel(config)
        self.rm.load()  # the replica is up once it can judge
        self.batcher = MicroBatcher.from_options(self.rm, config.batching_for("server"))
        self.name = serve.get_replica_context().replica_id.unique_id
        self.board = _board(config.ray.app_name)
        self._report()

    async def score(self, requests: list[Request]) -> list[RewardResult | GRMError]:
        """Each request's result or its judge error (submitted together, so they share a batch window)."""
        outcomes = await asyncio.gather(*(self.batcher.submit(r) for r in requests), return_exceptions=True)
        answers: list[RewardResult | GRMError] = []
        for outcome in outcomes:
            if isinstance(outcome, (RewardResult, GRMError)):
                answers.append(outcome)
            elif isinstance(outcome, Exception):
                logger.error("judge replica failed on a request", exc_info=outcome)
                answers.append(BackendError(f"judge replica failed: {type(outcome).__name__}: {outcome}"))
            else:
                raise outcome
        return answers

    def check_health(self) -> None:
        self._report()  # Ray Serve calls this every REPORT_PERIOD_S

    def stats(self) -> dict[str, Any]:
        s = self.batcher.stats
        return {
            "pid": os.getpid(), "queue_depth": s.queue_depth, "in_flight": s.in_flight, "submitted": s.submitted,
            "completed": s.completed, "failed": s.failed, "batches": s.batches,
            "batched_requests": s.batched_requests, "grouped_requests": s.grouped_requests,
        }

    def _report(self) -> None:
        try:
            self.board.report.remote(self.name, self.stats())
        except Exception:  # the board is bookkeeping: never fail a judge for it
            logger.warning("cannot report to the fleet board", exc_info=True)
            self.board = _board(self.config.ray.app_name)

    async def __del__(self) -> None:
        await self.batcher.aclose(drain=True)
        await self.rm.aclose()


class FleetIngress:
    """The HTTP ingress: today's FastAPI app (:func:`~grm_reward.server.app.create_app`) over a :class:`FleetScorer`."""

    def __init__(self, judge: Any, config: GRMConfig) -> None:
        self.service = FleetService(FleetScorer(judge, config), config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        service = self.service

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            service.scorer.start()
            try:
                yield
            finally:
                await service.aclose()

        return create_app(service, lifespan=lifespan)


def build_fleet(config: GRMConfig) -> Any:
    """The Ray Serve application for ``config`` (judge deployment + HTTP ingress), ready for ``serve.run``."""
    options = config.ray
    scaling: dict[str, Any] = {"num_replicas": options.replicas}
    if options.min_replicas is not None:
        scaling = {
            "autoscaling_config": {
                "min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
                "target_ongoing_requests": options.target_ongoing_requests,
            }
        }
    judge: Any = serve.deployment(
        JudgeReplica,
        name=JUDGE_DEPLOYMENT,
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
        max_ongoing_requests=options.max_ongoing_requests,
        health_check_period_s=REPORT_PERIOD_S,
        request_router_config={
            "request_router_class": f"{__name__}.StickyLeastLoadedRouter",
            "request_router_kwargs": {"app_name": options.app_name},
        },
        **scaling,
    )
    ingress: Any = serve.deployment(
        serve.ingress()(FleetIngress),
        name=INGRESS_DEPLOYMENT,
        num_replicas=options.ingress_replicas,
        ray_actor_options={"num_cpus": options.ingress_num_cpus},
        max_ongoing_requests=max(1000, config.server.max_queries),
    )
    return ingress.bind(judge.bind(config), config)


def app(args: Mapping[str, Any]) -> Any:
    """Application builder for Ray Serve's tools: ``serve run grm_reward.server.ray:app config=judge.yaml ray.replicas=4``.

    ``config`` names a GRMConfig file; every other argument is a GRMConfig field, sections
    dotted (``k=8``, ``ray.replicas=4``, ``openai.base_url=...``), as ``serve deploy``'s ``args:``
    give them too.
    """
    values: dict[str, Any] = {}
    rest = dict(args)
    if "config" in rest:
        values = load_config_file(str(rest.pop("config")))
    for name, value in rest.items():
        section, dot, field = str(name).partition(".")
        if dot:
            if section not in GRMConfig.model_fields:
                raise ConfigError(f"unknown config section {section!r} in application argument {name!r}")
            values.setdefault(section, {})[field] = value
        elif isinstance(value, Mapping) and isinstance(values.get(name), dict):
            values[name] = {**values[name], **value}
        else:
            values[name] = value
    return build_fleet(GRMConfig.build(**values))


def run_fleet(config: GRMConfig, *, stop: threading.Event | None = None) -> int:
    """Start (or join) a Ray cluster, run the fleet on ``server.host:server.port`` until stopped."""
    options = config.ray
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=options.address, include_dashboard=False, namespace=NAMESPACE)
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)} if (
        threading.current_thread() is threading.main_thread()
    ) else {}
    try:
        serve.start(http_options={"host": config.server.host, "port": config.server.port})
        serve.run(build_fleet(config), name=options.app_name, route_prefix="/")
        print(
            f"grm-reward fleet '{options.app_name}' on http://{config.server.host}:{config.server.port} "
            "(OpenRLHF: --reward.remote_url .../get_reward); Ctrl-C stops it",
            flush=True,
        )
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            serve.delete(options.app_name)
            ray.kill(_board(options.app_name))
        finally:
            if started_ray and options.address is None:
                serve.shutdown()  # type: ignore[no-untyped-call]
            if started_ray:
                ray.shutdown()
    return 0
