"""`grm-reward score` end to end with a scripted backend."""

from __future__ import annotations

import json

from grm_reward.cli import main

BACKEND = "tests.helpers:length_backend"


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_score_writes_rewards_and_keeps_other_keys(tmp_path, capsys) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(
        src,
        [
            json.dumps({"id": 1, "prompt": "q", "responses": ["short", "a much longer response here"]}),
            json.dumps({"id": 2, "prompt": [{"role": "user", "content": "hi"}], "responses": ["hello there"],
                        "reference": "hello", "rewards": "kept"}),
        ],
    )
    code = main(["score", str(src), "-o", str(dst), "--backend", BACKEND, "-k", "3", "-q"])
    assert code == 0
    rows = read_jsonl(dst)
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[0]["votes"] == [3.0, 18.0] and rows[0]["best"] == 1
    assert len(rows[0]["rewards"]) == 2 and len(rows[0]["samples"]) == 3
    sample = rows[0]["samples"][0]
    assert {"scores", "valid", "reason", "principles", "critique", "order", "forced", "text"} <= set(sample)
    assert rows[1]["input_rewards"] == "kept"  # an input key named like an output key is not lost
    assert capsys.readouterr().out == ""  # -q: no summary


def test_malformed_rows_get_line_numbered_errors_and_others_are_scored(tmp_path, capsys) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(
        src,
        [
            json.dumps({"prompt": "q", "responses": ["one answer"]}),
            "{not json",
            "",
            json.dumps({"prompt": "q", "responses": []}),
            json.dumps(["a", "list"]),
            json.dumps({"responses": ["x"]}),
            json.dumps({"prompt": "q2", "responses": ["another answer", "b"]}),
        ],
    )
    code = main(["score", str(src), "-o", str(dst), "--backend", BACKEND])
    assert code == 1
    rows = read_jsonl(dst)
    assert len(rows) == 6
    assert rows[0]["rewards"] and rows[5]["rewards"]
    assert set(rows[1]) == {"line", "input_hash", "error"} and rows[1]["error"].startswith("line 2: not valid JSON")
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 6, 7]
    assert rows[2]["error"] == "line 4: responses is empty: give at least one response to score"
    assert rows[3]["error"].startswith("line 5: expected a JSON object")
    assert "line 6: missing key(s) ['prompt']" in rows[4]["error"]
    captured = capsys.readouterr()
    assert "line 2: not valid JSON" in captured.err
    assert "rows: 2 scored, 4 failed" in captured.out  # summary table on stdout when -o is given


def test_summary_shows_forced_share(tmp_path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    write_lines(src, [json.dumps({"prompt": "q", "responses": ["a", "b"]})])
    code = main(["score", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "tests.helpers:silent_backend",
                 "-k", "2", "--format-guarantee"])
    assert code == 0
    out = capsys.readouterr().out
    assert "forced 100.0%" in out and "2/2" in out


def test_stdout_output_when_no_file(tmp_path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    write_lines(src, [json.dumps({"prompt": "q", "responses": ["a"]})])
    assert main(["score", str(src), "--backend", BACKEND]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip())["votes"] == [1.0]
    assert "rows: 1 scored" in captured.err


def test_missing_input_and_bad_config(tmp_path, capsys) -> None:
    assert main(["score", str(tmp_path / "absent.jsonl"), "--backend", BACKEND]) == 2
    assert "does not exist" in capsys.readouterr().err
    src = tmp_path / "in.jsonl"
    write_lines(src, [json.dumps({"prompt": "q", "responses": ["a"]})])
    assert main(["score", str(src), "-k", "3", "--temperature", "0"]) == 2
    assert "would be identical" in capsys.readouterr().err


def test_config_command_prints_effective_settings(capsys) -> None:
    assert main(["config", "-k", "8"]) == 0
    out = capsys.readouterr().out
    assert "k: 8" in out and "backend: transformers" in out
