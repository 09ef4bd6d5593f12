"""``grm-reward spct {rft-data, meta-data, rl-data, train-meta}``: SPCT data builders and meta-RM training.

    grm-reward spct rft-data INPUT -o rft.jsonl [judge flags] [--samples 3] [--hint both] [--keep-easy]
    grm-reward spct meta-data INPUT -o meta.jsonl [judge flags] [--samples 3] [--tokenizer M]
    grm-reward spct rl-data INPUT -o rl.jsonl [--seed S] [--template T]
    grm-reward spct train-meta meta.jsonl -o CHECKPOINT_DIR [--base-model M] [--epochs E] [--lr 1e-5] ...

INPUT is a JSONL file of pairwise, best-of-N or single-response rows, or a named set
(``rewardbench``, ``rmb=PATH``, ``hh_rlhf``, ...; see :mod:`grm_reward.spct.items`). Malformed rows
are reported (file and line) on stderr and skipped. Exit status: 0 when rows were written (some
input rows may have been skipped: see the summary), 2 when nothing could run or nothing was usable.
The formats, rules and paper defaults are in ``docs/spct.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from grm_reward.cli.options import _add_field, add_config_arguments, config_from_args
from grm_reward.embedded import EMBEDDED_MODEL_LABEL
from grm_reward.errors import GRMError

__all__ = ["register"]

_SOURCE_HELP = (
    "input: a JSONL file of {prompt, chosen, rejected} / {prompt, responses, best} / {prompt, response, label} "
    "rows, or a named set NAME[=PATH] (rewardbench, rmb, llmbar, xstest, realmistake, hh_rlhf, pairwise, bon, ...)"
)


def _say(message: str) -> None:
    print(f"grm-reward: {message}", file=sys.stderr)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help=_SOURCE_HELP)
    parser.add_argument("-o", "--output", required=True, help="output JSONL file")
    parser.add_argument("--data-root", help="folder holding the named sets (default: $GRM_REWARD_DATA)")
    parser.add_argument("--limit", type=int, help="use a seeded random sample of this many items")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def _load(args: argparse.Namespace, seed: int) -> list[Any] | None:
    """The input items (issues reported on stderr); None when the input cannot be read."""
    from grm_reward.spct.items import load_items

    try:
        loaded = load_items(args.input, seed=seed, data_root=args.data_root, limit=args.limit)
    except GRMError as exc:
        _say(str(exc))
        return None
    for issue in loaded.issues:
        _say(f"skipped {issue}")
    args.load_skipped = len(loaded.issues)
    for note in loaded.notes:
        _say(f"note: {note}")
    if not loaded.items:
        _say(f"no usable items in {args.input}")
        return None
    return loaded.items


def _write(stream: TextIO, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    for row in rows:
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    stream.flush()
    return count


def _judge_config(args: argparse.Namespace, samples: int) -> Any:
    """The judge's config with k = samples, so its temperature rules apply (paper 0.5 when samples > 1)."""
    config = config_from_args(args).updated(k=samples)
    ignored = [flag for flag, on in (("--format-guarantee", config.format_guarantee), ("--token-prob", config.token_prob),
                                     ("--meta-rm", config.meta_rm is not None)) if on]
    if ignored:
        _say(f"note: {', '.join(ignored)} ignored: SPCT data read every judge sample strictly, as Eq. 10 asks")
        config = config.updated(format_guarantee=False, token_prob=False, meta_rm=None)
    return config


# --- rft-data ---------------------------------------------------------------------------------


