"""The report of a run: a JSON-ready dict, a markdown rendering of it, and PNG plots.

:func:`build_report` is pure (the dict); :func:`render_markdown` and :func:`write_plots` read
only that dict, so a saved ``report.json`` can be rendered again. matplotlib is imported only by
:func:`write_plots` (``pip install 'grm-reward[eval]'``).
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grm_reward.config import GRMConfig
from grm_reward.embedded import EMBEDDED_MODEL_LABEL
from grm_reward.eval.items import ItemSamples
from grm_reward.eval.metrics import STYLE_CELLS

if TYPE_CHECKING:
    from grm_reward.eval.runs import BenchmarkRun, EvalSettings
    from grm_reward.eval.scaling import Method, ScalingSettings, Spread

__all__ = ["build_report", "pass_stats", "render_markdown", "write_outputs", "write_plots"]

_METHOD_LABEL = {"voting": "Voting", "meta_rm": "MetaRM"}
_MAX_LISTED = 20  # issues / errors listed in full; the rest are counted
_INSTALL_HINT = "pip install 'grm-reward[eval]'"


def pass_stats(records: Sequence[ItemSamples]) -> dict[str, Any]:
    """What the sampling pass produced: sample validity, reasons, tokens per item."""
    samples = [j for r in records for view in r.samples for j in view]
    total = len(samples)
    invalid = [j for j in samples if not j.valid]
    forced = sum(1 for j in samples if j.valid and j.forced)
    reasons = Counter((j.reason or "?").split(":")[0] for j in invalid)
    without_vote = sum(1 for r in records for view in r.samples if not any(j.valid for j in view))
    requests = sum(len(r.samples) for r in records)
    items = len(records)
    prompt = sum(r.usage.prompt_tokens for r in records)
    completion = sum(r.usage.completion_tokens for r in records)
    share = (lambda x: x / total) if total else (lambda x: 0.0)
    return {
        "samples": {
            "total": total,
            "valid": total - len(invalid),
            "invalid": len(invalid),
            "forced": forced,
            "invalid_share": share(len(invalid)),
            "forced_share": share(forced),
            "invalid_reasons": dict(reasons.most_common()),
            "requests_without_readable_sample": without_vote,
            "drawn_per_request": total / requests if requests else 0.0,
        },
        "tokens": {
            "prompt_total": prompt,
            "completion_total": completion,
            "prompt_per_item": prompt / items if items else 0.0,
            "completion_per_item": completion / items if items else 0.0,
            "completion_per_sample": sum(j.completion_tokens for j in samples) / total if total else 0.0,
        },
        # wall time of the judge calls, shared out over the items of each chunk, over every run that sampled them
        "judge_seconds": {
            "total": sum(r.seconds for r in records),
            "per_item": sum(r.seconds for r in records) / items if items else 0.0,
        },
    }


def build_report(
    config: GRMConfig,
    settings: EvalSettings,
    scaling: ScalingSettings,
    runs: Sequence[BenchmarkRun],
    curves: Mapping[str, Mapping[Method, Mapping[int, Mapping[str, Spread]]]],
) -> dict[str, Any]:
    """The report of a run, ready for ``json.dump``; ``curves`` is keyed by entry (:attr:`BenchmarkRun.name`)."""
    from grm_reward import __version__
    from grm_reward.eval.store import public_settings, sampling_key

    benchmarks = []
    for run in runs:
        bench = run.loaded.benchmark
        records = run.ordered_records()
        entry: dict[str, Any] = {
            "name": run.name,
            "benchmark": bench.name,
            "title": _entry_title(run),
            "metric": bench.metric,
            "headline": bench.headline,
            "path": str(run.loaded.path),
            "items_selected": len(run.loaded.items),
            "items_scored": len(records),
            "items_in_data": run.loaded.total,
            "items_sampled_now": run.sampled,
            "items_resumed": run.resumed,
            "sampling_seconds_now": round(run.seconds, 3),
            "samples_file": str(run.store.path),
            "counts": _counts(records),
            "curves": {
                method: {str(k): {key: _spread_dict(s) for key, s in metrics.items()} for k, metrics in by_k.items()}
                for method, by_k in curves.get(run.name, {}).items()
            },
            "load_issues": _listed([str(i) for i in run.loaded.issues]),
            "errors": _listed([f"{uid}: {message}" for uid, message in run.errors.items()]),
            "notes": [*bench.notes, *run.loaded.notes],
            **pass_stats(records),
        }
        if not run.loaded.items:
            entry["notes"].append("no items selected: check --subset (it matches subset or section names)")
        elif records and bench.headline_sections and not set(bench.headline_sections) & {r.item.section for r in records}:
            entry["notes"].append(
                f"no {bench.headline} figure: none of the items falls in its sections "
                f"({', '.join(bench.headline_sections)}); see the section rows"
            )
        if run.unusable_lines:
            entry["notes"].append(f"{run.unusable_lines} stored lines were unusable (cut short or stale) and resampled")
        if bench.metric == "accuracy" and records:
            entry["item_stderr"] = _item_stderr(entry["curves"], len(records))
        benchmarks.append(entry)
    notes = []
    embedded = config.model is None and config.backend == "transformers"
    if embedded:
        notes.append(
            "Judge: the embedded SmolLM2-135M-Instruct. These figures check the machinery (loading, sampling, "
            "voting, metrics); they say nothing about judging quality."
        )
    return {
        "grm_reward_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "judge": {
            "model": EMBEDDED_MODEL_LABEL if embedded else config.model or "(chosen by the backend)",
            "backend": config.backend,
        },
        "k_max": config.k,
        "adaptive": config.adaptive.enabled,
        "temperature": config.effective_temperature,
        "ks": list(scaling.ks),
        "resamples": scaling.resamples,
        "tie_policy": scaling.tie_policy,
        "protocol": settings.protocol,
        "k_meta_ratio": scaling.k_meta_ratio,
        "vote_on_token_scores": scaling.use_token_scores,
        "eval_seed": scaling.seed,
        "subsets": list(settings.subsets),
        "limit": settings.limit,
        "sampling_key": sampling_key(config, settings.protocol),
        "config": public_settings(config),
        "notes": notes,
        "benchmarks": benchmarks,
    }


def _entry_title(run: BenchmarkRun) -> str:
    """The benchmark's title, and for an entry named after its file (``pairwise:a``), the file."""
    bench = run.loaded.benchmark
    if run.name == bench.name:
        return bench.title
    _, hash_, copy = run.name.rpartition("#")
    return f"{bench.title} · {run.loaded.path.name}" + (f" #{copy}" if hash_ else "")


