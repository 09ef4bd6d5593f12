"""Shared-prefix prefill plans: which token segments to run, once, for prompts that share prefixes.

Pure (no torch): :func:`prefill_levels` turns a batch's prompts into a radix tree of shared token
segments and lays it out as levels, one forward pass each; :func:`cheapest_plan` merges the levels
that do not pay for their padding (:func:`plan_cost`); the transformers backend runs the plan and
copies each level's KV cache rows to the next. See docs/backends.md ("Shared prefixes").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PrefillLevel", "cheapest_plan", "padded_cost", "plan_cost", "prefill_levels"]

#: A shared segment shorter than this is not worth a forward pass of its own: it is run per branch.
MIN_SHARED_TOKENS = 16
#: :func:`cheapest_plan` searches merges of trees up to this deep; a deeper one is run whole or as it is.
MAX_SEARCH_DEPTH = 24


@dataclass(frozen=True, slots=True)
class PrefillLevel:
    """One forward pass: row ``r`` continues row ``parents[r]`` of the level before with ``segments[r]``."""

    parents: list[int]
    segments: list[list[int]]


@dataclass(slots=True)
class _Node:
    start: int  # the segment is prompt[start:end] of any member
    end: int
    members: list[int]
    children: list[_Node] = field(default_factory=list)


def prefill_levels(prompts: Sequence[Sequence[int]], *, min_shared: int = MIN_SHARED_TOKENS) -> list[PrefillLevel]:
    """Levels whose segments, concatenated along the parents, spell each prompt; the last level's row
    ``i`` is ``prompts[i]``. Prompts must be distinct. Every shared prefix of ``min_shared`` tokens or
    more is run once.

    >>> head, a, b = [1] * 20, [2, 3], [4, 5]
    >>> [(level.parents, [len(s) for s in level.segments]) for level in prefill_levels([head + a, head + b])]
    [([0], [20]), ([0, 0], [2, 2])]
    >>> [len(s) for level in prefill_levels([[1, 2, 3], [1, 2, 4]]) for s in level.segments]  # too short to share
    [3, 3]
    """
    if len(set(map(tuple, prompts))) != len(prompts):
        raise ValueError("prefill_levels needs distinct prompts")
    if not prompts:
        return []
    root = _build(prompts, list(range(len(prompts))), 0)
    paths: list[list[_Node]] = [[] for _ in prompts]
    _collect(_dissolve(root, min_shared), [], paths)
    depth = max(len(path) for path in paths)
    levels: list[PrefillLevel] = []
    previous: dict[int, int] = {}  # id(node) -> its row in the level before
    for level in range(depth):
        rows: dict[int, int] = {}
        parents: list[int] = []
        segments: list[list[int]] = []
        for i, path in enumerate(paths):
            node = _at(path, level)
            if id(node) in rows:
                continue
            rows[id(node)] = len(parents)
            parents.append(previous[id(_at(path, level - 1))] if level else 0)
            # A prompt whose path is shorter than the tree is deep is carried on with empty segments.
            segments.append(list(prompts[i][node.start : node.end]) if level < len(path) else [])
        levels.append(PrefillLevel(parents, segments))
        previous = rows
    return levels


def padded_cost(levels: Sequence[PrefillLevel]) -> int:
    """Token positions the levels run, padding included (rows x widest segment, summed over levels)."""
    return sum(len(level.segments) * max((len(s) for s in level.segments), default=0) for level in levels)


def plan_cost(levels: Sequence[PrefillLevel], *, token_cost: float) -> float:
    """The work of running ``levels``, in query-key products of attention: each padded position costs
    ``token_cost`` (its linear layers, in those units) plus the keys it attends to. A pass that
    continues a cache or has padding computes the whole rectangle (every column before it, gaps
    included, and its own width); a first pass without padding, the causal triangle only.

    >>> whole = [PrefillLevel([0, 0], [[1] * 100, [2] * 100])]
    >>> plan_cost(whole, token_cost=10.0)  # 2 rows x 100 positions x (10 + 100 / 2)
    12000.0
    >>> shared = [PrefillLevel([0], [[1] * 90]), PrefillLevel([0, 0], [[1] * 10, [2] * 10])]
    >>> plan_cost(shared, token_cost=10.0)  # 90 x (10 + 45) + 2 x 10 x (10 + 100)
    7150.0
    """
    return _cost([[len(s) for s in level.segments] for level in levels], token_cost)


def cheapest_plan(
    prompts: Sequence[Sequence[int]], *, token_cost: float, min_shared: int = MIN_SHARED_TOKENS
) -> list[PrefillLevel]:
    """The plan of least :func:`plan_cost` among :func:`prefill_levels`' tree and the plans made by
    merging some of its levels into the next (each row of a merged level runs its own segments of
    both). Merging trades shared tokens for less padding and a narrower cache: the tree of four
    listwise requests (levels of 1, 4, 12 and 16 rows) pads its two deep levels to their widest
    segments, while head, query, then each prompt's whole rest pads nothing. One level (each prompt
    whole) is among the candidates; ties go to fewer levels.

    >>> head, tails = [1] * 200, [[2, 3] * 30, [4] * 60, [5] * 60]
    >>> [len(level.segments) for level in cheapest_plan([head + t for t in tails], token_cost=3000.0)]
    [1, 3]
    >>> lopsided = [[1] * 300 + [7], [1] * 300 + [8], [2] * 20 + [7] * 300, [2] * 20 + [8] * 300]
    >>> [len(level.segments) for level in prefill_levels(lopsided)], len(cheapest_plan(lopsided, token_cost=3000.0))
    ([2, 4], 1)
    """
    tree = prefill_levels(prompts, min_shared=min_shared)
    if len(tree) < 2:
        return tree
    depth = len(tree)
    lengths = [[len(s) for s in level.segments] for level in tree]
    parents = [level.parents for level in tree]
    everything = tuple(range(depth))
    if depth > MAX_SEARCH_DEPTH:
        candidates = [everything, (depth - 1,)]
    else:  # greedy: merge away, one at a time, the level whose merge leaves the cheapest plan
        candidates = [everything]
        while len(candidates[-1]) > 1:
            kept = candidates[-1]
            merges = [kept[:i] + kept[i + 1 :] for i in range(len(kept) - 1)]
            candidates.append(min(merges, key=lambda m: _cost(_merged_lengths(lengths, parents, m), token_cost)))
    best = min(reversed(candidates), key=lambda m: _cost(_merged_lengths(lengths, parents, m), token_cost))
    return _merged(tree, best)


def _cost(lengths: Sequence[Sequence[int]], token_cost: float) -> float:
    cost, keys = 0.0, 0
    for level in lengths:
        width = max(level, default=0)
        if width == 0:
            continue
        padded = any(n != width for n in level)
        attended = keys + width if keys or padded else width / 2
        cost += len(level) * width * (token_cost + attended)
        keys += width
    return cost


def _spans(kept: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) level of each pass, for the kept last levels ``kept`` (ascending)."""
    return [(kept[g - 1] + 1 if g else 0, end) for g, end in enumerate(kept)]


