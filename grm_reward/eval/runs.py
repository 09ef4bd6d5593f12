"""What an evaluation run is made of: its settings, and the state of each benchmark entry.

Plain data shared by :mod:`~grm_reward.eval.runner` (which fills it) and
:mod:`~grm_reward.eval.report` (which reads it). Each ``--benchmark`` entry is one
:class:`BenchmarkRun`, named by :func:`~grm_reward.eval.benchmarks.entry_names`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grm_reward.eval.benchmarks import LoadedBenchmark
from grm_reward.eval.items import EvalItem, ItemSamples
from grm_reward.eval.items import Protocol as ViewProtocol
from grm_reward.eval.metrics import TiePolicy
from grm_reward.eval.store import SampleStore

__all__ = ["BenchmarkRun", "EvalSettings"]


@dataclass(frozen=True)
class EvalSettings:
    """Everything about a run that is not the judge's GRMConfig."""

    benchmarks: Sequence[tuple[str, str | None]]
    output_dir: Path
    data_root: Path | None = None
    subsets: Sequence[str] = ()
    limit: int | None = None
    ks: Sequence[int] | None = None
    resamples: int = 32
    tie_policy: TiePolicy = "random"
    protocol: ViewProtocol = "list"
    k_meta_ratio: float | None = None
    chunk_size: int = 8
    concurrency: int = 1
    resume: bool = True
    keep_text: bool = True
    plots: bool = True
    seed: int = 0


@dataclass
class BenchmarkRun:
    """One benchmark entry's part of a run. ``name`` is the entry's own name (``pairwise:a`` for
    ``-b pairwise=a.jsonl``): the report, the curves and the sample store are keyed by it."""

    name: str
    loaded: LoadedBenchmark
    store: SampleStore
    records: dict[str, ItemSamples] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    resumed: int = 0
    unusable_lines: int = 0
    sampled: int = 0
    seconds: float = 0.0

    @property
    def todo(self) -> list[EvalItem]:
        return [item for item in self.loaded.items if item.uid not in self.records]

    def ordered_records(self) -> list[ItemSamples]:
        return [self.records[item.uid] for item in self.loaded.items if item.uid in self.records]
