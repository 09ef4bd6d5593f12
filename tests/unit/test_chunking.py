"""Chunk, then retry one by one: one helper, one set of errors (grm_reward.chunking)."""

from __future__ import annotations

import asyncio

import pytest

from grm_reward.chunking import RUN_ERRORS, ascore_chunk, raise_run_error, score_chunk
from grm_reward.errors import (
    BackendProtocolError,
    ConfigError,
    DeadlineExceededError,
    GenerationError,
    InputError,
    JudgeUnavailableError,
)


def scorer(bad: dict[str, Exception]):
    """Scores strings by their length; a chunk holding a key of ``bad`` fails with its error."""
    calls: list[list[str]] = []

    def score(members: list[str]) -> list[int]:
        calls.append(list(members))
        for member in members:
            if member in bad:
                raise bad[member]
        return [len(m) for m in members]

    async def ascore(members: list[str]) -> list[int]:
        await asyncio.sleep(0)
        return score(members)

    return score, ascore, calls


@pytest.mark.parametrize("error", [InputError("bad"), GenerationError("garbage"), BackendProtocolError("2 for 3"),
                                   ValueError("a backend bug on one input")])
def test_a_members_error_is_its_own(error) -> None:
    score, ascore, calls = scorer({"xx": error})
    retried: list[Exception] = []
    for outcomes in (score_chunk(score, ["a", "xx", "ccc"], on_retry=retried.append),
                     asyncio.run(ascore_chunk(ascore, ["a", "xx", "ccc"], on_retry=retried.append))):
        assert outcomes[0] == 1 and outcomes[1] is error and outcomes[2] == 3
    assert retried == [error, error]
    assert sorted(map(len, calls)) == [1, 1, 1, 1, 1, 1, 3, 3]  # the chunk, then each member alone (twice)


@pytest.mark.parametrize("error", [DeadlineExceededError("late"), JudgeUnavailableError("open"), ConfigError("k")])
def test_errors_of_the_run_are_never_retried_one_by_one(error) -> None:
    assert isinstance(error, RUN_ERRORS)
    score, ascore, calls = scorer({"xx": error})
    with pytest.raises(type(error)):
        score_chunk(score, ["a", "xx", "ccc"])
    with pytest.raises(type(error)):
        asyncio.run(ascore_chunk(ascore, ["a", "xx", "ccc"]))
    assert len(calls) == 2  # one call per chunk, no retries


def test_cancellation_is_not_retried() -> None:
    calls = 0

    async def ascore(members: list[str]) -> list[int]:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    async def main() -> None:
        await ascore_chunk(ascore, ["a", "b"])

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert calls == 1


def test_a_single_member_is_not_scored_twice() -> None:
    error = InputError("bad")
    score, _, calls = scorer({"xx": error})
    assert score_chunk(score, ["xx"]) == [error] and len(calls) == 1


def test_raise_run_error_stops_on_the_first_run_error() -> None:
    raise_run_error([1, InputError("mine")])  # a member's error is not the run's
    with pytest.raises(JudgeUnavailableError):
        raise_run_error([1, JudgeUnavailableError("open"), DeadlineExceededError("late")])
