"""SPCT input items: a query, 1..n responses, and which one is best (or whether a lone one is correct).

A :class:`PreferenceItem` is what every SPCT data builder reads. Sources:

- **generic JSONL**, one item per line, each row in one of three shapes (other keys ignored,
  an optional ``id`` names the item, else ``<file stem>:<line>``):

  - pairwise ``{"prompt", "chosen", "rejected"}``: the two responses are put in a seeded random
    order and ``best`` is where ``chosen`` landed;
  - best-of-N ``{"prompt", "responses": [...], "best": i}`` (0-based, n >= 2, order kept);
  - single response ``{"prompt", "response", "label": 0 | 1}`` (1 = correct, the paper's rating
    of single responses);

  ``prompt`` is a string or a list of chat messages whose last user turn is the query;

- **benchmark sets** read by the evaluation harness's loaders (:mod:`grm_reward.eval.loaders`),
  named like ``rewardbench`` or ``rmb=PATH``: every item with exactly one best response maps
  cleanly (RewardBench, RMB, LLMBar, XSTest prompts with one acceptable completion, the generic
  pairwise/best-of-N readers) and ReaLMistake's single responses keep their 0/1 label; chosen and
  rejected responses are put in a seeded random order. ``hh_rlhf`` reads HH-RLHF transcripts.
  RM-Bench's style grids and items with several acceptable responses have no single best and
  are left out (counted in the notes): Eq. 10 needs "ground-truth rewards [that] only contain
  one maximum".

A malformed row is reported with its file and line (:class:`~grm_reward.jsonl.LoadIssue`)
and skipped; it never stops a run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grm_reward.errors import DataError, InputError
from grm_reward.eval.benchmarks import BENCHMARKS, DATA_ENV, default_data_root
from grm_reward.eval.items import EvalItem
from grm_reward.eval.loaders import Loaded, load_hh_rlhf
from grm_reward.jsonl import LoadIssue, jsonl_rows
from grm_reward.types import Message, Request

__all__ = [
    "SOURCES",
    "LoadedItems",
    "PreferenceItem",
    "item_from_row",
    "load_items",
    "shuffled_pair",
]

#: Named sources besides the evaluation benchmarks: name -> (reader, default path under the data root).
_EXTRA_SOURCES = {"hh_rlhf": (load_hh_rlhf, "hh_rlhf/harmless-base_test.jsonl.gz")}

#: Every name ``load_items`` accepts instead of a file path (``NAME`` or ``NAME=PATH``).
SOURCES: tuple[str, ...] = (*BENCHMARKS, *_EXTRA_SOURCES)


@dataclass(frozen=True, slots=True)
class PreferenceItem:
    """One SPCT item: a query, its responses and the ground truth of Eq. 10.

    With n >= 2 responses, ``best`` is the 0-based index of the single best one; with one
    response, ``label`` is 1 (correct) or 0 (incorrect). ``where`` says where it came from.

    >>> PreferenceItem("a", "2+2?", ("4", "5"), best=0).n
    2
    >>> PreferenceItem("b", "2+2?", ("5",), label=0).label
    0
    """

    id: str
    prompt: str | tuple[Message, ...]
    responses: tuple[str, ...]
    best: int | None = None
    label: int | None = None
    where: str = ""

    def __post_init__(self) -> None:
        Request(prompt=self.prompt, responses=self.responses)  # the core's own checks
        n = len(self.responses)
        if n == 1:
            if self.best is not None:
                raise InputError("a single response takes a 'label' (0 or 1), not a 'best' index")
            if isinstance(self.label, bool) or self.label not in (0, 1):
                raise InputError(f"a single response needs 'label' 0 (incorrect) or 1 (correct), got {self.label!r}")
        else:
            if self.label is not None:
                raise InputError(f"{n} responses take a 'best' index, not a 'label'")
            if isinstance(self.best, bool) or not isinstance(self.best, int) or not 0 <= self.best < n:
                raise InputError(f"'best' must be a response index 0..{n - 1}, got {self.best!r}")

    @property
    def n(self) -> int:
        return len(self.responses)

    @property
    def request(self) -> Request:
        return Request(prompt=self.prompt, responses=self.responses)

    def prompt_json(self) -> str | list[dict[str, Any]]:
        return self.prompt if isinstance(self.prompt, str) else [dict(m) for m in self.prompt]


@dataclass
class LoadedItems:
    """The items of a source, the rows that could not be used, and notes on rows left out on purpose."""

    items: list[PreferenceItem] = field(default_factory=list)
    issues: list[LoadIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""


def shuffled_pair(chosen: str, rejected: Sequence[str], key: str, seed: int) -> tuple[tuple[str, ...], int]:
    """``(responses, best)``: chosen and rejected in a random order fixed by ``seed`` and ``key``.

    >>> shuffled_pair("good", ["bad"], "row-1", 0) == shuffled_pair("good", ["bad"], "row-1", 0)
    True
    """
    responses = [chosen, *rejected]
    order = list(range(len(responses)))
    random.Random(f"grm-reward-spct|{seed}|{key}").shuffle(order)
    return tuple(responses[i] for i in order), order.index(0)


def item_from_row(row: Mapping[str, Any], default_id: str, *, seed: int = 0, where: str = "") -> PreferenceItem:
    """A generic JSONL row (pairwise, best-of-N or single-response; see the module docstring) as an item."""
    if "prompt" not in row:
        raise InputError("missing key 'prompt'")
    prompt = _prompt(row["prompt"])
    item_id = row.get("id", default_id)
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise InputError(f"'id' must be a string or an integer, got {type(item_id).__name__}")
    item_id = str(item_id)
    shapes = [key for key in ("chosen", "responses", "response") if key in row]
    if len(shapes) != 1:
        raise InputError(
            "a row needs exactly one of 'chosen'+'rejected' (pairwise), 'responses'+'best' (best-of-N) "
            f"or 'response'+'label' (single response); found {shapes or 'none'}"
        )
    shape = shapes[0]
    if shape == "chosen":
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise InputError("'chosen' and 'rejected' must both be strings")
        responses, best = shuffled_pair(chosen, [rejected], item_id, seed)
        return PreferenceItem(item_id, prompt, responses, best=best, where=where)
    if shape == "responses":
        responses_value = row["responses"]
        if not isinstance(responses_value, list) or len(responses_value) < 2:
            raise InputError("'responses' must be a list of at least 2 strings (use 'response' for one)")
        if "best" not in row:
            raise InputError("a best-of-N row needs 'best', the 0-based index of the best response")
        return PreferenceItem(item_id, prompt, tuple(responses_value), best=row["best"], where=where)
    if "label" not in row:
        raise InputError("a single-response row needs 'label': 1 (correct) or 0 (incorrect)")
    return PreferenceItem(item_id, prompt, (row["response"],), label=row["label"], where=where)


def load_items(
    source: str,
    *,
    seed: int = 0,
    data_root: str | Path | None = None,
    limit: int | None = None,
) -> LoadedItems:
    """The items of ``source``: a generic JSONL file, or a named set (``NAME`` or ``NAME=PATH``, see :data:`SOURCES`).

    ``limit`` keeps a seeded random sample of that many items (in source order). A missing or
    unreadable file raises :class:`~grm_reward.errors.DataError`; malformed rows are issues.
    """
    name, sep, path = source.partition("=")
    named = name.strip() in SOURCES and (bool(sep) or not Path(source).exists())
    loaded = _load_named(name.strip(), path.strip() or None, seed, data_root) if named else _load_jsonl(Path(source), seed)
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit must be at least 1, got {limit}")
        if limit < len(loaded.items):
            keep = set(random.Random(f"grm-reward-spct-limit|{seed}").sample(range(len(loaded.items)), limit))
            loaded.items = [item for i, item in enumerate(loaded.items) if i in keep]
    return loaded


# --- generic JSONL ----------------------------------------------------------------------------


def _load_jsonl(path: Path, seed: int) -> LoadedItems:
    if not path.is_file():
        hint = f" (named sets: {', '.join(SOURCES)})" if "/" not in str(path) else ""
        raise DataError(f"input file {path} does not exist{hint}")
    loaded = LoadedItems(source=str(path))
    seen: dict[str, int] = {}
    stem = path.name.split(".")[0]
    for number, row in jsonl_rows(path):
        where = f"line {number}"
        if isinstance(row, LoadIssue):
            loaded.issues.append(row)
            continue
        try:
            item = item_from_row(row, f"{stem}:{number}", seed=seed, where=f"{path}, {where}")
        except (InputError, TypeError) as exc:
            loaded.issues.append(LoadIssue(str(path), where, str(exc)))
            continue
        count = seen.get(item.id, 0)
        seen[item.id] = count + 1
        if count:
            loaded.notes.append(f"{path}, {where}: id {item.id!r} repeats; renamed {item.id}#{count + 1}")
            item = PreferenceItem(f"{item.id}#{count + 1}", item.prompt, item.responses, item.best, item.label, item.where)
        loaded.items.append(item)
    return loaded

def _prompt(value: Any) -> str | tuple[Message, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for j, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
                raise InputError(f"'prompt' message {j} needs 'role' and 'content'")
        return tuple({"role": m["role"], "content": m["content"]} for m in value)
    raise InputError(f"'prompt' must be a string or a list of chat messages, got {type(value).__name__}")


# --- named sets -------------------------------------------------------------------------------


def _load_named(name: str, path: str | None, seed: int, data_root: str | Path | None) -> LoadedItems:
    if name in _EXTRA_SOURCES:
        reader, default_path = _EXTRA_SOURCES[name]
    else:
        benchmark = BENCHMARKS[name]
        reader, default_path = benchmark.load, benchmark.default_path  # type: ignore[assignment]
    if path is None:
        root = Path(data_root).expanduser() if data_root is not None else default_data_root()
        if default_path is None:
            raise DataError(f"{name!r} reads your own file: give it as {name}=PATH")
        if root is None:
            raise DataError(f"where is {name}? Give {name}=PATH, or a data root with --data-root or ${DATA_ENV}")
        resolved = root / default_path
    else:
        resolved = Path(path).expanduser()
    loaded: Loaded = reader(resolved)
    return _from_eval_items(loaded, f"{name}={resolved}", seed)


def _from_eval_items(loaded: Loaded, source: str, seed: int) -> LoadedItems:
    out = LoadedItems(issues=list(loaded.issues), notes=list(loaded.notes), source=source)
    several, grids = 0, 0
    for item in loaded.items:
        converted = _from_eval_item(item, seed, source)
        if converted is None:
            if item.task == "style":
                grids += 1
            else:
                several += 1
            continue
        out.items.append(converted)
    if several:
        out.notes.append(f"{several} items left out: several acceptable responses, no single best (Eq. 10)")
    if grids:
        out.notes.append(f"{grids} RM-Bench style grids left out: 3 chosen x 3 rejected has no single best")
    return out


def _from_eval_item(item: EvalItem, seed: int, source: str) -> PreferenceItem | None:
    where = f"{source}, item {item.uid}"
    if item.task == "label":
        return PreferenceItem(item.uid, item.prompt, item.responses, label=item.label, where=where)
    if item.task != "best" or len(item.good) != 1:
        return None
    (good,) = item.good
    others = [r for i, r in enumerate(item.responses) if i != good]
    responses, best = shuffled_pair(item.responses[good], others, item.uid, seed)
    return PreferenceItem(item.uid, item.prompt, responses, best=best, where=where)
