"""Reading JSONL data files (grm_reward.jsonl): a bad line is that line's issue, never the whole file's."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from grm_reward.eval import loaders
from grm_reward.jsonl import LoadIssue, jsonl_rows

LINES = [
    b'{"prompt": "q", "chosen": "a", "rejected": "bb"}\r\n',  # CRLF
    b"\r\n",  # blank
    b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',  # Latin-1, not UTF-8
    b'{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}\n',  # an escaped lone surrogate
    b'\xef\xbb\xbf{"prompt": "q", "chosen": "bom", "rejected": "b"}\n',  # a BOM in the middle of the file
    b"[" * 100_000 + b"]" * 100_000 + b"\n",  # nested deeper than Python recurses
    b'{"prompt": "q", "chosen": "a", "rejected": "b", "chosen": "c"}\n',  # json read it as "c", silently
    b'{"prompt": "q", "chosen": "ok", "rejected": "b"}',  # no final newline
]


@pytest.mark.parametrize("gz", [False, True])
def test_bad_bytes_and_lone_surrogates_are_their_lines_issues(tmp_path: Path, gz: bool) -> None:
    # one non-UTF-8 byte made the whole file unreadable: "cannot read ...: 'utf-8' codec can't decode byte 0xe9"
    path = tmp_path / ("rows.jsonl.gz" if gz else "rows.jsonl")
    data = b"".join(LINES)
    path.write_bytes(gzip.compress(data) if gz else data)
    rows = list(jsonl_rows(path))
    issues = {number: row.message for number, row in rows if isinstance(row, LoadIssue)}
    good = {number: row["chosen"] for number, row in rows if not isinstance(row, LoadIssue)}
    assert good == {1: "a", 8: "ok"}
    assert issues == {
        3: "not valid UTF-8 (byte 0xe9 at byte 16)",
        4: "prompt contains a lone surrogate (an escape such as \\ud800), which is not text",
        5: "not valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1)",
        6: "JSON nested too deeply",  # was a RecursionError out of the loader
        7: "the key 'chosen' appears twice in one object",
    }
    loaded = loaders.load_pairwise(path)
    assert [i.responses[0] for i in loaded.items] == ["a", "ok"] and len(loaded.issues) == 5


def test_a_bom_at_the_start_of_the_file_is_skipped(tmp_path: Path) -> None:
    # editors on Windows write one; the first row was lost as "not valid JSON (Unexpected UTF-8 BOM)"
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    assert [row for _, row in jsonl_rows(path)] == [{"prompt": "q", "chosen": "a", "rejected": "b"}]
