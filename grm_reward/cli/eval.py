"""``grm-reward eval --benchmark NAME[=PATH] ... [-k K] [--limit N] [-o DIR]``

Samples K judgements per item once, then reports Voting@k (and MetaRM@k when the samples carry
meta scores) for every k in ``--k-values``, with per-section and per-subset scores, as
``report.json``, ``report.md`` and ``plots/*.png`` under the output folder. Re-running the same
command resumes: items already sampled with the same settings are not sampled again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grm_reward.cli.options import add_config_arguments, config_from_args
from grm_reward.errors import InputError

__all__ = ["register"]


def _k_values(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected integers, e.g. 1,2,4,8") from exc
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("k values must be positive integers, e.g. 1,2,4,8")
    return values


def _benchmark_args(values: Sequence[str]) -> list[tuple[str, str | None]]:
    from grm_reward.eval.benchmarks import parse_benchmark_arg

    parsed: list[tuple[str, str | None]] = []
    for value in values:
        parts = [value] if "=" in value else [p for p in value.split(",") if p.strip()]
        parsed.extend(parse_benchmark_arg(part) for part in parts)
    return parsed


class _ProgressBar:
    """One tqdm bar over every item still to sample, with an ETA."""

    def __init__(self, runs: list[Any], quiet: bool) -> None:
        from tqdm import tqdm

        total = sum(len(run.todo) for run in runs)
        self.bar = tqdm(total=total, desc="sampling", unit="item", disable=quiet or None, file=sys.stderr)

    def update(self, benchmark: str, items: int) -> None:
        self.bar.set_postfix_str(benchmark, refresh=False)
        self.bar.update(items)

    def close(self) -> None:
        self.bar.close()


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written under ``folder`` (made if missing), or None."""
    try:
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def _list_benchmarks() -> int:
    from grm_reward.eval.benchmarks import BENCHMARKS, DATA_ENV

    print(f"{'name':<14} {'metric':<9} {'default path (under --data-root or $' + DATA_ENV + ')'}")
    for bench in BENCHMARKS.values():
        where = bench.default_path or "(your file: --benchmark NAME=PATH)"
        print(f"{bench.name:<14} {bench.metric:<9} {where}")
    return 0


def _adaptive_target_given(args: argparse.Namespace) -> bool:
    """Whether --adaptive-target or the config file chose what adaptive k stops for."""
    if hasattr(args, "adaptive__target"):
        return True
    if getattr(args, "config", None):
        from grm_reward.config import load_config_file

        section = load_config_file(args.config).get("adaptive")
        return isinstance(section, dict) and "target" in section
    return False