def _merged_lengths(lengths: Sequence[Sequence[int]], parents: Sequence[Sequence[int]], kept: Sequence[int]) -> list[list[int]]:
    """The segment lengths of the plan that runs levels ``first..last`` of each span as one pass."""
    merged = []
    for first, last in _spans(kept):
        row_lengths = []
        for row in range(len(lengths[last])):
            total, level = 0, last
            while level >= first:
                total += lengths[level][row]
                row, level = parents[level][row], level - 1
            row_lengths.append(total)
        merged.append(row_lengths)
    return merged


def _merged(tree: Sequence[PrefillLevel], kept: Sequence[int]) -> list[PrefillLevel]:
    levels = []
    for first, last in _spans(kept):
        parents, segments = [], []
        for row in range(len(tree[last].segments)):
            parts, level = [], last
            while level >= first:
                parts.append(tree[level].segments[row])
                row, level = tree[level].parents[row], level - 1
            parents.append(row)
            segments.append([token for part in reversed(parts) for token in part])
        levels.append(PrefillLevel(parents, segments))
    return levels


def _at(path: list[_Node], level: int) -> _Node:
    return path[min(level, len(path) - 1)]


def _build(prompts: Sequence[Sequence[int]], members: list[int], start: int) -> _Node:
    """The radix tree of ``members``, which share ``prompt[:start]``."""
    first = prompts[members[0]]
    if len(members) == 1:
        return _Node(start, len(first), members)
    shortest = min(len(prompts[m]) for m in members)
    end = start
    while end < shortest and all(prompts[m][end] == first[end] for m in members):
        end += 1
    node = _Node(start, end, members)
    branches: dict[int, list[int]] = {}
    for m in members:
        if len(prompts[m]) == end:
            node.children.append(_Node(end, end, [m]))  # this prompt ends where the others go on
        else:
            branches.setdefault(prompts[m][end], []).append(m)
    node.children.extend(_build(prompts, group, end) for group in branches.values())
    return node


def _dissolve(node: _Node, min_shared: int) -> list[_Node]:
    """The node, or its children when its shared segment is too short to run once."""
    if not node.children:
        return [node]
    children = [grand for child in node.children for grand in _dissolve(child, min_shared)]
    if node.end - node.start >= min_shared:
        node.children = children
        return [node]
    for child in children:
        child.start = node.start  # run the short segment once per branch
    return children


def _collect(nodes: list[_Node], path: list[_Node], paths: list[list[_Node]]) -> None:
    for node in nodes:
        if node.children:
            _collect(node.children, [*path, node], paths)
        else:
            paths[node.members[0]] = [*path, node]
