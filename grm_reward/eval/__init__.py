"""Evaluation harness: benchmark loaders, metrics, Voting@k / MetaRM@k curves, reports.

    grm-reward eval --benchmark rewardbench --data-root DATA -k 8 --limit 50 -o eval-out

The pieces, each usable on its own:

- :mod:`~grm_reward.eval.items`: :class:`EvalItem`, the one item type, and the judge inputs
  ("views") an item becomes under the ``list`` (paper) or ``pairs`` protocol;
- :mod:`~grm_reward.eval.loaders` and :mod:`~grm_reward.eval.benchmarks`: readers for each
  format and the registry of benchmarks (paths, metrics, headline rules);
- :mod:`~grm_reward.eval.metrics`: tie policies, accuracy, RM-Bench's style grid, ROC-AUC;
- :mod:`~grm_reward.eval.scaling`: every k <= K from one pass of K samples per item;
- :mod:`~grm_reward.eval.store`, :mod:`~grm_reward.eval.runner`: the resumable sampling pass
  (:mod:`~grm_reward.eval.runs`: its settings and per-entry state);
- :mod:`~grm_reward.eval.report`: JSON, markdown and plots (matplotlib, imported lazily).

Nothing here imports an engine: the judge is reached only through
:meth:`GenerativeRewardModel.ascore_batch`.
"""

from grm_reward.errors import DataError
from grm_reward.eval.benchmarks import BENCHMARKS, Benchmark, load_benchmark
from grm_reward.eval.items import EvalItem, ItemSamples, item_views
from grm_reward.eval.metrics import roc_auc
from grm_reward.eval.runner import EvalSettings, evaluate
from grm_reward.eval.scaling import ScalingSettings, scaling_curves
from grm_reward.jsonl import LoadIssue

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "DataError",
    "EvalItem",
    "EvalSettings",
    "ItemSamples",
    "LoadIssue",
    "ScalingSettings",
    "evaluate",
    "item_views",
    "load_benchmark",
    "roc_auc",
    "scaling_curves",
]
