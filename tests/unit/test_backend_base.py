"""The concrete Backend.generate / fill_scores: validation, timing, statistics and error mapping, once."""

from __future__ import annotations

import asyncio

import pytest

from grm_reward import GenerativeRewardModel
from grm_reward.backends import ScriptedBackend
from grm_reward.backends.base import (
    Backend,
    Generation,
    GenerationOutput,
    GenerationRequest,
    ScoreFill,
    ScoreFillRequest,
)
from grm_reward.errors import (
    BackendCapabilityError,
    BackendProtocolError,
    GenerationError,
    JudgeUnavailableError,
)

MESSAGES = ({"role": "user", "content": "judge this"},)


def request(n: int = 2, seed: int = 1) -> GenerationRequest:
    return GenerationRequest(messages=MESSAGES, n=n, seed=seed, max_tokens=8, temperature=1.0)


class Engine(Backend):
    """A hook that answers ``n`` samples of three tokens per request, or does what ``behaviour`` says."""

    name = "engine"
    capabilities = frozenset({"score_fill"})

    def __init__(self, behaviour=None) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.hook_calls = 0

    async def _generate(self, requests):
        self.hook_calls += 1
        if self.behaviour is not None:
            return await self.behaviour(requests)
        return [
            GenerationOutput(samples=[Generation("a b c", 3) for _ in range(r.n)], prompt_tokens=10) for r in requests
        ]

    async def _fill_scores(self, requests):
        return [ScoreFill(values=[5], expected=None, prompt_tokens=7, completion_tokens=2) for _ in requests]


def run(coro):
    return asyncio.run(coro)


def test_a_foreign_error_of_the_engine_is_mapped_once_with_its_cause() -> None:
    async def reset(requests):
        raise ConnectionResetError("peer reset the connection")

    backend = Engine(reset)
    with pytest.raises(GenerationError, match="engine generation failed: ConnectionResetError: peer reset") as info:
        run(backend.generate([request()]))
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert backend.stats.calls == 1 and backend.stats.generate_seconds > 0.0
    assert (backend.stats.prompts, backend.stats.samples, backend.stats.prompt_tokens) == (0, 0, 0)


def test_our_own_errors_pass_unchanged_and_unlisted_errors_are_not_mapped() -> None:
    async def unavailable(requests):
        raise JudgeUnavailableError("circuit open", retry_after=3.0)

    with pytest.raises(JudgeUnavailableError) as info:
        run(Engine(unavailable).generate([request()]))
    assert info.value.retry_after == 3.0 and info.value.__cause__ is None

    class Narrow(Engine):
        foreign_errors = (OSError,)

    async def bug(requests):
        raise KeyError("a bug in the backend")

    with pytest.raises(KeyError):
        run(Narrow(bug).generate([request()]))


def test_cancellation_is_not_mapped_and_the_time_is_still_counted() -> None:
    started = asyncio.Event()

    async def hang(requests):
        started.set()
        await asyncio.Event().wait()

    backend = Engine(hang)

    async def main():
        task = asyncio.ensure_future(backend.generate([request()]))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert backend.stats.calls == 1 and backend.stats.generate_seconds > 0.0


def test_statistics_are_counted_once_per_call() -> None:
    backend = Engine()
    outputs = run(backend.generate([request(n=2), request(n=3)]))
    assert [len(o.samples) for o in outputs] == [2, 3]
    stats = backend.stats
    assert (stats.calls, stats.prompts, stats.samples) == (1, 2, 5)
    assert (stats.prompt_tokens, stats.completion_tokens) == (20, 15)
    assert stats.prefill_tokens == 0  # the engine's to count: this one ran nothing


def test_the_model_path_counts_the_scripted_judge_once() -> None:
    backend = ScriptedBackend(lambda call: "Scores: \\boxed{" + ", ".join(["5"] * len(call.responses)) + "}")
    rm = GenerativeRewardModel(backend=backend, k=4, shuffle="balanced")
    result = rm.score("q", ["a", "b"])
    stats = backend.stats
    assert stats.calls == 1 and stats.prompts == 2 and stats.samples == 4
    assert stats.prompt_tokens == stats.prefill_tokens == result.usage.prompt_tokens
    assert stats.completion_tokens == result.usage.completion_tokens == 4 * 3


@pytest.mark.parametrize("shape", ["missing output", "missing sample"])
def test_an_engine_breaking_the_contract_is_a_protocol_error(shape) -> None:
    async def broken(requests):
        if shape == "missing output":
            return []
        return [GenerationOutput(samples=[Generation("x", 1)], prompt_tokens=1) for _ in requests]

    backend = Engine(broken)
    with pytest.raises(BackendProtocolError, match="outputs for 1 requests" if shape == "missing output" else
                       "returned 1 samples, 2 were asked for"):
        run(backend.generate([request(n=2)]))
    assert backend.stats.samples == 0


def test_invalid_requests_are_refused_before_the_engine_and_an_empty_batch_costs_nothing() -> None:
    backend = Engine()
    with pytest.raises(TypeError, match="GenerationRequest"):
        run(backend.generate([{"messages": MESSAGES}]))  # type: ignore[list-item]
    assert run(backend.generate([])) == []
    assert backend.hook_calls == 0 and backend.stats.calls == 0


def test_fill_scores_checks_the_capability_counts_and_maps() -> None:
    fill = ScoreFillRequest(messages=MESSAGES, assistant_prefix="Scores: \\boxed{", num_scores=1, score_range=(1, 10))
    backend = Engine()
    assert run(backend.fill_scores([fill, fill]))[0].values == [5]
    assert (backend.stats.fill_calls, backend.stats.prompt_tokens, backend.stats.completion_tokens) == (1, 14, 4)

    class Plain(Engine):
        capabilities = frozenset()

    plain = Plain()
    with pytest.raises(BackendCapabilityError, match="cannot fill scores"):
        run(plain.fill_scores([fill]))
    assert plain.stats.fill_calls == 0

    class Failing(Engine):
        async def _fill_scores(self, requests):
            raise RuntimeError("device lost")

    with pytest.raises(GenerationError, match="RuntimeError: device lost"):
        run(Failing().fill_scores([fill]))


def test_a_backend_must_implement_the_generation_hook() -> None:
    class Nothing(Backend):
        pass

    with pytest.raises(TypeError, match="_generate"):
        Nothing()  # type: ignore[abstract]
