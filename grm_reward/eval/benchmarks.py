"""The benchmarks ``grm-reward eval`` knows: where their files are, how they are read and scored.

Each :class:`Benchmark` names its reader, its default location under a data root laid out
like the project's shared data folder (``$GRM_REWARD_DATA``, see ``docs/evaluation.md``), its
metric, and how its headline number is formed:

- accuracy benchmarks: the mean of the *headline sections'* scores; a section's score is the
  mean of its subsets' accuracies weighted by ``subset_weights`` (RewardBench's official
  counts) or, by default, by the number of items (i.e. accuracy over the section's items);
- ROC-AUC benchmarks: the AUC over all items pooled.
"""

from __future__ import annotations

import fnmatch
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from grm_reward.errors import DataError, InputError
from grm_reward.eval import loaders
from grm_reward.eval.items import EvalItem
from grm_reward.eval.loaders import Loaded
from grm_reward.jsonl import LoadIssue

__all__ = [
    "BENCHMARKS",
    "DATA_ENV",
    "Benchmark",
    "LoadedBenchmark",
    "default_data_root",
    "entry_names",
    "load_benchmark",
    "parse_benchmark_arg",
    "select_items",
]

#: Environment variable naming the data root (a folder laid out like ``../shared/data``).
DATA_ENV = "GRM_REWARD_DATA"

Metric = Literal["accuracy", "roc_auc"]


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark is found, read and summarised."""

    name: str
    title: str
    load: Callable[[Path], Loaded]
    default_path: str | None
    metric: Metric = "accuracy"
    headline: str = "accuracy"
    headline_sections: tuple[str, ...] | None = None
    subset_weights: Mapping[str, int] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "rewardbench",
            "RewardBench v1",
            loaders.load_rewardbench,
            "rewardbench_partial/rewardbench_v1_partial.jsonl",
            headline="RB",
            headline_sections=tuple(loaders.REWARDBENCH_SECTIONS),
            subset_weights=loaders.REWARDBENCH_EXAMPLE_COUNTS,
            notes=("RB = mean of the Chat, Chat Hard, Safety and Reasoning scores present; prior sets excluded.",),
        ),
        Benchmark(
            "rmb",
            "RMB (best-of-N and pairwise)",
            loaders.load_rmb,
            "rmb",
            headline="RMB",
            headline_sections=("Help-BoN", "Help-Pair", "Harm-BoN", "Harm-Pair"),
            notes=(
                "RMB = mean of Help-BoN, Help-Pair, Harm-BoN, Harm-Pair. BoN lists are judged as one input "
                "(paper); RMB's own rule for baselines is all n-1 pairs, each won by the best: --protocol pairs.",
            ),
        ),
        Benchmark("rmb-bon", "RMB best-of-N", loaders.load_rmb, "rmb/rmb_bon.jsonl.gz", headline="RMB-BoN",
                  headline_sections=("Help-BoN", "Harm-BoN")),
        Benchmark("rmb-pairwise", "RMB pairwise", loaders.load_rmb, "rmb/rmb_pairwise.jsonl.gz",
                  headline="RMB-Pair", headline_sections=("Help-Pair", "Harm-Pair")),
        Benchmark(
            "rmbench",
            "RM-Bench",
            loaders.load_rmbench,
            "rmbench",
            headline="RM-Bench",
            headline_sections=("Chat", "Math", "Code", "Safety"),
            notes=("Each item is a 3x3 grid of chosen-vs-rejected style variants: hard = chosen less styled "
                   "than rejected (upper right), normal = same style, easy = chosen more styled.",),
        ),
        Benchmark("llmbar", "LLMBar", loaders.load_llmbar, "llmbar", headline="LLMBar",
                  headline_sections=("Natural", "Adversarial")),
        Benchmark("xstest", "XSTest (multi-response)", loaders.load_xstest, "xstest", headline="XSTest",
                  headline_sections=("should-respond", "should-refuse")),
        Benchmark("realmistake", "ReaLMistake", loaders.load_realmistake, "realmistake/realmistake_data.zip",
                  metric="roc_auc", headline="ROC-AUC"),
        Benchmark("pairwise", "pairwise JSONL", loaders.load_pairwise, None),
        Benchmark("bon", "best-of-N JSONL", loaders.load_bon, None),
    )
}


@dataclass
class LoadedBenchmark:
    """A benchmark's items after selection, with what loading found."""

    benchmark: Benchmark
    path: Path
    items: list[EvalItem]
    total: int
    issues: list[LoadIssue]
    notes: list[str]


