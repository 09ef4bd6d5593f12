"""Judging each distinct thing once: bounded stores, their keys, and deduplication (pure, no I/O).

:class:`LRUStore` is the bounded keyed store behind the result cache and the shared-principle
cache; :func:`principle_key` and :func:`result_key` name what a stored value depends on;
:func:`dedup_batch` collapses duplicate responses and requests and :func:`expand_result` maps a
reward back. The model uses them (``GRMConfig.reuse``, ``GRMConfig.principles``); see docs/scoring.md.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from grm_reward.config import SERVING_SECTIONS, GRMConfig
from grm_reward.planning import fingerprint
from grm_reward.types import Request, RewardResult

__all__ = [
    "Deduplicated",
    "LRUStore",
    "config_identity",
    "dedup_batch",
    "expand_result",
    "principle_key",
    "result_key",
]

V = TypeVar("V")


class LRUStore(Generic[V]):
    """A dict of at most ``capacity`` entries; the least recently used one goes first.

    >>> store: LRUStore[int] = LRUStore(2)
    >>> store.put("a", 1); store.put("b", 2); store.get("a"); store.put("c", 3)
    1
    >>> "b" in store, store.get("a"), store.hits, store.misses
    (False, 1, 2, 0)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an LRUStore holds at least one entry, got capacity={capacity}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        """The value stored under ``key`` (now the most recently used), or None; counts a hit or a miss."""
        if key not in self._data:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key: str, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


def _digest(*parts: object) -> str:
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def config_identity(config: GRMConfig, judge: str) -> str:
    """Everything a reward depends on besides the request: ``judge`` (the engine's name) and every
    setting except the serving sections (:data:`~grm_reward.config.SERVING_SECTIONS`)."""
    return _digest(judge, config.model_dump(mode="json", exclude=set(SERVING_SECTIONS)))


def result_key(identity: str, request_fingerprint: str) -> str:
    """The result cache's key: a :func:`config_identity` and the request's content
    :func:`~grm_reward.planning.fingerprint` (prompt, responses, principles, reference)."""
    return _digest("result", identity, request_fingerprint)


def principle_key(judge: str, config: GRMConfig, template: str, context: str) -> str:
    """The shared-principle cache's key: the judge (engine, model, system prompt, budget, seed), the
    principles template's text and the conversation as shown. Responses, references and the
    defences do not enter: the principles read the query alone."""
    text = hashlib.blake2b(context.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()  # any size, one pass
    return _digest("principles", judge, config.model, config.system_prompt, config.max_new_tokens, config.seed, template, text)


@dataclass
class Deduplicated:
    """A batch with duplicates removed: ``unique`` to judge; input i is ``unique[slots[i]]`` with its
    responses read through ``maps[i]`` (response r of input i is response ``maps[i][r]`` of it)."""

    unique: list[Request]
    slots: list[int]
    maps: list[list[int]]
    #: the first input of each unique request (errors name it)
    first_input: list[int]
    #: each unique request's fingerprint (the result cache's key material)
    fingerprints: list[str]


def dedup_batch(requests: Sequence[Request], *, responses: bool) -> Deduplicated:
    """Identical requests collapsed into one; with ``responses``, also identical responses of one
    request (the first of each kept, in order).

    >>> d = dedup_batch([Request("q", ["a", "b", "a"]), Request("q", ["a", "b"])], responses=True)
    >>> [list(r.responses) for r in d.unique], d.slots, d.maps
    ([['a', 'b']], [0, 0], [[0, 1, 0], [0, 1]])
    """
    out = Deduplicated([], [], [], [], [])
    seen: dict[str, int] = {}
    for i, request in enumerate(requests):
        mapping = list(range(request.n))
        if responses:
            firsts: dict[str, int] = {}
            mapping = [firsts.setdefault(response, len(firsts)) for response in request.responses]
            if len(firsts) < request.n:
                request = replace(request, responses=list(firsts))
        print_ = fingerprint(request)
        slot = seen.get(print_)
        if slot is None:
            slot = seen[print_] = len(out.unique)
            out.unique.append(request)
            out.first_input.append(i)
            out.fingerprints.append(print_)
        out.slots.append(slot)
        out.maps.append(mapping)
    return out


def expand_result(result: RewardResult, mapping: Sequence[int]) -> RewardResult:
    """The result of the request whose response r is response ``mapping[r]`` of ``result``'s request.

    Rewards, votes, scores and defence records are read through ``mapping``; each sample's ``order``
    names the first input response of each response it was shown; ``best`` is the first copy of the
    best response, ``tie`` is unchanged (copies of one response are one response).

    >>> from grm_reward.types import Judgement
    >>> r = RewardResult([0.2, 0.9], [3.0, 10.0], [Judgement("", [3, 10], [1, 0])], 1, 1, False)
    >>> e = expand_result(r, [0, 1, 0])
    >>> e.rewards, e.samples[0].scores, e.samples[0].order, e.best
    ([0.2, 0.9, 0.2], [3, 10, 3], [1, 0], 1)
    """
    if list(mapping) == list(range(len(result.rewards))):
        return result
    first: dict[int, int] = {}
    for r, u in enumerate(mapping):
        first.setdefault(u, r)
    samples = [
        replace(
            s,
            scores=None if s.scores is None else [s.scores[u] for u in mapping],
            token_scores=None if s.token_scores is None else [s.token_scores[u] for u in mapping],
            order=[first[u] for u in s.order],
            principles=list(s.principles),
        )
        for s in result.samples
    ]
    return replace(
        result,
        rewards=[result.rewards[u] for u in mapping],
        votes=[result.votes[u] for u in mapping],
        samples=samples,
        best=None if result.best is None else first[result.best],
        usage=replace(result.usage),
        defences=[result.defences[u] for u in mapping] if len(result.defences) == len(result.rewards) else [],
    )
