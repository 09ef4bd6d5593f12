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

from grm_reward.errors import DataError, InputError
from grm_reward.types import find_lone_surrogate

__all__ = ["LoadIssue", "duplicate_key", "json_object", "jsonl_rows", "not_object", "unique_keys"]


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
        with opener(file, "rb") as stream:  # bytes: one bad byte is its line's issue, not the file's
            for number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                where = f"line {number}"
                try:
                    row = json_object(raw, first_line=number == 1)
                except InputError as exc:
                    yield number, LoadIssue(str(file), where, str(exc))
                    continue
                surrogate = find_lone_surrogate(row)  # JSON allows "\ud800", which no encoder downstream accepts
                if surrogate is not None:
                    message = f"{surrogate} contains a lone surrogate (an escape such as \\ud800), which is not text"
                    yield number, LoadIssue(str(file), where, message)
                    continue
                yield number, row
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc


def json_object(raw: bytes, *, first_line: bool = False) -> dict[str, Any]:
    """One JSONL line as a JSON object, or :class:`InputError` saying what is wrong with it (not UTF-8,
    not JSON, nested too deeply, a key given twice, not an object). ``first_line``: a byte-order mark,
    as editors on Windows write, is skipped."""
    if first_line:
        raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        row = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys)  # a key twice: InputError
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise InputError("JSON nested too deeply") from None
    if not isinstance(row, dict):
        raise InputError(f"expected a JSON object, got {type(row).__name__}")
    return row


def not_object(file: Path, where: str, row: Any) -> LoadIssue:
    """The issue of a row that parsed but is not a JSON object."""
    return LoadIssue(str(file), where, f"expected a JSON object, got {type(row).__name__}")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: the object, or :class:`InputError` for a key given twice.

    ``json`` keeps the last of two equal keys, other parsers (a proxy, a log reader) the first: such a
    row or body has two readings, so it is refused rather than read one way silently.
    """
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise duplicate_key(key)
            seen.add(key)
    return members


def duplicate_key(key: str) -> InputError:
    """The error for a JSON object holding ``key`` twice."""
    return InputError(f"the key {key!r} appears twice in one object")
