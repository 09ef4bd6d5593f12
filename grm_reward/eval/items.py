"""The one item type every benchmark loader produces, and how an item becomes judge inputs.

An :class:`EvalItem` is one query with its responses and what the benchmark knows about them:

- ``task="best"``: one or more responses are acceptable (``good``) and the judge should rank one
  of them on top: RewardBench, RMB, LLMBar, the generic pairwise and best-of-N formats (one good
  response), XSTest (every response that behaves as desired is good);
- ``task="style"``: RM-Bench's 3 chosen and 3 rejected style variants (``responses[:3]`` chosen,
  ``responses[3:]`` rejected, each ordered concise, detailed plain, detailed markdown), read as
  a 3x3 chosen-vs-rejected grid;
- ``task="label"``: one response with a binary label (1 = correct), read by ROC-AUC
  (ReaLMistake).

How the judge sees an item is the *protocol*:

- ``list`` (the paper's, §5): all responses of an item in one judge input;
- ``pairs``: one judge input per (good, other) pair — RMB's default for best-of-N lists (the
  best must win all n-1 pairs) and RM-Bench's official 9 chosen-vs-rejected pairs.

A *view* is one judge input: the indices (into ``EvalItem.responses``) it shows, in that order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grm_reward.errors import InputError
from grm_reward.types import Judgement, Message, Request, Usage

__all__ = ["STYLE_LEVELS", "EvalItem", "ItemSamples", "Protocol", "Task", "View", "item_views", "view_request"]

Task = Literal["best", "style", "label"]
Protocol = Literal["list", "pairs"]
#: One judge input: indices into ``EvalItem.responses``, in the order they are given to the judge.
View = tuple[int, ...]

#: RM-Bench's style variants, in the order of its ``chosen`` / ``rejected`` lists.
STYLE_LEVELS = ("concise", "detailed", "markdown")


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One benchmark item (see the module docstring for the tasks).

    ``uid`` is unique within its benchmark and stable across runs; ``subset`` and ``section``
    name the groups the benchmark reports (e.g. ``llmbar-natural`` in ``Chat Hard``).
    """

    uid: str
    prompt: str | tuple[Message, ...]
    responses: tuple[str, ...]
    task: Task
    subset: str
    section: str
    good: frozenset[int] = frozenset()
    label: int | None = None

    def __post_init__(self) -> None:
        # The core's own validation (prompt and responses), so a bad row fails at load time.
        Request(prompt=self.prompt, responses=self.responses)
        n = len(self.responses)
        if self.task == "best":
            if not self.good or not all(0 <= g < n for g in self.good):
                raise InputError(f"acceptable response indices {sorted(self.good)} do not fit {n} responses")
            if len(self.good) == n:
                raise InputError("every response is acceptable: nothing to rank")
        elif self.task == "style":
            if n != 2 * len(STYLE_LEVELS):
                raise InputError(f"a style item needs {len(STYLE_LEVELS)} chosen and {len(STYLE_LEVELS)} rejected responses")
        elif self.task == "label":
            if n != 1 or self.label not in (0, 1):
                raise InputError("a label item needs exactly one response and a 0/1 label")
        else:
            raise InputError(f"unknown task {self.task!r}")

    @property
    def content_key(self) -> str:
        """A hash of everything the judge sees and the metric reads: a changed row gets new samples."""
        payload = json.dumps(
            [self.prompt if isinstance(self.prompt, str) else [dict(m) for m in self.prompt], list(self.responses),
             self.task, sorted(self.good), self.label],
            ensure_ascii=False,
            default=str,
        )
        return hashlib.blake2b(payload.encode("utf-8"), digest_size=8).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "task": self.task,
            "subset": self.subset,
            "section": self.section,
            "n": len(self.responses),
            "good": sorted(self.good),
            "label": self.label,
        }


@dataclass(slots=True)
class ItemSamples:
    """What one sampling pass produced for an item: for each view, its K judgements in sampling order.

    Each judgement's ``scores`` are in the view's order (``samples[v][j].scores[p]`` scores
    ``item.responses[views[v][p]]``). ``usage`` sums the judge tokens of all views.
    """

    item: EvalItem
    views: list[View]
    samples: list[list[Judgement]]
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0

    @property
    def num_samples(self) -> int:
        """Samples per view (K)."""
        return min(len(s) for s in self.samples) if self.samples else 0


def item_views(item: EvalItem, protocol: Protocol) -> list[View]:
    """The judge inputs of an item under a protocol.

    >>> pair = EvalItem("a", "q", ("x", "y", "z"), "best", "s", "S", good=frozenset({1}))
    >>> sorted(item_views(pair, "list")[0])   # one view, in an order fixed by the uid
    [0, 1, 2]
    >>> sorted(map(sorted, item_views(pair, "pairs")))   # the best against each other response
    [[0, 1], [1, 2]]
    """
    if protocol not in ("list", "pairs"):
        raise InputError(f"unknown protocol {protocol!r}: use 'list' or 'pairs'")
    n = len(item.responses)
    if protocol == "list" or item.task == "label" or n == 1:
        return [_arranged(item.uid, n)]
    if item.task == "style":
        k = len(STYLE_LEVELS)
        return [_placed(item.uid, i, k + j) for i in range(k) for j in range(k)]
    if len(item.good) != 1:
        raise InputError(
            f"item {item.uid}: the pairs protocol needs exactly one best response, this item has "
            f"{len(item.good)} acceptable ones (use the list protocol)"
        )
    (best,) = item.good
    return [_placed(item.uid, best, other) for other in range(n) if other != best]


# Views show responses in an order fixed by the item's uid, never in the dataset's order, where
# the chosen response often comes first. The core shuffles every sample anyway; this keeps
# ``shuffle="none"`` runs (and a judge's ``tie_break="first"``) from reading the label off a position.


def _arranged(uid: str, n: int) -> View:
    order = list(range(n))
    random.Random(f"grm-reward-view|{uid}").shuffle(order)
    return tuple(order)


def _placed(uid: str, good: int, other: int) -> View:
    digest = hashlib.blake2b(f"{uid}|{good}|{other}".encode(), digest_size=1).digest()
    return (good, other) if digest[0] % 2 == 0 else (other, good)


def view_request(item: EvalItem, view: Sequence[int]) -> Request:
    """The core request for one view of an item."""
    return Request(prompt=item.prompt, responses=[item.responses[i] for i in view])
