"""``grm-reward score INPUT.jsonl -o OUTPUT.jsonl [--resume | --overwrite] [-k K] [--backend B] ...``

Each input line is a ``{"prompt", "responses"}`` row; each output line is that row plus its rewards
and judgements, or an ``error``. A bounded number of rows is judged at a time, and each row is
written (and flushed) as soon as it and every row before it are done, so a stopped run keeps its
finished rows and ``--resume`` goes on from them. Output, resume and exit codes: docs/cli.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from grm_reward.cli.options import add_config_arguments, config_from_args
from grm_reward.embedded import EMBEDDED_MODEL_LABEL
from grm_reward.errors import (
    AllSamplesInvalidError,
    ConfigError,
    GRMError,
    InputError,
    JudgeUnavailableError,
    TemplateError,
)
from grm_reward.jsonl import json_object
from grm_reward.types import Request, RewardResult

__all__ = ["register"]

_REQUEST_KEYS = ("prompt", "responses", "principles", "reference")
#: Keys the output adds; an input row that already has one keeps it under "input_<key>".
_OUTPUT_KEYS = (
    "rewards", "votes", "best", "tie", "num_valid", "num_forced", "usage", "samples", "error",
    "line", "input_hash", "retryable", "cached", "samples_drawn",
)
#: Exit statuses (docs/cli.md).
EXIT_OK, EXIT_ROW_ERRORS, EXIT_CANNOT_RUN, EXIT_JUDGE_FAILED = 0, 1, 2, 3
_EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
#: Errors that say something about the row, not the judge: they do not count against the failure budget.
_ROW_FAULTS = (InputError, AllSamplesInvalidError, TemplateError, ConfigError)


# --- input --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: bytes | None  # None: longer than the limit (not kept in memory)
    digest: str  # sha256 of the line without its line ending, first 16 hex digits
    size: int


def _strip_eol(chunk: bytes) -> bytes:
    return chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1] if chunk.endswith(b"\n") else chunk


def _lines(stream: BinaryIO, limit: int) -> Iterator[_Line]:
    """The non-blank lines of ``stream`` with their numbers; a line over ``limit`` bytes is skipped, not read whole."""
    number = 0
    while raw := stream.readline(limit + 1):
        number += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            if raw.strip():
                yield _Line(number, raw, hashlib.sha256(_strip_eol(raw)).hexdigest()[:16], len(raw))
            continue
        digest, size = hashlib.sha256(raw), len(raw)
        while raw and not raw.endswith(b"\n"):
            raw = stream.readline(1 << 20)
            digest.update(_strip_eol(raw))
            size += len(raw)
        yield _Line(number, None, digest.hexdigest()[:16], size)


@dataclass(eq=False)
class _Row:
    line: int
    digest: str
    data: dict[str, Any] | None = None
    request: Request | None = None
    error: str | None = None
    retryable: bool = False  # failed because of the judge: --resume judges it again when it ends the file
    not_judged: bool = False  # left alone after the judge kept failing
    result: RewardResult | None = None
    finished: bool = False
    task: asyncio.Task[None] | None = None


def _parse(line: _Line, limit: int) -> _Row:
    """The row for one input line; a bad line gets its error and is finished at once."""
    row = _Row(line.number, line.digest)
    n = line.number
    try:
        if line.text is None:
            raise InputError(f"line is {line.size} bytes, over --max-line-bytes {limit}")
        data = json_object(line.text, first_line=n == 1)  # the line's hash keeps a byte-order mark, for --resume
        row.data = data
        missing = [k for k in ("prompt", "responses") if k not in data]
        if missing:
            raise InputError(f"missing key(s) {missing}")
        row.request = Request(**{k: data[k] for k in _REQUEST_KEYS if data.get(k) is not None})
    except (InputError, TypeError, ValueError) as exc:
        row.error = f"line {n}: {exc}"
        row.finished = True
    return row


class _Reader:
    """Reads input lines in a daemon thread, at most ``ahead`` lines ahead of the judging.

    A read that blocks (a quiet stdin) then never holds up the event loop, a signal or the exit.
    """

    def __init__(self, lines: Iterator[_Line], ahead: int, wake: Callable[[], None]) -> None:
        self._lines = lines
        self._room = threading.Semaphore(ahead)
        self._ready: deque[_Line | BaseException | None] = deque()  # None: end of input
        self._loop = asyncio.get_running_loop()
        self._wake = wake
        self._stopped = False
        threading.Thread(target=self._run, name="grm-reward-score-reader", daemon=True).start()

    def _run(self) -> None:
        item: _Line | BaseException | None
        try:
            for item in self._lines:
                self._room.acquire()
                if self._stopped:
                    return
                self._loop.call_soon_threadsafe(self._push, item)
            item = None
        except BaseException as exc:  # an unreadable input ends the run with its error
            if self._stopped:  # the run ended (and its loop closed) while this thread was reading
                return
            item = exc
        if not self._stopped:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._push, item)

    def _push(self, item: _Line | BaseException | None) -> None:
        self._ready.append(item)
        self._wake()

    def poll(self) -> _Line | BaseException | bool | None:
        """The next line, None at the end, an exception from reading, or False when none is ready yet."""
        if not self._ready:
            return False
        item = self._ready.popleft()
        if isinstance(item, _Line):
            self._room.release()
        return item

    def stop(self) -> None:
        self._stopped = True
        self._room.release()


# --- output -------------------------------------------------------------------------------------
def _output_row(row: _Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if row.data is not None:
        for key, value in row.data.items():
            out[f"input_{key}" if key in _OUTPUT_KEYS else key] = value
    out["line"] = row.line
    out["input_hash"] = row.digest
    if row.error is not None:
        out["error"] = row.error
        if row.retryable:
            out["retryable"] = True
        return out
    assert row.result is not None
    out.update(row.result.to_dict())
    return out


def _encode(row: _Row) -> bytes:
    out = _output_row(row)
    try:
        return json.dumps(out, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate in a copied key: keep it, escaped as in the input
        return json.dumps(out).encode("ascii") + b"\n"
    except (RecursionError, ValueError):
        fallback = {"line": row.line, "input_hash": row.digest, "error": row.error or "the row cannot be written as JSON"}
        return json.dumps(fallback, ensure_ascii=False).encode("utf-8") + b"\n"


def _excerpt(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class _Summary:
    """What the summary prints: counters over every row, and the first ``show`` rows themselves."""

    show: int
    shown: list[_Row] = field(default_factory=list)
    written: int = 0
    kept: int = 0  # rows a resumed run found already done
    kept_errors: int = 0
    scored: int = 0
    failed: int = 0
    not_judged: int = 0
    abstained: int = 0
    samples: int = 0
    valid: int = 0
    forced: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, row: _Row) -> None:
        self.written += 1
        if self.show < 0 or len(self.shown) < self.show:
            self.shown.append(row)
        result = row.result
        if result is None:
            self.failed += 1
            self.not_judged += row.not_judged
            return
        self.scored += 1
        self.abstained += result.all_invalid
        self.samples += len(result.samples)
        self.valid += sum(1 for s in result.samples if s.valid)
        self.forced += sum(1 for s in result.samples if s.valid and s.forced)
        self.tokens += result.usage.completion_tokens


class _Output:
    """Writes rows in input order and flushes; reports each error row (the first few) on stderr."""

    MAX_MESSAGES = 20

    def __init__(self, stream: BinaryIO, summary: _Summary, progress: Any) -> None:
        self.stream = stream
        self.summary = summary
        self.progress = progress
        self.messages = 0

    def write(self, rows: list[_Row]) -> None:
        self.stream.write(b"".join(_encode(row) for row in rows))
        self.stream.flush()
        for row in rows:
            self.summary.add(row)
            if row.error is not None and not row.not_judged:
                self.messages += 1
                if self.messages <= self.MAX_MESSAGES:
                    self.progress.write(f"grm-reward: {row.error}", file=sys.stderr)
                elif self.messages == self.MAX_MESSAGES + 1:
                    self.progress.write("grm-reward: more rows failed: see the error rows in the output", file=sys.stderr)
        self.progress.update(len(rows))


def _print_summary(summary: _Summary, config: Any, stream: TextIO) -> None:
    model = config.model or EMBEDDED_MODEL_LABEL
    print(f"\ngrm-reward score: judge {model} ({config.backend}), k={config.k}", file=stream)
    header = f"{'line':>5}  {'n':>2}  {'rewards':<26} {'best':>4}  {'valid':>5}  {'forced':>6}  critique (first voting sample)"
    print(header, file=stream)
    print("-" * len(header), file=stream)
    for row in summary.shown:
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
    if len(summary.shown) < summary.written:
        print(f"  ... {summary.written - len(summary.shown)} more rows in the output", file=stream)

    def share(part: int, whole: int) -> str:
        return f"{100.0 * part / whole:.1f}%" if whole else "n/a"

    print("-" * len(header), file=stream)
    kept = f"{summary.kept} kept from before ({summary.kept_errors} with errors), " if summary.kept else ""
    not_judged = f" ({summary.not_judged} not judged)" if summary.not_judged else ""
    print(
        f"rows: {kept}{summary.scored} scored, {summary.failed} failed{not_judged}, "
        f"{summary.abstained} with no readable sample | "
        f"samples: {summary.samples}, valid {share(summary.valid, summary.samples)}, "
        f"forced {share(summary.forced, summary.samples)} | judge tokens: {summary.tokens} | {summary.seconds:.1f}s",
        file=stream,
    )
    if summary.forced:
        print(
            "note: forced samples had no readable score block; their scores were filled in under a constraint "
            "(format_guarantee).",
            file=stream,
        )


# --- resume -------------------------------------------------------------------------------------
class _ResumeError(Exception):
    """The output cannot be continued from this input."""


class _OutputRefused(Exception):
    """The output exists and the user said neither --resume nor --overwrite."""


class _InputFailure(Exception):
    """The input stopped being readable in the middle of the run."""


@dataclass
class _Done:
    """The rows of an earlier run that a resumed run keeps: (line, input_hash) each, and where they end."""

    rows: list[tuple[int, str]]
    end: int  # byte offset after the last kept row: the rest (a cut-off row, retryable failures) is replaced
    errors: int


def _read_done(path: Path) -> _Done:
    rows: list[tuple[int, str, bool, bool, int]] = []  # line, input_hash, failed, retryable, end offset
    offset = 0
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.endswith(b"\n"):
                break  # the row a kill cut off
            offset += len(raw)
            try:
                data = json.loads(raw)
                line, digest = data["line"], data["input_hash"]
                if not isinstance(line, int) or not isinstance(digest, str):
                    raise TypeError
            except (ValueError, TypeError, KeyError, RecursionError):
                raise _ResumeError(
                    f"its line {number} is not a row of grm-reward score (with 'line' and 'input_hash')"
                ) from None
            failed = "error" in data
            rows.append((line, digest, failed, failed and data.get("retryable") is True, offset))
    keep = len(rows)
    while keep and rows[keep - 1][3]:  # judge failures at the end are judged again
        keep -= 1
    kept = rows[:keep]
    return _Done([(r[0], r[1]) for r in kept], kept[-1][4] if kept else 0, sum(1 for r in kept if r[2]))


def _check_done(done: _Done, lines: Iterator[_Line]) -> None:
    """Consume the input lines the output already has, checking each by line number and content hash."""
    for index, (number, digest) in enumerate(done.rows, start=1):
        line = next(lines, None)
        if line is None:
            raise _ResumeError(f"it has {len(done.rows)} rows but the input only {index - 1}")
        if line.number != number:
            raise _ResumeError(f"its row {index} is input line {number}, but the input's row {index} is line {line.number}")
        if line.digest != digest:
            raise _ResumeError(f"input line {number} changed since that row was written (hash {line.digest}, was {digest})")


# --- judging ------------------------------------------------------------------------------------
@dataclass
class _Settings:
    chunk_size: int
    in_flight: int
    max_failures: int
    max_line_bytes: int


@dataclass
class _Outcome:
    signal: int | None = None  # the signal that stopped the run
    tripped: str | None = None  # why the remaining rows were not judged


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _judge_rows(rm: Any, lines: Iterator[_Line], output: _Output, settings: _Settings) -> _Outcome:
    """Judge up to ``in_flight`` rows at once (batched by the micro-batcher); write them in input order."""
    from grm_reward.batching import MicroBatcher

    outcome = _Outcome()
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    stop = asyncio.Event()
    batches = -(-settings.in_flight // settings.chunk_size)
    batcher = MicroBatcher(rm, max_wait_s=0.0, max_batch_requests=settings.chunk_size, max_concurrent_batches=batches)
    window: deque[_Row] = deque()
    streak = 0

    def judge_failed(exc: BaseException) -> None:
        nonlocal streak
        streak += 1
        if isinstance(exc, JudgeUnavailableError):
            after = "" if exc.retry_after is None else f" (retry after {exc.retry_after:.0f}s)"
            outcome.tripped = outcome.tripped or f"the judge is unavailable{after}: {_describe(exc)}"
        elif settings.max_failures and streak >= settings.max_failures:
            outcome.tripped = outcome.tripped or f"the judge failed on the last {streak} rows: {_describe(exc)}"

    async def judge(row: _Row) -> None:
        nonlocal streak
        assert row.request is not None
        try:
            row.result = await batcher.submit(row.request)
            streak = 0
        except asyncio.CancelledError:
            if outcome.tripped is None:
                raise  # stopped by a signal: the row stays unfinished and is not written
            row.error, row.retryable, row.not_judged = f"line {row.line}: not judged: {outcome.tripped}", True, True
        except Exception as exc:  # any failure of one row is that row's error
            row.error = f"line {row.line}: {_describe(exc)}"
            if not isinstance(exc, _ROW_FAULTS):
                row.retryable = True
                judge_failed(exc)
        row.finished = True
        wake.set()

    def on_signal(signum: int, frame: object) -> None:
        outcome.signal = outcome.signal or signum
        signal.signal(signum, previous[signum] or signal.SIG_DFL)  # a second signal acts at once
        loop.call_soon_threadsafe(stop.set)
        loop.call_soon_threadsafe(wake.set)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in _EXIT_SIGNAL}
    reader = _Reader(lines, settings.in_flight + settings.chunk_size, wake.set)
    stopped_judging = False
    eof = False
    try:
        while True:
            ready = []
            while window and window[0].finished:
                ready.append(window.popleft())
            if ready:
                output.write(ready)
            if stop.is_set() or (eof and not window):
                break
            if outcome.tripped and not stopped_judging:
                stopped_judging = True
                for row in window:
                    if row.task is not None:
                        row.task.cancel()
            while not eof and len(window) < settings.in_flight:
                item = reader.poll()
                if item is False:
                    break
                if isinstance(item, BaseException):
                    raise _InputFailure(_describe(item)) from item
                if item is None:
                    eof = True
                    break
                assert isinstance(item, _Line)
                row = _parse(item, settings.max_line_bytes)
                window.append(row)
                if row.finished:
                    continue
                if outcome.tripped:
                    row.error, row.retryable, row.not_judged = f"line {row.line}: not judged: {outcome.tripped}", True, True
                    row.finished = True
                else:
                    row.task = loop.create_task(judge(row))
            if window and window[0].finished:
                continue
            if eof and not window:
                break
            wake.clear()
            await wake.wait()
    finally:
        reader.stop()
        for sig, handler in previous.items():
            if signal.getsignal(sig) == on_signal:
                signal.signal(sig, handler or signal.SIG_DFL)
        tasks = [row.task for row in window if row.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.aclose(drain=False)
        await rm.aclose()
    return outcome


# --- the command --------------------------------------------------------------------------------
def _open_output(args: argparse.Namespace, summary: _Summary) -> tuple[BinaryIO, _Done | None]:
    """The output stream, after the overwrite rule (and, with --resume, the rows it already has)."""
    if args.output in (None, "-"):
        if args.resume:
            raise _OutputRefused("--resume needs an output file (-o FILE)")
        return sys.stdout.buffer, None
    path = Path(args.output)
    if args.input != "-" and path.exists() and path.samefile(args.input):
        raise _OutputRefused(f"the output {path} is the input file: write to another file")
    done = None
    if args.resume and path.is_file():
        done = _read_done(path)
        summary.kept, summary.kept_errors = len(done.rows), done.errors
    elif path.is_file() and path.stat().st_size > 0 and not args.overwrite:
        raise _OutputRefused(
            f"{path} exists ({path.stat().st_size} bytes): --resume continues it, --overwrite replaces it"
        )
    # Opened (created) now, so an unwritable output stops the run before any judging.
    stream = path.open("r+b" if done is not None else "wb")
    return stream, done


def _count_rows(path: str, limit: int) -> int | None:
    if path == "-" or not Path(path).is_file():  # a pipe (`<(zcat rows.gz)`) can be read once only
        return None
    with open(path, "rb") as stream:
        return sum(1 for _ in _lines(stream, limit))


def _cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from grm_reward.model import GenerativeRewardModel

    for flag, value in (("--chunk-size", args.chunk_size), ("--in-flight", args.in_flight),
                        ("--max-line-bytes", args.max_line_bytes)):
        if value < 1:
            print(f"grm-reward: {flag} must be at least 1", file=sys.stderr)
            return EXIT_CANNOT_RUN
    if args.max_consecutive_failures < 0:
        print("grm-reward: --max-consecutive-failures must be 0 (never stop) or more", file=sys.stderr)
        return EXIT_CANNOT_RUN
    config = config_from_args(args)
    if args.input != "-" and (not Path(args.input).exists() or Path(args.input).is_dir()):
        # a named pipe or `<(zcat rows.gz)` is no regular file, and was refused as "does not exist"
        what = "is a directory" if Path(args.input).is_dir() else "does not exist"
        print(f"grm-reward: input file {args.input} {what}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    settings = _Settings(args.chunk_size, max(args.in_flight, args.chunk_size), args.max_consecutive_failures,
                         args.max_line_bytes)
    summary = _Summary(args.show)
    try:
        out_stream, done = _open_output(args, summary)
    except _ResumeError as exc:
        print(f"grm-reward: cannot resume {args.output}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except _OutputRefused as exc:
        print(f"grm-reward: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except OSError as exc:
        print(f"grm-reward: cannot write the output: {exc.strerror or exc} ({args.output})", file=sys.stderr)
        return EXIT_CANNOT_RUN
    # stdin through a file object of our own: the reader thread may still wait on it at exit, and
    # the interpreter then closes sys.stdin without waiting for that thread.
    from_stdin = args.input == "-"
    in_stream: BinaryIO = os.fdopen(os.dup(sys.stdin.fileno()), "rb") if from_stdin else open(args.input, "rb")  # noqa: SIM115
    lines = _lines(in_stream, settings.max_line_bytes)
    to_stdout = out_stream is sys.stdout.buffer
    report = sys.stderr if to_stdout else sys.stdout
    try:
        if done is not None:
            try:
                _check_done(done, lines)
            except _ResumeError as exc:
                print(f"grm-reward: cannot resume {args.output}: {exc}; the input changed since that run "
                      "(use the same input, or --overwrite to start again)", file=sys.stderr)
                return EXIT_CANNOT_RUN
            out_stream.seek(done.end)
            out_stream.truncate()
        rm = GenerativeRewardModel(config)
        try:
            rm.load()  # build the engine now: a missing model or dependency stops the run before any row
        except GRMError as exc:
            print(f"grm-reward: {exc}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        total = _count_rows(args.input, settings.max_line_bytes)
        total = None if total is None else total - summary.kept
        started = time.perf_counter()
        with tqdm(total=total, desc="scoring", unit="row", disable=args.quiet or None, file=sys.stderr) as bar:
            output = _Output(out_stream, summary, bar)
            try:
                outcome = asyncio.run(_judge_rows(rm, lines, output, settings))
            except _InputFailure as exc:
                print(f"grm-reward: cannot read the input: {exc}; {summary.written} rows were written this run",
                      file=sys.stderr)
                return EXIT_CANNOT_RUN
            except OSError as exc:
                if to_stdout:  # a closed pipe: stop writing, and keep the exit quiet
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                print(f"grm-reward: cannot write the output: {exc.strerror or exc} ({args.output or 'stdout'}); "
                      f"{summary.written} rows were written this run", file=sys.stderr)
                return EXIT_CANNOT_RUN
        summary.seconds = time.perf_counter() - started
    finally:
        if not from_stdin:  # (a read of stdin may still be waiting: closing would wait for it)
            in_stream.close()
        if not to_stdout:
            with contextlib.suppress(OSError):  # already reported: the write failed
                out_stream.close()
    if not args.quiet:
        _print_summary(summary, config, report)
    resume_hint = f"run again with --resume -o {args.output} to finish" if not to_stdout else "rows in order were written"
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        print(f"grm-reward: stopped by {name}: {summary.written} rows written in order; {resume_hint}", file=sys.stderr)
        return _EXIT_SIGNAL.get(signal.Signals(outcome.signal), 128 + outcome.signal)
    if outcome.tripped is not None:
        print(f"grm-reward: stopped judging: {outcome.tripped}; the rows after it are marked 'not judged'; "
              f"{resume_hint}", file=sys.stderr)
        return EXIT_JUDGE_FAILED
    return EXIT_ROW_ERRORS if summary.failed or summary.kept_errors else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    score = sub.add_parser(
        "score",
        help="score a JSONL file of {prompt, responses} rows",
        description=(
            "Score each row's responses with the judge; writes rewards and judgements as JSONL, each row as soon "
            "as it and the rows before it are done. Exit status: 0 all rows scored, 1 some rows have errors, "
            "2 could not run, 3 the judge kept failing (rows left 'not judged'), 130/143 stopped by SIGINT/SIGTERM."
        ),
    )
    score.add_argument("input", help="input JSONL file ('-' for stdin)")
    score.add_argument("-o", "--output", help="output JSONL file (default: stdout; the summary then goes to stderr)")
    written = score.add_mutually_exclusive_group()
    written.add_argument("--resume", action="store_true",
                         help="continue an output file: keep its rows (checked by line number and content hash) "
                              "and judge the rest")
    written.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    score.add_argument("--chunk-size", type=int, default=8, help="most rows in one backend batch (default 8)")
    score.add_argument("--in-flight", type=int, default=64,
                       help="most rows being judged at once; results are still written in input order (default 64)")
    score.add_argument("--max-consecutive-failures", type=int, default=8, metavar="N",
                       help="after N rows in a row fail because of the judge, mark the rest 'not judged' and stop "
                            "(0: never; default 8)")
    score.add_argument("--max-line-bytes", type=int, default=64 << 20, metavar="BYTES",
                       help="longer input lines become error rows without being read into memory (default 64 MiB)")
    score.add_argument("--show", type=int, default=20, help="rows shown in the summary table (-1: all; default 20)")
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_config_arguments(score)
    score.set_defaults(func=_cmd_score)
