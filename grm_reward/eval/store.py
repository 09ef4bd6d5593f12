"""Completed items of a sampling pass, one JSON line each, so an interrupted run resumes.

A benchmark entry's samples live in ``<output>/samples/<entry>-<sampling key>.jsonl``. The
sampling key hashes everything that changes what the judge is asked or how it samples: the
GRMConfig (less the fields that only shape the final reward, which the harness recomputes),
the prompt templates' version and the protocol. A changed setting therefore writes to a new
file and never reuses stale samples. Each line is keyed by the item's uid and a hash of its
content, so an edited row is sampled again. A line cut short by a crash is ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from grm_reward.config import SERVING_SECTIONS, GRMConfig
from grm_reward.eval.items import EvalItem, ItemSamples, Protocol, View
from grm_reward.prompts import PROMPT_VERSION
from grm_reward.types import Judgement, Principle, Usage

__all__ = [
    "REWARD_ONLY_FIELDS",
    "SECRET_FIELDS",
    "SampleStore",
    "judgement_from_dict",
    "judgement_to_dict",
    "record_key",
    "sampling_key",
]

#: GRMConfig fields that shape the reward computed from the samples but not the samples.
REWARD_ONLY_FIELDS = frozenset({"normalize", "tie_break", "failure_reward", "on_all_invalid"})

#: Config fields (at any depth) that hold credentials: never written out, never part of the key.
SECRET_FIELDS = frozenset({"api_key"})

_TEXT_FIELDS = ("text", "critique", "principles")
_FORMAT = 1


def sampling_key(config: GRMConfig, protocol: Protocol) -> str:
    """A short hash of every setting that changes the samples."""
    ignored = REWARD_ONLY_FIELDS | SERVING_SECTIONS
    settings = {k: v for k, v in public_settings(config, drop_secrets=True).items() if k not in ignored}
    payload = json.dumps([settings, PROMPT_VERSION, protocol, _FORMAT], sort_keys=True)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=6).hexdigest()


def public_settings(config: GRMConfig, *, drop_secrets: bool = False) -> dict[str, Any]:
    """The config as plain data with credentials redacted (or dropped): safe to write to disk.

    >>> public_settings(GRMConfig())["k"]
    1
    """

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in SECRET_FIELDS:
                    if not drop_secrets:
                        out[key] = None if item is None else "<redacted>"
                    continue
                out[key] = clean(item)
            return out
        return value

    return clean(config.model_dump(mode="json"))  # type: ignore[no-any-return]


def record_key(item: EvalItem) -> str:
    return f"{item.uid}|{item.content_key}"


def judgement_to_dict(judgement: Judgement, *, keep_text: bool = True) -> dict[str, Any]:
    data = judgement.to_dict()
    data.pop("valid", None)
    if not keep_text:
        for key in _TEXT_FIELDS:
            data.pop(key, None)
    return data


def judgement_from_dict(data: Mapping[str, Any]) -> Judgement:
    return Judgement(
        text=data.get("text", ""),
        scores=data.get("scores"),
        order=list(data.get("order", [])),
        principles=[Principle(p["text"], p.get("weight")) for p in data.get("principles", [])],
        critique=data.get("critique", ""),
        reason=data.get("reason"),
        forced=bool(data.get("forced", False)),
        token_scores=data.get("token_scores"),
        meta_score=data.get("meta_score"),
        seed=data.get("seed"),
        completion_tokens=int(data.get("completion_tokens", 0)),
        finish_reason=data.get("finish_reason"),
    )


class SampleStore:
    """The JSONL file of one benchmark's completed items for one sampling key."""

    def __init__(self, folder: Path, entry: str, key: str, header: Mapping[str, Any] | None = None) -> None:
        self.path = Path(folder) / f"{_file_name(entry)}-{key}.jsonl"
        self.key = key
        self._header = dict(header or {})

    def reset(self) -> None:
        """Forget every stored item (``--no-resume``)."""
        self.path.unlink(missing_ok=True)

    def read(self, items: Iterable[EvalItem], views_of: Any) -> tuple[dict[str, ItemSamples], int]:
        """The stored samples of ``items`` (by uid), and how many stored lines were unusable.

        ``views_of(item)`` gives the views the current protocol asks for; a record whose views
        differ is not reused.
        """
        if not self.path.is_file():
            return {}, 0
        wanted = {record_key(item): item for item in items}
        found: dict[str, ItemSamples] = {}
        unusable = 0
        with open(self.path, encoding="utf-8") as stream:
            for raw in stream:
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    unusable += 1  # a line cut short by an interruption
                    continue
                if not isinstance(record, dict) or "key" not in record:
                    continue  # the header
                item = wanted.get(record["key"])
                if item is None:
                    continue  # an item this run does not select, or an edited row
                try:
                    samples = _samples_from_record(item, record)
                except (KeyError, TypeError, ValueError):
                    unusable += 1
                    continue
                if samples.views != [tuple(v) for v in views_of(item)]:
                    unusable += 1
                    continue
                found[item.uid] = samples
        return found, unusable

    def append(self, records: Iterable[ItemSamples], *, keep_text: bool = True) -> None:
        """Add completed items (one line each, flushed at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as stream:
            if new_file:
                stream.write(json.dumps({"format": _FORMAT, "sampling_key": self.key, **self._header}) + "\n")
            for record in records:
                stream.write(json.dumps(_record(record, keep_text), ensure_ascii=False) + "\n")
            stream.flush()


def _file_name(entry: str) -> str:
    """``entry`` as a portable file name; one that had to be changed gets a hash so names stay distinct.

    >>> _file_name("rewardbench"), _file_name("pairwise:a")
    ('rewardbench', 'pairwise-a-1e647760')
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", entry)
    if safe == entry:
        return entry
    return f"{safe}-{hashlib.blake2b(entry.encode('utf-8', 'surrogatepass'), digest_size=4).hexdigest()}"


def _record(samples: ItemSamples, keep_text: bool) -> dict[str, Any]:
    return {
        "key": record_key(samples.item),
        "uid": samples.item.uid,
        "views": [list(v) for v in samples.views],
        "samples": [[judgement_to_dict(j, keep_text=keep_text) for j in view] for view in samples.samples],
        "usage": {"prompt_tokens": samples.usage.prompt_tokens, "completion_tokens": samples.usage.completion_tokens},
        "seconds": round(samples.seconds, 4),
    }


def _samples_from_record(item: EvalItem, record: Mapping[str, Any]) -> ItemSamples:
    views: list[View] = [tuple(int(i) for i in v) for v in record["views"]]
    samples = [[judgement_from_dict(j) for j in view] for view in record["samples"]]
    if len(samples) != len(views) or not all(samples):
        raise ValueError("views and samples do not match")
    usage = Usage(**record.get("usage", {}))
    return ItemSamples(item, views, samples, usage, float(record.get("seconds", 0.0)))
