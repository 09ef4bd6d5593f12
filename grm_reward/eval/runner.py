"""The evaluation run: load, sample once (resumably), compute the curves, write the report.

The only contact with the judge is :meth:`GenerativeRewardModel.ascore_batch` (any object with
that coroutine will do), so every backend works, and the rewards mean what they mean in
training. Items are sent in chunks; each finished chunk is appended to the sample store at
once, so an interruption loses at most the chunks in flight. A chunk that fails is retried
item by item (:mod:`grm_reward.chunking`); an item that still fails is reported and left out of
the metrics (and tried again by the next run); an error of the run itself stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from grm_reward.chunking import ascore_chunk, raise_run_error
from grm_reward.config import GRMConfig
from grm_reward.errors import BackendProtocolError, InputError
from grm_reward.eval.benchmarks import entry_names, load_benchmark
from grm_reward.eval.items import EvalItem, ItemSamples, item_views, view_request
from grm_reward.eval.items import Protocol as ViewProtocol
from grm_reward.eval.report import build_report, write_outputs
from grm_reward.eval.runs import BenchmarkRun, EvalSettings
from grm_reward.eval.scaling import ScalingSettings, default_ks, scaling_curves
from grm_reward.eval.store import SampleStore, public_settings, sampling_key
from grm_reward.types import RequestLike, RewardResult, Usage

__all__ = ["BenchmarkRun", "EvalSettings", "Scorer", "evaluate", "sample_items"]


class Scorer(Protocol):
    """What the harness needs of a reward model: :meth:`GenerativeRewardModel.ascore_batch`."""

    async def ascore_batch(self, requests: Sequence[RequestLike]) -> list[RewardResult]: ...


Progress = Callable[[str, int], None]

def prepare(config: GRMConfig, settings: EvalSettings) -> list[BenchmarkRun]:
    """Load every benchmark and what the sample store already holds for it."""
    _check_settings(config, settings)
    key = sampling_key(config, settings.protocol)
    header = {"config": public_settings(config), "protocol": settings.protocol}
    runs = []
    for entry, (name, path) in zip(entry_names(settings.benchmarks), settings.benchmarks, strict=True):
        loaded = load_benchmark(
            name, path, data_root=settings.data_root, subsets=settings.subsets, limit=settings.limit, seed=settings.seed
        )
        store = SampleStore(settings.output_dir / "samples", entry, key, {"benchmark": name, "entry": entry, **header})
        if not settings.resume:
            store.reset()
        records, unusable = store.read(loaded.items, lambda item: item_views(item, settings.protocol))
        runs.append(BenchmarkRun(entry, loaded, store, records, resumed=len(records), unusable_lines=unusable))
    return runs


async def sample_items(
    scorer: Scorer,
    run: BenchmarkRun,
    *,
    protocol: ViewProtocol,
    chunk_size: int = 8,
    concurrency: int = 1,
    keep_text: bool = True,
    progress: Progress | None = None,
) -> None:
    """Sample every item ``run`` still lacks, storing each finished chunk at once."""
    todo = run.todo
    chunks = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one_chunk(chunk: list[EvalItem]) -> None:
        async with gate:
            done, errors = await _sample_chunk(scorer, chunk, protocol)
        run.store.append(done, keep_text=keep_text)
        for record in done:  # the texts are on disk now; the metrics need only scores and counts
            run.records[record.item.uid] = _without_texts(record)
        run.errors.update(errors)
        run.sampled += len(done)
        if progress is not None:
            progress(run.name, len(chunk))

    try:
        await asyncio.gather(*(one_chunk(chunk) for chunk in chunks))
    finally:
        run.seconds += time.perf_counter() - started


async def _sample_chunk(
    scorer: Scorer, chunk: list[EvalItem], protocol: ViewProtocol
) -> tuple[list[ItemSamples], dict[str, str]]:
    async def score(items: list[EvalItem]) -> list[ItemSamples]:
        return await _score_items(scorer, items, protocol, time.perf_counter())

    outcomes = await ascore_chunk(score, chunk)
    raise_run_error(outcomes)
    done = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    errors = {item.uid: str(outcome) for item, outcome in zip(chunk, outcomes) if isinstance(outcome, Exception)}
    return done, errors


async def _score_items(
    scorer: Scorer, chunk: list[EvalItem], protocol: ViewProtocol, started: float
) -> list[ItemSamples]:
    views = [item_views(item, protocol) for item in chunk]
    requests = [view_request(item, view) for item, item_views_ in zip(chunk, views, strict=True) for view in item_views_]
    results = await scorer.ascore_batch(requests)
    if len(results) != len(requests):
        raise BackendProtocolError(f"the reward model returned {len(results)} results for {len(requests)} requests")
    seconds = (time.perf_counter() - started) / len(chunk)
    records, cursor = [], 0
    for item, item_views_ in zip(chunk, views, strict=True):
        usage = Usage()
        samples = []
        for _ in item_views_:
            result = results[cursor]
            cursor += 1
            usage.add(result.usage)
            samples.append(list(result.samples))
        records.append(ItemSamples(item, list(item_views_), samples, usage, seconds))
    return records


def _without_texts(record: ItemSamples) -> ItemSamples:
    samples = [[replace(j, text="", critique="", principles=[]) for j in view] for view in record.samples]
    return replace(record, samples=samples)


def evaluate(
    config: GRMConfig,
    settings: EvalSettings,
    *,
    scorer: Scorer | None = None,
    progress_factory: Callable[[list[BenchmarkRun]], Any] | None = None,
) -> dict[str, Any]:
    """Run the evaluation end to end and write its outputs; returns the report (a JSON-ready dict).

    ``scorer`` defaults to a :class:`~grm_reward.GenerativeRewardModel` built from ``config``
    (only if some item still needs samples); one you pass must sample as ``config`` says, since
    the stored samples are keyed by ``config``. ``progress_factory(runs)`` may return a context
    manager with an ``update(benchmark, items)`` method (the CLI's progress bar).
    """
    config = sampling_config(config)
    runs = prepare(config, settings)
    progress = progress_factory(runs) if progress_factory is not None else None
    try:
        if any(run.todo for run in runs):
            asyncio.run(_sample_all(config, settings, runs, scorer, progress))
    finally:
        if progress is not None:
            progress.close()
    adaptive = config.adaptive.enabled
    ks = (config.k,) if adaptive else tuple(settings.ks) if settings.ks else default_ks(config.k)
    scaling = ScalingSettings(
        ks=ks,
        resamples=settings.resamples,
        tie_policy=settings.tie_policy,
        k_meta_ratio=k_meta_ratio(config, settings.k_meta_ratio),
        use_token_scores=config.token_prob,
        score_range=config.score_range,
        seed=settings.seed,
        adaptive=adaptive,
    )
    curves = {run.name: scaling_curves(run.loaded.benchmark, run.ordered_records(), scaling) for run in runs}
    report = build_report(config, settings, scaling, runs, curves)
    write_outputs(report, settings.output_dir, plots=settings.plots)
    return report


def k_meta_ratio(config: GRMConfig, given: float | None) -> float:
    """The share of the k samples MetaRM@k keeps: ``given``, else the config's ``k_meta / k`` when a
    ``k_meta`` is set (so MetaRM@K votes like the reward model itself), else the paper's 1/2."""
    if given is not None:
        return given
    k_meta = getattr(config, "k_meta", None)  # a GRMConfig field once the meta RM is configured there
    return min(1.0, k_meta / config.k) if k_meta else 0.5


def sampling_config(config: GRMConfig) -> GRMConfig:
    """The config of the sampling pass: an unreadable item must not stop the run (it is scored as a tie)."""
    if config.on_all_invalid == "raise":
        return config.updated(on_all_invalid="failure_reward")
    return config


async def _sample_all(
    config: GRMConfig,
    settings: EvalSettings,
    runs: list[BenchmarkRun],
    scorer: Scorer | None,
    progress: Any,
) -> None:
    own = None
    if scorer is None:
        from grm_reward.model import GenerativeRewardModel

        scorer = own = GenerativeRewardModel(config)
    try:
        for run in runs:
            if not run.todo:
                continue
            await sample_items(
                scorer,
                run,
                protocol=settings.protocol,
                chunk_size=settings.chunk_size,
                concurrency=settings.concurrency,
                keep_text=settings.keep_text,
                progress=progress.update if progress is not None else None,
            )
    finally:
        if own is not None:
            await own.aclose()


def _check_settings(config: GRMConfig, settings: EvalSettings) -> None:
    if not settings.benchmarks:
        raise InputError("name at least one benchmark")
    if settings.chunk_size < 1 or settings.concurrency < 1:
        raise InputError("chunk size and concurrency must be at least 1")
    if settings.ks:
        too_big = [k for k in settings.ks if k > config.k]
        if too_big or any(k < 1 for k in settings.ks):
            raise InputError(
                f"k values must lie in 1..K where K is the samples per item (-k {config.k}); got {list(settings.ks)}"
            )
    if config.adaptive.enabled and settings.ks and list(settings.ks) != [config.k]:
        raise InputError(
            f"with adaptive k each item votes with the samples it drew (up to {config.k}): the curve has the one "
            f"point k={config.k}; run without --adaptive for Voting@k at {list(settings.ks)}"
        )
    if settings.resamples < 1:
        raise InputError("resamples must be at least 1")
    if settings.k_meta_ratio is not None and not 0.0 < settings.k_meta_ratio <= 1.0:
        raise InputError(f"k_meta ratio must be in (0, 1], got {settings.k_meta_ratio}")