def _counts(records: Sequence[ItemSamples]) -> dict[str, dict[str, int]]:
    sections = Counter(r.item.section for r in records)
    subsets = Counter(r.item.subset for r in records)
    return {"sections": dict(sorted(sections.items())), "subsets": dict(sorted(subsets.items()))}


def _spread_dict(spread: Spread) -> dict[str, float]:
    return {"mean": spread.mean, "std": spread.std, "min": spread.min, "max": spread.max, "rounds": spread.rounds}


def _listed(lines: Sequence[str]) -> dict[str, Any]:
    return {"count": len(lines), "first": list(lines[:_MAX_LISTED])}


def _item_stderr(curves: Mapping[str, Any], items: int) -> float | None:
    """Binomial standard error of the overall accuracy at the largest k (how much the item sample alone moves it)."""
    voting = curves.get("voting") or {}
    if not voting:
        return None
    largest = voting[max(voting, key=int)]
    if "overall" not in largest:
        return None
    p = largest["overall"]["mean"]
    return math.sqrt(max(p * (1 - p), 0.0) / items)


# --- markdown --------------------------------------------------------------------------------


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown tables (percentages: mean ± std over resampling rounds)."""
    lines = ["# grm-reward eval report", ""]
    judge = report["judge"]
    lines.append(
        f"Judge `{judge['model']}` via `{judge['backend']}` · K = {report['k_max']} samples per item at temperature "
        f"{report['temperature']} · protocol `{report['protocol']}` · ties `{report['tie_policy']}` · "
        f"{report['resamples']} resampling rounds · k_meta = max(1, ⌊{report['k_meta_ratio']}·k⌋)"
    )
    if report.get("adaptive"):
        drawn = ", ".join(f"{_bench_label(b)} {b['samples']['drawn_per_request']:.2f}" for b in report["benchmarks"])
        lines += ["", f"Adaptive k (at most K per request; docs/scoring.md): samples drawn per request: {drawn}"]
    lines.append("")
    for note in report["notes"]:
        lines += [f"> **Note.** {note}", ""]
    columns = _columns(report)
    lines += ["## Summary", ""]
    lines.append("| benchmark | metric | items | " + " | ".join(label for label, _, _ in columns) + " |")
    lines.append("|---|---|---:|" + "---:|" * len(columns))
    for bench in report["benchmarks"]:
        cells = [_cell(bench, method, k, "headline") for _, method, k in columns]
        lines.append(
            f"| {_bench_label(bench)} | {_metric_name(bench)} | {bench['items_scored']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Percentages; mean ± std over resampling rounds (each round draws a k-subset of the K samples per item "
        "and breaks ties by the tie policy). The std is not a confidence interval over items.",
        "",
    ]
    for bench in report["benchmarks"]:
        lines += _benchmark_section(bench, columns)
    return "\n".join(lines).rstrip() + "\n"


def _columns(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    methods = ["voting"] + (["meta_rm"] if any("meta_rm" in b["curves"] for b in report["benchmarks"]) else [])
    return [(f"{_METHOD_LABEL[m]}@{k}", m, str(k)) for m in methods for k in report["ks"]]


def _bench_label(bench: Mapping[str, Any]) -> str:
    title, headline = bench["title"], bench["headline"]
    return title if headline.lower() in title.lower() or headline == "accuracy" else f"{title} ({headline})"


def _metric_name(bench: Mapping[str, Any]) -> str:
    return "ROC-AUC" if bench["metric"] == "roc_auc" else "accuracy"


def _cell(bench: Mapping[str, Any], method: str, k: str, key: str) -> str:
    spread = bench["curves"].get(method, {}).get(k, {}).get(key)
    if spread is None:
        return "–"
    return f"{100 * spread['mean']:.1f} ± {100 * spread['std']:.1f}"


def _benchmark_section(bench: Mapping[str, Any], columns: list[tuple[str, str, str]]) -> list[str]:
    lines = [f"## {bench['title']}", ""]
    lines.append(
        f"`{bench['path']}` · {bench['items_scored']} items scored of {bench['items_selected']} selected "
        f"({bench['items_in_data']} in the data; {bench['items_resumed']} reused from earlier runs, "
        f"{bench['items_sampled_now']} sampled now in {bench['sampling_seconds_now']:.1f} s)"
    )
    lines.append("")
    header = "| | items | " + " | ".join(label for label, _, _ in columns) + " |"
    rule = "|---|---:|" + "---:|" * len(columns)
    counts = bench["counts"]
    rows = [(f"**{bench['headline']}**", "", "headline"), ("all items", str(bench["items_scored"]), "overall")]
    rows += [(f"section {s}", str(n), f"section:{s}") for s, n in counts["sections"].items()]
    lines += [header, rule]
    for label, n, key in rows:
        lines.append(f"| {label} | {n} | " + " | ".join(_cell(bench, m, k, key) for _, m, k in columns) + " |")
    present = {key for by_k in bench["curves"].values() for metrics in by_k.values() for key in metrics}
    style_keys = [f"style:{group}{cell}" for group in ["", *(f"{s}:" for s in counts["sections"])]
                  for cell in STYLE_CELLS if f"style:{group}{cell}" in present]
    if style_keys:
        lines += ["", "RM-Bench style grid (hard: chosen less styled than rejected; easy: more):", "", header, rule]
        for key in style_keys:
            lines.append(f"| {key.removeprefix('style:')} | | " + " | ".join(_cell(bench, m, k, key) for _, m, k in columns) + " |")
    if len(counts["subsets"]) > 1:
        lines += ["", "<details><summary>Subsets</summary>", "", header, rule]
        for subset, n in counts["subsets"].items():
            key = f"subset:{subset}"
            lines.append(f"| {subset} | {n} | " + " | ".join(_cell(bench, m, k, key) for _, m, k in columns) + " |")
        lines += ["", "</details>"]
    samples, tokens = bench["samples"], bench["tokens"]
    reasons = ", ".join(f"{code} {count}" for code, count in samples["invalid_reasons"].items()) or "none"
    lines += [
        "",
        f"Samples: {samples['total']} judged · invalid {100 * samples['invalid_share']:.1f}% ({reasons}) · "
        f"forced {100 * samples['forced_share']:.1f}% · judge inputs with no readable sample: "
        f"{samples['requests_without_readable_sample']} (scored as ties).",
        f"Judge tokens per item: {tokens['prompt_per_item']:.0f} prompt, {tokens['completion_per_item']:.0f} "
        f"completion ({tokens['completion_per_sample']:.1f} per sample); judge time {bench['judge_seconds']['per_item']:.1f} s "
        "per item (wall, summed over the runs that sampled them).",
    ]
    if bench.get("item_stderr") is not None:
        lines.append(
            f"Item sampling error of the overall accuracy at the largest k: ± {100 * bench['item_stderr']:.1f} points "
            "(one standard error over the items)."
        )
    for title, block in (("Rows not loaded", bench["load_issues"]), ("Items that failed", bench["errors"])):
        if block["count"]:
            lines += ["", f"{title}: {block['count']}", ""]
            lines += [f"- {line}" for line in block["first"]]
            if block["count"] > len(block["first"]):
                lines.append(f"- ... {block['count'] - len(block['first'])} more")
    for note in bench["notes"]:
        lines += ["", f"Note: {note}"]
    lines.append("")
    return lines


# --- plots -------------------------------------------------------------------------------------


def write_plots(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """Accuracy vs k per benchmark, invalid-sample share, and judge tokens per item, as PNG files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plots need matplotlib: {_INSTALL_HINT}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    benches = [b for b in report["benchmarks"] if _has_headline(b)]
    written: list[Path] = []
    if benches:
        cols = min(3, len(benches))
        rows = math.ceil(len(benches) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, layout="constrained")
        for ax, bench in zip(axes.flat, benches, strict=False):
            for method, style in (("voting", "-o"), ("meta_rm", "--s")):
                by_k = bench["curves"].get(method)
                if not by_k:
                    continue
                ks = sorted(int(k) for k in by_k if "headline" in by_k[k])
                if not ks:
                    continue
                mean = [100 * by_k[str(k)]["headline"]["mean"] for k in ks]
                std = [100 * by_k[str(k)]["headline"]["std"] for k in ks]
                ax.plot(ks, mean, style, label=f"{_METHOD_LABEL[method]}@k")
                ax.fill_between(ks, [m - s for m, s in zip(mean, std, strict=True)], [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2)
                ax.set_xscale("log", base=2)
                ax.set_xticks(ks, [str(k) for k in ks])
            ax.set_title(_bench_label(bench), fontsize=10)
            ax.set_xlabel("k (judge samples voted)")
            ax.set_ylabel(f"{_metric_name(bench)} (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(benches):]:
            ax.set_visible(False)
        fig.suptitle(f"grm-reward eval · {report['judge']['model']} · K={report['k_max']}", fontsize=11)
        written.append(_save(fig, folder / "accuracy_vs_k.png", plt))

    names = [b["name"] for b in report["benchmarks"]]
    if names:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 2), 3.4), layout="constrained")
        invalid = [100 * b["samples"]["invalid_share"] for b in report["benchmarks"]]
        forced = [100 * b["samples"]["forced_share"] for b in report["benchmarks"]]
        x = list(range(len(names)))
        for offset, values, label in ((-0.2, invalid, "invalid (abstained)"), (0.2, forced, "forced (format guarantee)")):
            bars = ax.bar([i + offset for i in x], values, width=0.4, label=label)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, names)
        ax.set_ylabel("share of samples (%)")
        ax.set_ylim(0, 110)
        ax.set_title("Judge samples without a readable score block", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        written.append(_save(fig, folder / "invalid_share.png", plt))

        fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 2), 3.4), layout="constrained")
        prompt = [b["tokens"]["prompt_per_item"] for b in report["benchmarks"]]
        completion = [b["tokens"]["completion_per_item"] for b in report["benchmarks"]]
        for offset, values, label in ((-0.2, prompt, "prompt tokens"), (0.2, completion, "completion tokens")):
            bars = ax.bar([i + offset for i in x], values, width=0.4, label=label)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, names)
        ax.set_ylabel(f"tokens per item (K={report['k_max']})")
        ax.set_title("Judge tokens per item, one sampling pass", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        written.append(_save(fig, folder / "tokens_per_item.png", plt))
    return written


def _has_headline(bench: Mapping[str, Any]) -> bool:
    return any("headline" in metrics for by_k in bench["curves"].values() for metrics in by_k.values())


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``plots/*.png`` under ``output_dir``; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Any] = {"json": str(output_dir / "report.json"), "markdown": str(output_dir / "report.md")}
    if plots:
        try:
            outputs["plots"] = [str(p) for p in write_plots(report, output_dir / "plots")]
        except ImportError as exc:
            outputs["plots"] = []
            print(f"grm-reward: no plots written ({exc})", file=sys.stderr)
    report["outputs"] = outputs
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (output_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return outputs
