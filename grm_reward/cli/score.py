"""``grm-reward score INPUT.jsonl -o OUTPUT.jsonl [-k K] [--model M] [--backend B] ...``

Each input line is ``{"prompt": str | messages, "responses": [str, ...]}`` with optional
``principles`` and ``reference``; other keys are kept. Each output line adds ``rewards``,
``votes``, ``best`` and ``samples``. A malformed line gets an ``error`` (with its line number)
in the output and on stderr, and the other lines are still scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from grm_reward.cli.options import add_config_arguments, config_from_args
from grm_reward.errors import GRMError, InputError
from grm_reward.types import Request, RewardResult

__all__ = ["register"]

_REQUEST_KEYS = ("prompt", "responses", "principles", "reference")
#: Keys the output adds; an input row that already has one keeps it under "input_<key>".
_OUTPUT_KEYS = ("rewards", "votes", "best", "tie", "num_valid", "num_forced", "usage", "samples", "error")


@dataclass
class _Row:
    line: int
    data: dict[str, Any] | None
    request: Request | None = None
    error: str | None = None
    result: RewardResult | None = None


@dataclass
class _Summary:
    rows: list[_Row] = field(default_factory=list)
    seconds: float = 0.0


def _read_rows(path: str) -> Iterator[_Row]:
    stream: TextIO
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield _Row(number, None, error=f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(data, dict):
                yield _Row(number, None, error=f"line {number}: expected a JSON object, got {type(data).__name__}")
                continue
            try:
                missing = [k for k in ("prompt", "responses") if k not in data]
                if missing:
                    raise InputError(f"missing key(s) {missing}")
                request = Request(**{k: data[k] for k in _REQUEST_KEYS if data.get(k) is not None})
            except (InputError, TypeError) as exc:
                yield _Row(number, data, error=f"line {number}: {exc}")
                continue
            yield _Row(number, data, request)
    finally:
        if stream is not sys.stdin:
            stream.close()


def _output_row(row: _Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if row.data is not None:
        for key, value in row.data.items():
            out[f"input_{key}" if key in _OUTPUT_KEYS else key] = value
    else:
        out["line"] = row.line
    if row.error is not None:
        out["error"] = row.error
        return out
    assert row.result is not None
    out.update(row.result.to_dict())
    return out


def _score_rows(rm: Any, rows: list[_Row], chunk_size: int, progress: Any) -> None:
    """Score the valid rows chunk by chunk; a chunk that fails on one request is retried row by row."""
    pending = [r for r in rows if r.request is not None]
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        try:
            for row, result in zip(chunk, rm.score_batch([r.request for r in chunk])):
                row.result = result
        except GRMError:
            for row in chunk:
                try:
                    row.result = rm.score_batch([row.request])[0]
                except GRMError as exc:
                    row.error = f"line {row.line}: {exc}"
        progress.update(len(chunk))


def _excerpt(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_summary(summary: _Summary, config: Any, stream: TextIO, show: int) -> None:
    rows = summary.rows
    results = [r.result for r in rows if r.result is not None]
    failed = [r for r in rows if r.error is not None]
    samples = [s for result in results for s in result.samples]
    valid = sum(1 for s in samples if s.valid)
    forced = sum(1 for s in samples if s.valid and s.forced)
    abstained = sum(1 for result in results if result.all_invalid)
    tokens = sum(result.usage.completion_tokens for result in results)
    model = config.model or "embedded SmolLM2-135M-Instruct"
    print(f"\ngrm-reward score: judge {model} ({config.backend}), k={config.k}", file=stream)
    header = f"{'line':>5}  {'n':>2}  {'rewards':<26} {'best':>4}  {'valid':>5}  {'forced':>6}  critique (first voting sample)"
    print(header, file=stream)
    print("-" * len(header), file=stream)
    for row in rows[:show] if show >= 0 else rows:
        if row.result is None:
            print(f"{row.line:>5}  {'':>2}  ERROR: {row.error}", file=stream)
            continue
        result = row.result
        rewards = ", ".join("-" if r is None else f"{r:.3f}" for r in result.rewards)
        voter = next((s for s in result.samples if s.valid), None)
        critique = _excerpt(voter.critique or voter.text, 60) if voter else "(no readable sample)"
        best = "-" if result.best is None else str(result.best)
        k = len(result.samples)
        print(
            f"{row.line:>5}  {len(result.rewards):>2}  [{_excerpt(rewards, 24):<24}] {best:>4}  "
            f"{result.num_valid:>2}/{k:<2}  {result.num_forced:>3}/{k:<2}  {critique}",
            file=stream,
        )
    if 0 <= show < len(rows):
        print(f"  ... {len(rows) - show} more rows in the output file", file=stream)
    def share(part: int, whole: int) -> str:
        return f"{100.0 * part / whole:.1f}%" if whole else "n/a"

    print("-" * len(header), file=stream)
    print(
        f"rows: {len(results)} scored, {len(failed)} failed, {abstained} with no readable sample | "
        f"samples: {len(samples)}, valid {share(valid, len(samples))}, forced {share(forced, len(samples))} | "
        f"judge tokens: {tokens} | {summary.seconds:.1f}s",
        file=stream,
    )
    if forced:
        print(
            "note: forced samples had no readable score block; their scores were filled in under a constraint "
            "(format_guarantee).",
            file=stream,
        )


def _cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from grm_reward.model import GenerativeRewardModel

    if args.chunk_size < 1:
        print("grm-reward: --chunk-size must be at least 1", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if args.input != "-" and not Path(args.input).is_file():
        print(f"grm-reward: input file {args.input} does not exist", file=sys.stderr)
        return 2
    rows = list(_read_rows(args.input))
    for row in rows:
        if row.error:
            print(f"grm-reward: {row.error}", file=sys.stderr)
    out_stream: TextIO = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    report = sys.stderr if out_stream is sys.stdout else sys.stdout
    started = time.perf_counter()
    try:
        with GenerativeRewardModel(config) as rm:
            todo = sum(1 for r in rows if r.request is not None)
            with tqdm(total=todo, desc="scoring", unit="row", disable=args.quiet or None, file=sys.stderr) as bar:
                _score_rows(rm, rows, args.chunk_size, bar)
    except GRMError as exc:
        print(f"grm-reward: {exc}", file=sys.stderr)
        return 2
    finally:
        summary = _Summary(rows, time.perf_counter() - started)
        for row in rows:
            if row.result is not None or row.error is not None:
                out_stream.write(json.dumps(_output_row(row), ensure_ascii=False) + "\n")
        if out_stream is not sys.stdout:
            out_stream.close()
    for row in rows:
        if row.error and row.request is not None:
            print(f"grm-reward: {row.error}", file=sys.stderr)
    if not args.quiet:
        _print_summary(summary, config, report, args.show)
    return 1 if any(r.error for r in rows) else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    score = sub.add_parser(
        "score",
        help="score a JSONL file of {prompt, responses} rows",
        description="Score each row's responses with the judge; writes rewards and judgements as JSONL.",
    )
    score.add_argument("input", help="input JSONL file ('-' for stdin)")
    score.add_argument("-o", "--output", help="output JSONL file (default: stdout; the summary then goes to stderr)")
    score.add_argument("--chunk-size", type=int, default=8, help="rows sent to the backend together (default 8)")
    score.add_argument("--show", type=int, default=20, help="rows shown in the summary table (-1: all; default 20)")
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_config_arguments(score)
    score.set_defaults(func=_cmd_score)
