"""Reading JSONL data files row by row: a bad row is reported (:class:`LoadIssue`), never fatal.

Shared by the evaluation loaders, the SPCT item / trajectory readers and the meta-RM rows.
A file that cannot be read raises :class:`~grm_reward.errors.DataError`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grm_reward.errors import DataError

__all__ = ["LoadIssue", "jsonl_rows", "not_object"]


@dataclass(frozen=True, slots=True)
class LoadIssue:
    """A row that could not be used: where it is and why."""

    source: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}, {self.where}: {self.message}"


def jsonl_rows(file: Path) -> Iterator[tuple[int, Mapping[str, Any] | LoadIssue]]:
    """(line number, row) for each non-blank line of a JSONL file, gzipped or not.

    A line that is not a JSON object comes back as a :class:`LoadIssue` naming the file and line,
    for the caller to report and skip; a file that cannot be read raises :class:`DataError`.
    """
    opener: Any = gzip.open if file.name.lower().endswith(".gz") else open
    try:
        with opener(file, "rt", encoding="utf-8") as stream:
            for number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                where = f"line {number}"
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError as exc:
                    yield number, LoadIssue(str(file), where, f"not valid JSON ({exc.msg} at column {exc.colno})")
                    continue
                yield number, row if isinstance(row, dict) else not_object(file, where, row)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc


def not_object(file: Path, where: str, row: Any) -> LoadIssue:
    """The issue of a row that parsed but is not a JSON object."""
    return LoadIssue(str(file), where, f"expected a JSON object, got {type(row).__name__}")