def default_data_root() -> Path | None:
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def parse_benchmark_arg(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=PATH``.

    >>> parse_benchmark_arg("pairwise=my/pairs.jsonl")
    ('pairwise', 'my/pairs.jsonl')
    """
    name, sep, path = text.partition("=")
    name = name.strip()
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return name, (path.strip() or None) if sep else None


def entry_names(entries: Sequence[tuple[str, str | None]]) -> list[str]:
    """A unique name per ``--benchmark`` entry: ``NAME``, or ``NAME:<file stem>`` for ``NAME=PATH``.

    Two entries whose files share a stem get ``#2``, ``#3``...; the same benchmark twice is refused.

    >>> entry_names([("rewardbench", None), ("pairwise", "x/a.jsonl"), ("pairwise", "y/b.jsonl.gz"), ("pairwise", "z/a.jsonl")])
    ['rewardbench', 'pairwise:a', 'pairwise:b', 'pairwise:a#2']
    """
    names: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    for name, path in entries:
        where = str(Path(path).expanduser().resolve()) if path is not None else None
        if (name, where) in seen:
            raise InputError(f"benchmark {name}{'=' + str(path) if path else ''} is given twice")
        seen.add((name, where))
        base = name if path is None else f"{name}:{_stem(Path(path))}"
        entry, count = base, 1
        while entry in names:
            count += 1
            entry = f"{base}#{count}"
        names.append(entry)
    return names


def _stem(path: Path) -> str:
    """A file's name without its data suffixes (``a.jsonl.gz`` -> ``a``); a folder's name."""
    name = path.name or str(path)
    for suffix in (".gz", ".zip", ".jsonl", ".json", ".csv"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    *,
    data_root: str | Path | None = None,
    subsets: Sequence[str] = (),
    limit: int | None = None,
    seed: int = 0,
) -> LoadedBenchmark:
    """Read a benchmark, then keep the items ``subsets`` and ``limit`` select (see :func:`select_items`)."""
    benchmark = BENCHMARKS[name]
    if path is None:
        root = Path(data_root).expanduser() if data_root is not None else default_data_root()
        if benchmark.default_path is None:
            raise DataError(f"benchmark {name!r} reads your own file: give it as --benchmark {name}=PATH")
        if root is None:
            raise DataError(
                f"where is {benchmark.title}? Give --benchmark {name}=PATH, or a data root with --data-root "
                f"or ${DATA_ENV} (a folder holding {benchmark.default_path})"
            )
        path = root / benchmark.default_path
    path = Path(path).expanduser()
    loaded = benchmark.load(path)
    items = select_items(loaded.items, subsets=subsets, limit=limit, seed=seed)
    return LoadedBenchmark(benchmark, path, items, len(loaded.items), loaded.issues, loaded.notes)


def select_items(
    items: Sequence[EvalItem], *, subsets: Sequence[str] = (), limit: int | None = None, seed: int = 0
) -> list[EvalItem]:
    """Items whose subset or section matches one of ``subsets`` (shell patterns), then ``limit`` of them.

    ``limit`` keeps a seeded random sample, in dataset order, so a quick run covers every
    subset rather than the first one, and the same command always picks the same items.

    >>> from grm_reward.eval.items import EvalItem
    >>> pool = [EvalItem(str(i), "q", ("a", "b"), "best", "s" + str(i % 2), "S", good=frozenset({0})) for i in range(6)]
    >>> [i.uid for i in select_items(pool, subsets=["s1"])]
    ['1', '3', '5']
    >>> len(select_items(pool, limit=4))
    4
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    chosen = list(items)
    if subsets:
        chosen = [
            item for item in chosen
            if any(fnmatch.fnmatchcase(item.subset, p) or fnmatch.fnmatchcase(item.section, p) for p in subsets)
        ]
    if limit is not None and limit < len(chosen):
        keep = set(random.Random(f"grm-reward-limit|{seed}").sample(range(len(chosen)), limit))
        chosen = [item for i, item in enumerate(chosen) if i in keep]
    return chosen
