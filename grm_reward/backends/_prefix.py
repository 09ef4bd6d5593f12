"""Shared-prefix prefill plans: which token segments to run, once, for prompts that share prefixes.

Pure (no torch): :func:`prefill_levels` turns a batch's prompts into a radix tree of shared token
segments and lays it out as levels, one forward pass each; the transformers backend runs them and
copies each level's KV cache rows to the next. See docs/backends.md ("Shared prefixes").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PrefillLevel", "padded_cost", "prefill_levels"]

#: A shared segment shorter than this is not worth a forward pass of its own: it is run per branch.
MIN_SHARED_TOKENS = 16


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
