"""`grm-reward score` never loses finished work: rows written in order as they finish, signals,
--resume, the overwrite rule, bad bytes, an unwritable output, a dead judge, one flag spelling rule."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grm_reward.cli import build_parser, main
from grm_reward.cli.options import ALIASES, config_from_args

ROOT = Path(__file__).resolve().parents[2]
FAST = "tests.helpers:length_backend"


def rows_file(path: Path, n: int, *, start: int = 0) -> Path:
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": f"question {i}", "responses": ["a" * (i % 7 + 1), "bb"]}) + "\n"
                for i in range(start, start + n)),
        encoding="utf-8",
    )
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def score(*args: str) -> int:
    return main(["score", *args, "-q"])


def cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "grm_reward", "score", *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} rows after {timeout}s")


# --- rows are written as they finish, in order ---------------------------------------------------
def test_rows_keep_input_order_when_judged_out_of_order(tmp_path) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 60), tmp_path / "out.jsonl"
    assert score(str(src), "-o", str(dst), "--backend", "tests.score_backends:jittery_backend",
                 "--chunk-size", "2", "--in-flight", "16") == 0
    rows = read_rows(dst)
    assert [r["id"] for r in rows] == list(range(60)) and [r["line"] for r in rows] == list(range(1, 61))
    assert all(len(r["rewards"]) == 2 for r in rows)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_run_keeps_finished_rows_and_resume_completes_them(tmp_path, how) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 120), tmp_path / "out.jsonl"
    proc = cli(str(src), "-o", str(dst), "--backend", "tests.score_backends:slow_backend", "--chunk-size", "2",
               "--in-flight", "6", "-q")
    wait_for_rows(dst, 10, proc)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    expected = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}[how]
    assert proc.returncode == expected, err
    if how != signal.SIGKILL:
        assert f"stopped by {how.name}" in err and "--resume" in err and "Traceback" not in err
        rows = read_rows(dst)  # every row written is whole, in order, from line 1 on
        assert 10 <= len(rows) < 120 and [r["line"] for r in rows] == list(range(1, len(rows) + 1))
    resumed = cli(str(src), "-o", str(dst), "--backend", FAST, "--resume", "-q")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    rows = read_rows(dst)
    assert [r["id"] for r in rows] == list(range(120))  # each row exactly once, in order
    assert all("rewards" in r for r in rows)


# --- --resume and the overwrite rule ---------------------------------------------------------------
def test_an_existing_output_is_never_truncated_without_resume_or_overwrite(tmp_path, capsys) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    dst.write_text("precious results\n", encoding="utf-8")
    assert score(str(src), "-o", str(dst), "--backend", "tests.score_backends:must_not_be_built") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert dst.read_text(encoding="utf-8") == "precious results\n"
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--overwrite") == 0
    assert [r["id"] for r in read_rows(dst)] == [0, 1, 2]


def test_resume_skips_done_rows_drops_a_cut_off_row_and_appends(tmp_path, capsys) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 10), tmp_path / "out.jsonl"
    assert score(str(src), "-o", str(dst), "--backend", FAST) == 0
    full = dst.read_bytes()
    lines = full.splitlines(keepends=True)
    dst.write_bytes(b"".join(lines[:4]) + lines[4][:37])  # killed in the middle of writing row 5
    os.environ["GRM_TEST_CALLS"] = str(tmp_path / "calls")
    try:
        assert score(str(src), "-o", str(dst), "--backend", "tests.score_backends:jittery_backend", "--resume",
                     "--chunk-size", "1") == 0
    finally:
        del os.environ["GRM_TEST_CALLS"]
    assert (tmp_path / "calls").read_text().count("call") == 6  # rows 5..10 only
    rows = read_rows(dst)
    assert [r["id"] for r in rows] == list(range(10))
    assert dst.read_bytes()[: sum(map(len, lines[:4]))] == b"".join(lines[:4])  # finished rows untouched
    rows_file(src, 3, start=10)  # the input grew: resume appends the new rows
    src.write_text(rows_file(tmp_path / "a.jsonl", 10).read_text() + rows_file(tmp_path / "b.jsonl", 3, start=10)
                   .read_text(), encoding="utf-8")
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--resume") == 0
    assert [r["id"] for r in read_rows(dst)] == list(range(13))
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--resume") == 0  # nothing left: a no-op
    assert [r["id"] for r in read_rows(dst)] == list(range(13))


def test_resume_refuses_an_input_that_changed(tmp_path, capsys) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    assert score(str(src), "-o", str(dst), "--backend", FAST) == 0
    before = dst.read_bytes()
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace("question 2", "question two")
    src.write_text("".join(lines), encoding="utf-8")
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--resume") == 2
    assert "input line 3 changed" in capsys.readouterr().err
    src.write_text("\n" + "".join(lines[:2]), encoding="utf-8")  # a shifted line: numbers no longer match
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--resume") == 2
    assert "is input line 1, but the input's row 1 is line 2" in capsys.readouterr().err
    assert dst.read_bytes() == before
    (tmp_path / "other.jsonl").write_text("not a row\n", encoding="utf-8")
    assert score(str(src), "-o", str(tmp_path / "other.jsonl"), "--backend", FAST, "--resume") == 2
    assert "is not a row of grm-reward score" in capsys.readouterr().err
    assert score(str(src), "--backend", FAST, "--resume") == 2
    assert "--resume needs an output file" in capsys.readouterr().err


# --- bad bytes and bad places -----------------------------------------------------------------------
def test_lone_surrogates_bad_bytes_huge_and_deep_lines_are_their_own_error_rows(tmp_path, capsys) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = json.dumps({"prompt": "q", "responses": ["fine"]}).encode()
    src.write_bytes(b"\n".join([
        good,
        b'{"prompt": "q", "responses": ["bad \\ud800 text"], "id": "\\udfff"}',
        b'{"prompt": "q\xff", "responses": ["x"]}',
        b'{"prompt": "q", "responses": ["' + b"y" * 400_000 + b'"]}',
        b"[" * 100_000 + b"]" * 100_000,
        good,
    ]) + b"\n")
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--max-line-bytes", "300000") == 1
    rows = read_rows(dst)
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert "rewards" in rows[0] and "rewards" in rows[5]
    assert rows[1]["error"].startswith("line 2: responses.0 contains a lone surrogate")
    assert rows[1]["id"] == "\udfff"  # other keys are copied as they were (escaped)
    assert rows[2]["error"] == "line 3: not valid UTF-8 (byte 0xff at byte 14)"
    assert rows[3]["error"] == "line 4: line is 400035 bytes, over --max-line-bytes 300000"
    assert rows[4]["error"] == "line 5: JSON nested too deeply"
    assert "Traceback" not in capsys.readouterr().err


def test_a_byte_order_mark_at_the_start_of_the_file_is_skipped(tmp_path) -> None:
    # the first row was lost as "not valid JSON (Unexpected UTF-8 BOM ...)"
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"id": 0, "prompt": "q", "responses": ["a"]}\r\n{"id": 1, "prompt": "q", "responses": ["b"]}\r\n')
    assert score(str(source), "-o", str(tmp_path / "out.jsonl"), "--backend", FAST, "-k", "1") == 0
    assert [(row["id"], "error" in row) for row in read_rows(tmp_path / "out.jsonl")] == [(0, False), (1, False)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_read_once_like_stdin(tmp_path, capsys) -> None:
    # `grm-reward score <(zcat rows.jsonl.gz)` was refused: "input file /dev/fd/63 does not exist"
    import threading

    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    rows = rows_file(tmp_path / "rows.jsonl", 3).read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as stream:
            stream.write(rows)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    assert score(str(fifo), "-o", str(tmp_path / "out.jsonl"), "--backend", FAST, "-k", "1") == 0
    writer.join(5)
    assert [row["id"] for row in read_rows(tmp_path / "out.jsonl")] == [0, 1, 2]
    assert score(str(tmp_path), "-o", str(tmp_path / "x.jsonl"), "--backend", FAST) == 2
    assert f"input file {tmp_path} is a directory" in capsys.readouterr().err


def test_a_key_given_twice_is_the_lines_error(tmp_path) -> None:
    # json kept the last "prompt" and scored the row silently; the server refuses such a body too
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a", "responses": ["x"], "prompt": "b"}\n{"prompt": "q", "responses": ["y"]}\n')
    assert score(str(source), "-o", str(tmp_path / "out.jsonl"), "--backend", FAST, "-k", "1") == 1
    first, second = read_rows(tmp_path / "out.jsonl")
    assert first["error"] == "line 1: the key 'prompt' appears twice in one object" and "rewards" in second


def test_empty_input_gives_an_empty_output(tmp_path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n  \n")
    assert score(str(src), "-o", str(dst), "--backend", FAST) == 0
    assert dst.read_bytes() == b""


@pytest.mark.parametrize("target", ["missing-dir/out.jsonl", "a-dir", "a-file/out.jsonl"])
def test_an_unwritable_output_stops_before_any_judging(tmp_path, capsys, target) -> None:
    src = rows_file(tmp_path / "in.jsonl", 2)
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    code = score(str(src), "-o", str(tmp_path / target), "--backend", "tests.score_backends:must_not_be_built")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("grm-reward: cannot write the output") and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_a_clear_error(tmp_path, capsys) -> None:
    src = rows_file(tmp_path / "in.jsonl", 3)
    assert score(str(src), "-o", "/dev/full", "--backend", FAST) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err


# --- a failing judge ------------------------------------------------------------------------------
def test_a_dead_judge_fails_the_remaining_rows_fast(tmp_path, capsys) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 60), tmp_path / "out.jsonl"
    os.environ["GRM_TEST_CALLS"] = str(tmp_path / "calls")
    try:
        code = main(["score", str(src), "-o", str(dst), "--backend", "tests.score_backends:dead_backend",
                     "--chunk-size", "1", "--in-flight", "4"])
    finally:
        del os.environ["GRM_TEST_CALLS"]
    assert code == 3
    calls = (tmp_path / "calls").read_text().count("call")
    assert 8 <= calls <= 8 + 4  # the budget, plus the rows already in flight
    rows = read_rows(dst)
    assert [r["id"] for r in rows] == list(range(60)) and all(r["retryable"] for r in rows)
    assert rows[0]["error"] == "line 1: GenerationError: judge at http://127.0.0.1:9/v1 refused the connection"
    not_judged = [r for r in rows if "not judged" in r["error"]]
    assert len(not_judged) >= 60 - calls
    assert not_judged[-1]["error"] == ("line 60: not judged: the judge failed on the last 8 rows: "
                                       "GenerationError: judge at http://127.0.0.1:9/v1 refused the connection")
    captured = capsys.readouterr()
    assert "stopped judging: the judge failed on the last 8 rows" in captured.err
    assert f"({len(not_judged)} not judged)" in captured.out
    # The judge is back: --resume judges the failed tail again.
    assert score(str(src), "-o", str(dst), "--backend", FAST, "--resume") == 0
    rows = read_rows(dst)
    assert [r["id"] for r in rows] == list(range(60)) and all("rewards" in r for r in rows)


def test_an_open_circuit_stops_judging_at_once(tmp_path, capsys) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 30), tmp_path / "out.jsonl"
    assert score(str(src), "-o", str(dst), "--backend", "tests.score_backends:unavailable_backend",
                 "--chunk-size", "1", "--in-flight", "1") == 3
    rows = read_rows(dst)
    assert rows[0]["error"].startswith("line 1: JudgeUnavailableError")
    assert rows[1]["error"].startswith("line 2: not judged: the judge is unavailable (retry after 30s)")
    assert len(rows) == 30


def test_foreign_exceptions_stay_on_their_rows_without_stray_tracebacks(tmp_path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"prompt": "boom" if i % 5 == 0 else f"q{i}", "responses": ["a", "b"]}) + "\n"
                           for i in range(40)), encoding="utf-8")
    proc = cli(str(src), "-o", str(dst), "--backend", "tests.score_backends:boom_backend", "--chunk-size", "1",
               "--max-consecutive-failures", "0")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    rows = read_rows(dst)
    assert [("error" in r) for r in rows] == [i % 5 == 0 for i in range(40)]
    assert all(r["error"].endswith("RuntimeError: boom") for r in rows if "error" in r)
    assert "Task exception was never retrieved" not in err and "Traceback" not in err


# --- one spelling rule for every command ------------------------------------------------------------
def _config_flags(parser) -> dict[str, str]:
    return {opt: action.dest for action in parser._actions for opt in action.option_strings
            if action.dest.split("__")[0] in {"k", "model", "backend", "openai", "transformers", "vllm", "temperature"}}


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))
    if any("--config" in a.option_strings for a in parser._actions):
        yield prefix, parser


def test_every_command_takes_the_same_setting_spellings() -> None:
    commands = dict(_commands(build_parser()))
    assert {("score",), ("serve",), ("config",), ("eval",), ("spct", "rft-data")} <= set(commands)
    spellings = {name: _config_flags(parser) for name, parser in commands.items()}
    reference = spellings[("score",)]
    assert reference["--base-url"] == reference["--openai-base-url"] == "openai__base_url"
    assert reference["-k"] == "k"
    for name, flags in spellings.items():
        assert flags == reference, name
    for name, parser in commands.items():  # an alias is there exactly where its field is
        option_strings = {o for a in parser._actions for o in a.option_strings}
        for path, alias in ALIASES.items():
            long = "--" + path.replace(".", "-").replace("_", "-") if "." in path else "--" + path.replace("_", "-")
            assert (alias in option_strings) == (long in option_strings), (name, alias)


def test_base_url_reaches_the_config_in_score_and_serve() -> None:
    for argv in (["score", "in.jsonl", "--base-url", "http://judge:8000/v1"],
                 ["serve", "--base-url", "http://judge:8000/v1"],
                 ["config", "--openai-base-url", "http://judge:8000/v1"]):
        assert config_from_args(build_parser().parse_args(argv)).openai.base_url == "http://judge:8000/v1"


def test_the_output_may_not_be_the_input(tmp_path, capsys) -> None:
    src = rows_file(tmp_path / "in.jsonl", 2)
    before = src.read_bytes()
    assert score(str(src), "-o", str(src), "--backend", "tests.score_backends:must_not_be_built", "--overwrite") == 2
    assert "is the input file" in capsys.readouterr().err and src.read_bytes() == before


def test_stdin_input_streams(tmp_path) -> None:
    src, dst = rows_file(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    with src.open("rb") as stdin:
        proc = cli("-", "-o", str(dst), "--backend", FAST, "-q", stdin=stdin)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [r["id"] for r in read_rows(dst)] == list(range(5))


def test_an_unreachable_http_judge_floods_nothing(tmp_path) -> None:
    from tests.servers import free_port

    src, dst = rows_file(tmp_path / "in.jsonl", 24), tmp_path / "out.jsonl"
    proc = cli(str(src), "-o", str(dst), "--backend", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
               "--model", "judge", "-k", "4", "--openai-max-retries", "1", "--openai-backoff-max-s", "0.01", "-q")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "never retrieved" not in err and "Traceback" not in err
    assert len(read_rows(dst)) == 24


def test_rows_from_a_quiet_stdin_are_written_at_once_and_sigterm_exits_cleanly(tmp_path) -> None:
    dst = tmp_path / "out.jsonl"
    with cli("-", "-o", str(dst), "--backend", FAST, "-q", stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        for i in range(3):
            proc.stdin.write(json.dumps({"id": i, "prompt": "q", "responses": ["a"]}) + "\n")
        proc.stdin.flush()  # the pipe stays open: the producer (a trainer, a generator) is still working
        wait_for_rows(dst, 3, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # stdin still open: the reader thread is blocked in a read when the process exits
        err = proc.stderr.read()
    assert proc.returncode == 143, err
    assert "Fatal Python error" not in err and "Traceback" not in err
    assert [r["id"] for r in read_rows(dst)] == [0, 1, 2]