def _cmd_eval(args: argparse.Namespace) -> int:
    from grm_reward.eval.report import render_markdown
    from grm_reward.eval.runner import EvalSettings, evaluate

    if args.list_benchmarks:
        return _list_benchmarks()
    if not args.benchmark:
        print("grm-reward: name a benchmark with --benchmark (see --list-benchmarks)", file=sys.stderr)
        return 2
    try:
        benchmarks = _benchmark_args(args.benchmark)
    except InputError as exc:
        print(f"grm-reward: {exc}", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if config.adaptive.enabled and not _adaptive_target_given(args):
        config = config.updated(adaptive={"target": "best"})  # evaluation picks the best: stop when it is settled
    settings = EvalSettings(
        benchmarks=benchmarks,
        output_dir=Path(args.output_dir),
        data_root=Path(args.data_root) if args.data_root else None,
        subsets=[s for value in args.subset or [] for s in value.split(",") if s],
        limit=args.limit,
        ks=args.k_values,
        resamples=args.resamples,
        tie_policy=args.tie_policy,
        protocol=args.protocol,
        k_meta_ratio=args.k_meta_ratio,
        chunk_size=args.chunk_size,
        concurrency=args.concurrency,
        resume=args.resume,
        keep_text=args.keep_text,
        plots=args.plots,
        seed=args.eval_seed,
    )

    problem = _unwritable(settings.output_dir)
    if problem is not None:  # before any judging: the sample store was first written after a judged chunk
        print(f"grm-reward: cannot write to the output directory {settings.output_dir}: {problem}", file=sys.stderr)
        return 2

    def progress(runs: list[Any]) -> _ProgressBar:
        if not args.quiet:
            for run in runs:
                loaded = run.loaded
                print(
                    f"{run.name}: {len(loaded.items)} items selected of {loaded.total}, "
                    f"{run.resumed} already sampled, {len(run.todo)} to sample",
                    file=sys.stderr,
                )
        return _ProgressBar(runs, args.quiet)

    try:
        report = evaluate(config, settings, progress_factory=progress)
    except KeyboardInterrupt:
        print(
            f"grm-reward: interrupted; finished items are stored under {settings.output_dir / 'samples'}: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:  # a full disk mid-run: the items stored so far are kept, the same command resumes
        where = exc.filename or settings.output_dir
        print(f"grm-reward: cannot write the results: {exc.strerror or exc} ({where})", file=sys.stderr)
        return 2
    failed = 0
    for bench in report["benchmarks"]:
        for label, block in (("rows not loaded", bench["load_issues"]), ("items failed", bench["errors"])):
            if block["count"]:
                print(f"grm-reward: {bench['name']}: {block['count']} {label}, e.g. {block['first'][0]}", file=sys.stderr)
        failed += bench["errors"]["count"]
    if not args.quiet:
        markdown = render_markdown(report)
        summary = markdown.split("## Summary", 1)[1].split("\n## ", 1)[0]
        print("Summary" + summary.rstrip())
        for note in report["notes"]:
            print(f"note: {note}")
        outputs = report["outputs"]
        print(f"report: {outputs['markdown']} and {outputs['json']}")
        if outputs.get("plots"):
            print(f"plots: {', '.join(outputs['plots'])}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "eval",
        help="evaluate the judge on reward-model benchmarks, with Voting@k / MetaRM@k curves",
        description=(
            "Sample K judgements per item once (-k K), then report Voting@k and MetaRM@k for every k in "
            "--k-values by resampling k of the K samples. Writes report.json, report.md and plots/ under -o; "
            "re-running the same command resumes."
        ),
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--benchmark", "-b", action="append", metavar="NAME[=PATH]",
        help="benchmark to run (repeat or comma-separate); PATH overrides its default location. "
             "Generic formats: pairwise=FILE.jsonl, bon=FILE.jsonl. See --list-benchmarks.",
    )
    group.add_argument("--list-benchmarks", action="store_true", help="list the known benchmarks and exit")
    group.add_argument(
        "--data-root", metavar="DIR",
        help="folder laid out like the project's shared data (default: $GRM_REWARD_DATA)",
    )
    group.add_argument("-o", "--output-dir", default="eval-results", metavar="DIR",
                       help="where the report, plots and stored samples go (default: eval-results)")
    group.add_argument("--limit", type=int, metavar="N",
                       help="evaluate a seeded random sample of N items per benchmark (the same N every run)")
    group.add_argument("--subset", action="append", metavar="PATTERN",
                       help="keep items whose subset or section matches (shell pattern; repeat or comma-separate)")
    group.add_argument("--k-values", type=_k_values, metavar="K1,K2,...",
                       help="k values of the curves, each <= -k (default: powers of two up to -k, and -k)")
    group.add_argument("--resamples", type=int, default=32, metavar="R",
                       help="resampling rounds per k (default 32)")
    group.add_argument("--tie-policy", choices=("random", "half", "strict"), default="random",
                       help="a tied top vote: broken at random (paper, default), half credit (RewardBench), "
                            "or counted wrong (strict)")
    group.add_argument("--protocol", choices=("list", "pairs"), default="list",
                       help="'list': all responses of an item in one judge input (paper, default); 'pairs': one "
                            "input per (best, other) pair, the best must win all (RMB's rule for baselines, "
                            "RM-Bench's 9 pairs)")
    group.add_argument("--k-meta-ratio", type=float, metavar="R",
                       help="MetaRM@k keeps the max(1, floor(R*k)) samples with the highest meta scores "
                            "(default: k_meta/k when the config sets k_meta, else 0.5, the paper's k/2)")
    group.add_argument("--chunk-size", type=int, default=8, metavar="N",
                       help="items sent to the reward model together (default 8)")
    group.add_argument("--concurrency", type=int, default=1, metavar="N",
                       help="chunks in flight at once (raise it for HTTP backends; default 1)")
    group.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="reuse items already sampled with the same settings (default); --no-resume starts over")
    group.add_argument("--keep-text", action=argparse.BooleanOptionalAction, default=True,
                       help="store each sample's text, principles and critique (default); --no-keep-text keeps "
                            "only scores and counts")
    group.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                       help="write PNG plots (needs matplotlib: pip install 'grm-reward[eval]')")
    group.add_argument("--eval-seed", type=int, default=0, metavar="S",
                       help="seed of --limit's sample, the resampling rounds and random tie-breaks (default 0)")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_config_arguments(parser)
    parser.set_defaults(func=_cmd_eval)