def _cmd_rft(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from grm_reward.model import GenerativeRewardModel
    from grm_reward.spct.rft import RFTSettings, run_rft

    try:
        settings = RFTSettings.build(
            samples=args.samples, hint=args.hint, keep_easy=args.keep_easy, chunk_size=args.chunk_size,
            label_threshold=args.label_threshold,
        )
        config = _judge_config(args, settings.samples if settings.hint != "on" else 1)
    except GRMError as exc:
        _say(str(exc))
        return 2
    items = _load(args, config.seed)
    if items is None:
        return 2
    started = time.perf_counter()
    trajectories: TextIO | None = None
    try:
        with GenerativeRewardModel(config) as rm, open(args.output, "w", encoding="utf-8") as out:
            if args.trajectories:
                trajectories = open(args.trajectories, "w", encoding="utf-8")  # noqa: SIM115

            def write(rows: list[dict[str, Any]], sampled: list[dict[str, Any]]) -> None:
                _write(out, rows)
                if trajectories is not None:
                    _write(trajectories, sampled)

            with tqdm(total=len(items), desc="rft-data", unit="item", disable=args.quiet or None, file=sys.stderr) as bar:
                outcome = run_rft(rm, items, settings, report=_say, on_chunk=write, progress=bar.update)
    except (GRMError, OSError) as exc:
        _say(str(exc))
        return 2
    finally:
        if trajectories is not None:
            trajectories.close()
    stats = outcome.stats
    stats.skipped_rows += args.load_skipped
    if not args.quiet:
        model = config.model or EMBEDDED_MODEL_LABEL
        plan = "1 hinted sample per item" if settings.hint == "on" else f"{settings.samples} plain samples per item"
        print(f"\ngrm-reward spct rft-data: judge {model} ({config.backend}), {plan}, hint {settings.hint}, "
              f"temperature {config.effective_temperature}")
        for line in stats.lines():
            print(f"  {line}")
        print(f"  wrote {args.output}" + (f" and {args.trajectories}" if args.trajectories else "")
              + f" in {time.perf_counter() - started:.1f}s")
    return 0


# --- meta-data --------------------------------------------------------------------------------


def _tokenizer(name: str | None) -> Any:
    if name is not None and name.lower() == "none":
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise GRMError(
            "rendering meta RM inputs with a chat template needs transformers (pip install 'grm-reward[transformers]'), "
            "or pass --tokenizer none for the paper's plain layout"
        ) from exc
    if name is None:
        from grm_reward.embedded import embedded_model_path

        name = str(embedded_model_path())
    return AutoTokenizer.from_pretrained(name)


def _cmd_meta(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from grm_reward.model import GenerativeRewardModel
    from grm_reward.spct.meta_data import MetaDataStats, is_trajectory_file, load_trajectories, meta_row
    from grm_reward.spct.rft import checked_items, sample_chunk
    from grm_reward.spct.sampling import SpctSampler

    if args.samples < 1 or args.chunk_size < 1:
        _say("--samples and --chunk-size must be at least 1")
        return 2
    try:
        config = _judge_config(args, args.samples)
        tokenizer = _tokenizer(args.tokenizer)
    except GRMError as exc:
        _say(str(exc))
        return 2
    stats = MetaDataStats()
    started = time.perf_counter()

    def emit(out: TextIO, samples: Sequence[Any]) -> None:
        rows = []
        for index, sample in enumerate(samples):
            if sample.hinted:
                stats.hinted_skipped += 1
                continue
            stats.samples += 1
            if sample.shown_scores is None:
                stats.unreadable += 1
                if not args.keep_unreadable:
                    continue
                stats.unreadable_kept += 1
            rows.append(meta_row(sample, tokenizer, index=index))
        stats.positives += sum(r["label"] for r in rows)
        stats.rows += _write(out, rows)

    try:
        if is_trajectory_file(args.input):
            samples, issues = load_trajectories(args.input, config, threshold=args.label_threshold)
            for issue in issues:
                _say(f"skipped {issue}")
            stats.skipped_rows += len(issues)
            by_item: dict[str, list[Any]] = {}
            for sample in samples:
                by_item.setdefault(sample.item.id, []).append(sample)
            stats.items = len(by_item)
            with open(args.output, "w", encoding="utf-8") as out:
                for group in by_item.values():
                    emit(out, group)
            source = f"trajectories from {args.input} (no judge calls)"
        else:
            items = _load(args, config.seed)
            if items is None:
                return 2
            with GenerativeRewardModel(config) as rm, open(args.output, "w", encoding="utf-8") as out:
                sampler = SpctSampler(rm, threshold=args.label_threshold)
                items, bad = checked_items(sampler, items, _say)
                stats.skipped_rows += bad + args.load_skipped
                bar = tqdm(total=len(items), desc="meta-data", unit="item", disable=args.quiet or None, file=sys.stderr)
                for start in range(0, len(items), args.chunk_size):
                    chunk = items[start : start + args.chunk_size]
                    got, failed = sample_chunk(sampler, chunk, args.samples, hinted=False, report=_say)
                    stats.failed_items += len(failed)
                    for item in chunk:
                        if item.id in got:
                            stats.items += 1
                            emit(out, got[item.id])
                    bar.update(len(chunk))
                bar.close()
            model = config.model or EMBEDDED_MODEL_LABEL
            source = f"judge {model} ({config.backend}), {args.samples} samples per item"
    except (GRMError, OSError) as exc:
        _say(str(exc))
        return 2
    if stats.rows == 0:
        _say("no meta-RM rows were written")
    if not args.quiet:
        layout = getattr(tokenizer, "name_or_path", None) or "the plain Prompt:/Response: layout"
        print(f"\ngrm-reward spct meta-data: {source}; text rendered with {layout}")
        for line in stats.lines():
            print(f"  {line}")
        print(f"  wrote {args.output} in {time.perf_counter() - started:.1f}s")
    return 0 if stats.rows else 2


# --- rl-data ----------------------------------------------------------------------------------


def _cmd_rl(args: argparse.Namespace) -> int:
    from grm_reward.spct.rl_data import rl_row

    try:
        config = config_from_args(args)
    except GRMError as exc:
        _say(str(exc))
        return 2
    items = _load(args, config.seed)
    if items is None:
        return 2
    rows, skipped = [], getattr(args, "load_skipped", 0)
    for item in items:
        try:
            rows.append(rl_row(item, config, config.seed))
        except GRMError as exc:
            _say(f"skipped {item.where or item.id}: {exc}")
            skipped += 1
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            written = _write(out, rows)
    except OSError as exc:
        _say(f"cannot write {args.output}: {exc}")
        return 2
    if not args.quiet:
        pairs = sum(1 for r in rows if r["num_responses"] >= 2)
        print(
            f"grm-reward spct rl-data: {written} rows ({pairs} with a best response, {written - pairs} single "
            f"responses with a label), {skipped} input rows skipped (see above); wrote {args.output}"
        )
    return 0 if written else 2


# --- train-meta -------------------------------------------------------------------------------


def _cmd_train_meta(args: argparse.Namespace) -> int:
    from grm_reward.spct.meta_train import MetaTrainSettings, read_meta_rows, train_meta_rm

    try:
        given = {name: getattr(args, name) for name in MetaTrainSettings.model_fields if hasattr(args, name)}
        settings = MetaTrainSettings.build(**given, output_dir=Path(args.output))
        examples, issues = read_meta_rows(args.data)
        for issue in issues:
            _say(f"skipped {issue}")
        if not examples:
            _say(f"no usable rows in {args.data}")
            return 2
        report = train_meta_rm(examples, settings, log=(lambda _m: None) if args.quiet else print)
    except GRMError as exc:
        _say(str(exc))
        return 2
    if not args.quiet:
        loss = "n/a" if report.train_loss is None else f"{report.train_loss:.4f}"
        print(f"grm-reward spct train-meta: {report.steps} steps, last-epoch train loss {loss}, {report.seconds:.1f}s")
    return 0


def _add_settings_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], *, skip: Sequence[str] = ()) -> None:
    """One flag per field of a settings model, help from the field's description: the builder of
    ``score``'s GRMConfig flags, so every setting is described once, beside its field."""
    group = parser.add_argument_group(f"settings ({model.__name__})")
    for name, info in model.model_fields.items():
        if name not in skip:
            _add_field(group, "--" + name.replace("_", "-"), name, info)


