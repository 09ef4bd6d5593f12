"""Judges for `grm-reward score` tests (``--backend tests.score_backends:<factory>``): slow, dead,
unavailable, or raising at random. A judge counts its calls in the file ``$GRM_TEST_CALLS`` when set."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence

from grm_reward.backends.base import GenerationOutput, GenerationRequest
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.errors import GenerationError, JudgeUnavailableError
from tests.helpers import length_judge


def _count_call() -> None:
    path = os.environ.get("GRM_TEST_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write("call\n")


class _FaultyBackend(ScriptedBackend):
    """``fault(prompt_text)`` returns an exception to raise for a generate call, or None to answer."""

    def __init__(self, fault, *, delay: float = 0.0, jitter: float = 0.0) -> None:
        super().__init__(length_judge, record=False)
        self.fault = fault
        self.jitter = jitter
        self.rng = random.Random(0)
        self.base_delay = delay

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        _count_call()
        await asyncio.sleep(self.base_delay + self.rng.random() * self.jitter)
        for request in requests:
            exc = self.fault(str(request.messages[-1]["content"]))
            if exc is not None:
                raise exc
        return await super().generate(requests)


def slow_backend(config: object) -> ScriptedBackend:
    """Answers each call after 0.05-0.15 s (so calls finish out of order)."""
    return _FaultyBackend(lambda prompt: None, delay=0.05, jitter=0.1)


def jittery_backend(config: object) -> ScriptedBackend:
    """Answers each call after 0-20 ms, in random order."""
    return _FaultyBackend(lambda prompt: None, jitter=0.02)


def dead_backend(config: object) -> ScriptedBackend:
    """A judge that is down: every call fails (after a short wait, as retries would)."""
    return _FaultyBackend(lambda prompt: GenerationError("judge at http://127.0.0.1:9/v1 refused the connection"),
                          delay=0.01)


def unavailable_backend(config: object) -> ScriptedBackend:
    """A judge whose circuit breaker is open."""
    return _FaultyBackend(lambda prompt: JudgeUnavailableError("circuit open for the judge", retry_after=30.0))


def boom_backend(config: object) -> ScriptedBackend:
    """Raises a foreign exception for prompts containing 'boom', answers the others."""
    return _FaultyBackend(lambda prompt: RuntimeError("boom") if "boom" in prompt else None, jitter=0.005)


def must_not_be_built(config: object) -> ScriptedBackend:
    raise AssertionError("the backend was built although the run should have stopped before judging")


def instant_backend(config: object) -> ScriptedBackend:
    """Answers at once and keeps no record: for long runs."""
    return ScriptedBackend(length_judge, record=False)