# --- registration -----------------------------------------------------------------------------


def _add_judge_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--samples", type=int, default=3,
        help="plain judge samples per item (paper N_RFT = 3); replaces -k. Temperature: --temperature, else the "
        "paper's 0.5 when more than one",
    )
    parser.add_argument(
        "--label-threshold", type=int, default=None,
        help="single responses: a correct one (label 1) must score above this, an incorrect one (label 0) at or "
        "below it (default: the lower midpoint of the score range, 5 on 1-10, 0 on 0-1)",
    )
    parser.add_argument("--chunk-size", type=int, default=8, help="items sent to the backend together (default 8)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from grm_reward.spct.meta_train import MetaTrainSettings  # imports torch only when training starts

    spct = sub.add_parser(
        "spct",
        help="SPCT recipes: RFT, meta-RM and RL data for training a judge; meta-RM training",
        description="Self-Principled Critique Tuning (paper §3): build training data for a judge, train a meta RM.",
    )
    commands = spct.add_subparsers(dest="spct_command", required=True, metavar="STEP")

    rft = commands.add_parser(
        "rft-data",
        help="rejective fine-tuning data: correct judge trajectories as chat SFT rows",
        description="Sample judge trajectories per item (plain and hinted), keep the correct ones (Eq. 10), drop "
        "too-easy items, write chat-format SFT rows.",
    )
    _add_source_arguments(rft)
    _add_judge_sampling(rft)
    rft.add_argument(
        "--hint", choices=("off", "on", "both", "fallback"), default="both",
        help="hinted sampling: off; on (hinted only, 1 per item); both (paper: N plain per item, then 1 hinted per "
        "item not dropped as too easy); fallback (1 hinted only for items with no correct plain sample). "
        "Default both",
    )
    rft.add_argument("--keep-easy", action="store_true", help="keep items whose N plain samples were all correct")
    rft.add_argument("--trajectories", metavar="FILE",
                     help="also write every sampled trajectory, kept or not (spct meta-data can reuse it)")
    add_config_arguments(rft)
    rft.set_defaults(func=_cmd_rft)

    meta = commands.add_parser(
        "meta-data",
        help="meta-RM data: plain judge trajectories with Eq. 10 labels, as the meta RM sees them",
        description="Sample plain judge trajectories per item (or read an rft-data --trajectories file) and write "
        "{text, label, id} rows for a one-logit meta RM.",
    )
    _add_source_arguments(meta)
    _add_judge_sampling(meta)
    meta.add_argument(
        "--tokenizer", metavar="MODEL",
        help="tokenizer whose chat template renders 'text': that of the meta RM you will train (default: the "
        "embedded model, train-meta's default base); 'none' = the paper's plain Prompt:/Response: layout",
    )
    meta.add_argument("--keep-unreadable", action="store_true",
                      help="keep unreadable samples as label 0 (default: left out; the meta RM never rates them)")
    add_config_arguments(meta)
    meta.set_defaults(func=_cmd_meta)

    rl = commands.add_parser(
        "rl-data",
        help="online-RL data: judge prompts with the shown position of the best response (or the label)",
        description="Render each item's judge prompt (responses in a seeded random order) with what the rule "
        "reward (Eq. 11) needs.",
    )
    _add_source_arguments(rl)
    add_config_arguments(rl)
    rl.set_defaults(func=_cmd_rl)

    train = commands.add_parser(
        "train-meta",
        help="train a one-logit meta RM (binary cross-entropy) on meta-data rows",
        description="Train AutoModelForSequenceClassification(num_labels=1) with binary cross-entropy; the "
        "checkpoint loads with --meta-rm DIR.",
    )
    train.add_argument("data", help="meta-RM rows from `grm-reward spct meta-data`")
    train.add_argument("-o", "--output", required=True, help="checkpoint folder to write")
    _add_settings_arguments(train, MetaTrainSettings, skip=("output_dir",))
    train.add_argument("-q", "--quiet", action="store_true", help="no log")
    train.set_defaults(func=_cmd_train_meta)
