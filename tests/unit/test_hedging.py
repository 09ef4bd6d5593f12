"""Issue 13: hedged judge calls and latency-derived timeouts in the one HTTP layer (grm_reward._http)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from grm_reward import ConfigError, GenerationError, GenerativeRewardModel, GRMConfig, GRMReward
from grm_reward._http import HEDGE_BUDGET_FLOOR, HTTPPolicy, ServerHealth
from grm_reward._http.health import TAIL_BACKOFF_MAX, TAIL_MIN_DELAY_S
from grm_reward.backends.openai import OpenAIBackend
from grm_reward.config import OpenAIOptions
from grm_reward.deadlines import deadline_scope
from grm_reward.errors import DeadlineExceededError
from tests.fault_judge import FaultJudge
from tests.unit.test_http import FAST, generate, request, run, until

pytestmark = pytest.mark.timeout(60)

WARM = 6  # calls answered before hedging starts (latency_min_samples)
HEDGING = {**FAST, "latency_min_samples": WARM, "hedge_min_delay_s": 0.05}


@pytest.fixture
def judge() -> Iterator[FaultJudge]:
    with FaultJudge() as server:
        yield server


def make_backend(judge: FaultJudge, **options: object) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=judge.url, **{**HEDGING, **options}))


async def warm_up(backend: OpenAIBackend) -> None:
    for seed in range(WARM):
        await generate(backend, request(seed=100 + seed))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the statistics ------------------------------------------------------------------------------------
def test_no_hedge_and_no_learned_timeout_before_enough_latencies_are_known() -> None:
    health = ServerHealth("http://judge", HTTPPolicy(latency_min_samples=4, hedge_min_delay_s=0.0))
    for _ in range(3):
        health.record_latency(1.0)
    assert health.hedge_delay() is None and health.latency_timeout() is None
    health.record_latency(1.0)
    assert health.hedge_delay() == pytest.approx(2.0)  # p95 x 2
    assert health.latency_timeout() == 30.0  # max(floor 30 s, 10 x p99 = 10 s)


def test_hedge_delay_follows_the_high_percentile_with_a_floor() -> None:
    policy = HTTPPolicy(latency_min_samples=1, hedge_percentile=90.0, hedge_factor=2.0, hedge_min_delay_s=0.5)
    health = ServerHealth("http://judge", policy)
    for i in range(1, 101):
        health.record_latency(i / 100)  # 0.01 .. 1.00 s
    assert health.hedge_delay() == pytest.approx(0.90 * 2.0)
    fast = ServerHealth("http://judge", policy)
    fast.record_latency(0.01)
    assert fast.hedge_delay() == 0.5  # the floor
    assert ServerHealth("http://judge", HTTPPolicy(hedge=False, latency_min_samples=1)).hedge_delay() is None


def test_the_hedge_budget_is_a_share_of_recent_calls_and_none_while_the_circuit_is_open() -> None:
    clock = Clock()
    health = ServerHealth("http://judge", HTTPPolicy(hedge_budget=0.05, breaker_failures=1), clock=clock)
    for _ in range(100):
        health.record_call()
    granted = sum(health.try_hedge() for _ in range(50))
    assert granted == 0.05 * 100 + HEDGE_BUDGET_FLOOR
    clock.now += 11  # the window has passed: calls and hedges forgotten
    assert health.try_hedge()
    health.record_failure("HTTP 500")
    assert health.open and not health.try_hedge()



def test_the_tail_delay_is_a_multiple_of_the_median_so_slow_first_calls_do_not_lift_it() -> None:
    policy = HTTPPolicy(latency_min_samples=4, hedge_tail_factor=1.5, hedge_min_delay_s=0.05)
    health = ServerHealth("http://judge", policy)
    for _ in range(3):
        health.record_latency(0.16)  # the cold first wave: new connections
    assert health.tail_delay() is None  # too few known
    for _ in range(17):
        health.record_latency(0.08)
    assert health.tail_delay() == pytest.approx(1.5 * 0.08)  # the median, not p95 (0.16)
    assert health.hedge_delay() == pytest.approx(2.0 * 0.16)
    fast = ServerHealth("http://judge", policy)
    for _ in range(4):
        fast.record_latency(0.001)
    assert fast.tail_delay() == TAIL_MIN_DELAY_S  # its own floor, not hedge_min_delay_s (the batch has drained)
    for off in (HTTPPolicy(latency_min_samples=1, hedge_tail_factor=0.0), HTTPPolicy(latency_min_samples=1, hedge=False)):
        health = ServerHealth("http://judge", off)
        health.record_latency(0.1)
        assert health.tail_delay() is None


def test_each_tail_hedge_its_original_beats_doubles_the_tail_delay_until_one_wins() -> None:
    health = ServerHealth("http://judge", HTTPPolicy(latency_min_samples=1, hedge_tail_factor=1.5))
    health.record_latency(0.2)
    base = health.tail_delay()
    assert base == pytest.approx(0.3)
    for lost in range(1, TAIL_BACKOFF_MAX + 3):
        health.tail_hedge_outcome(won=False)
        assert health.tail_delay() == pytest.approx(base * 2 ** min(lost, TAIL_BACKOFF_MAX))
    health.tail_hedge_outcome(won=True)
    assert health.tail_delay() == pytest.approx(base)


def test_drained_only_once_every_call_still_out_was_overtaken() -> None:
    health = ServerHealth("http://judge", HTTPPolicy())
    assert not health.drained()  # nothing out
    stuck, queued = health.call_waiting(), health.call_waiting()
    health.call_sent(stuck, 10.0)
    health.record_latency(0.05, started=11.0)  # a younger call was answered...
    assert not health.drained()  # ...but one still waits for a slot: the batch has not drained
    health.call_sent(queued, 12.0)
    assert not health.drained()  # it is out now, younger than every answer
    health.record_latency(0.05, started=12.5)
    assert health.drained()  # every call out was overtaken: only stragglers left
    late = health.call_waiting()
    health.call_sent(late, 13.0)
    assert not health.drained()  # fresh traffic
    for token in (late, queued):
        health.call_over(token)
    assert health.drained()
    health.call_over(stuck)
    assert not health.drained()

# --- against a real judge server -----------------------------------------------------------------------
def test_a_straggling_call_is_hedged_with_the_same_body_and_the_same_sample(judge: FaultJudge) -> None:
    reference = make_backend(judge)  # (too few latencies known yet to hedge)
    expected = run(lambda: generate(reference, request(n=3, seed=7)), reference)
    judge.stragglers = {judge.calls + WARM + 1}  # the first call after the warm-up hangs for 60 s
    backend = make_backend(judge)

    async def main() -> tuple[list[str], float]:
        await warm_up(backend)
        started = time.monotonic()
        texts = await generate(backend, request(n=3, seed=7))
        return texts, time.monotonic() - started

    texts, elapsed = run(main, backend)
    assert texts == expected  # the same samples as an unhedged call
    assert elapsed < 5.0  # not the straggler's 60 s
    assert backend.stats.extra["hedges"] == 1 and backend.stats.extra["hedge_wins"] == 1
    straggler, hedge = judge.received[-2:]
    assert straggler == hedge  # one body, byte for byte: same seed, same n
    assert b'"seed": 7' in hedge or b'"seed":7' in hedge



def test_the_last_straggler_of_a_batch_is_hedged_once_the_batch_drains(judge: FaultJudge) -> None:
    # the regular delay (p95 x 200) is far off: only the tail rule can hedge in time
    backend = make_backend(judge, max_concurrency=4, hedge_factor=200.0)

    async def main() -> tuple[float, float]:
        await warm_up(backend)
        regular = backend.http.health.hedge_delay(backend.http.policy)
        assert regular is not None
        judge.stragglers = {judge.calls + 5}  # the first call of the second wave hangs for 60 s
        started = time.monotonic()
        await asyncio.gather(*(generate(backend, request(seed=s)) for s in range(8)))
        return time.monotonic() - started, regular

    elapsed, regular = run(main, backend)
    assert elapsed < min(regular, 5.0)  # hedged once the other 7 were answered, not after p95 x 200
    assert backend.stats.extra["hedges"] == 1 and backend.stats.extra["hedge_wins"] == 1
    assert judge.calls == WARM + 8 + 1


def test_a_judge_whose_last_calls_are_long_generations_stops_getting_tail_hedges(judge: FaultJudge) -> None:
    # Calls take log-normally spread times fixed by their bytes, as generations of different lengths do: the
    # duplicate of a batch's last call (same bytes, same sample) takes as long and always loses. After a few
    # such losses the tail rule stops duplicating; a call that is stuck, not long, is still hedged and wins.
    judge.set_mode("slow", latency_s=0.04)
    judge.latency_spread = 0.8
    backend = make_backend(judge, max_concurrency=16, hedge_factor=200.0)  # only the tail rule hedges in time
    health = backend.http.health
    hedges_per_batch: list[int] = []

    async def main() -> float:
        await warm_up(backend)
        for batch in range(6):
            before = backend.stats.extra["hedges"]
            await asyncio.gather(*(generate(backend, request(seed=1000 + 16 * batch + s)) for s in range(16)))
            hedges_per_batch.append(backend.stats.extra["hedges"] - before)
        judge.stragglers = {judge.calls + 1}  # now one call is stuck for 60 s
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(generate(backend, request(seed=5000 + s)) for s in range(4))), 20)
        return time.monotonic() - started

    elapsed = run(main, backend)
    assert sum(hedges_per_batch) >= 1 and hedges_per_batch[-3:] == [0, 0, 0], hedges_per_batch
    assert backend.stats.extra["hedge_wins"] == 1  # only the stuck call's duplicate ever won...
    median = health.percentile(50.0)
    assert median is not None and health.tail_delay() == pytest.approx(max(TAIL_MIN_DELAY_S, 1.25 * median))  # reset
    assert elapsed < 10


def test_a_hedge_does_not_wait_for_the_slot_its_straggler_holds(judge: FaultJudge) -> None:
    backend = make_backend(judge, max_concurrency=1)

    async def main() -> list[str]:
        await warm_up(backend)
        judge.stragglers = {judge.calls + 1}
        return await asyncio.wait_for(generate(backend), timeout=10)  # not the straggler's 60 s

    texts = run(main, backend)
    assert len(texts) == 1 and "Scores:" in texts[0]
    assert backend.stats.extra["hedges"] == 1 and backend.stats.extra["hedge_wins"] == 1

def test_the_cancelled_loser_frees_its_connection_at_once(judge: FaultJudge) -> None:
    backend = make_backend(judge, max_concurrency=2)

    async def main() -> list[str]:
        await warm_up(backend)
        judge.stragglers = {judge.calls + 1}
        texts = await generate(backend)
        await until(lambda: judge.disconnects == 1)  # the server saw the straggler's client leave
        assert judge.in_flight == 0
        # both slots are free: two calls at once are answered without waiting for the straggler
        more = await asyncio.wait_for(asyncio.gather(generate(backend), generate(backend)), timeout=5)
        return texts + [t for batch in more for t in batch]

    texts = run(main, backend)
    assert len(texts) == 3 and all("Scores:" in t for t in texts)
    assert backend.stats.extra["hedges"] == 1


def test_hedges_under_a_uniformly_slow_judge_stay_within_the_budget(judge: FaultJudge) -> None:
    backend = make_backend(judge)

    async def main() -> None:
        await warm_up(backend)
        judge.set_mode("slow", latency_s=0.2)  # every call now runs past the hedge delay (~0.05 s)
        await asyncio.gather(*(generate(backend, request(seed=s)) for s in range(40)))

    run(main, backend)
    hedges = backend.stats.extra["hedges"]
    assert 1 <= hedges <= 0.05 * (WARM + 40) + HEDGE_BUDGET_FLOOR
    assert judge.calls == WARM + 40 + hedges


def test_hedging_never_exceeds_the_deadline_and_both_connections_close(judge: FaultJudge) -> None:
    backend = make_backend(judge)

    async def main() -> float:
        await warm_up(backend)
        judge.set_mode("hang")
        started = time.monotonic()
        with deadline_scope(0.5), pytest.raises(DeadlineExceededError, match="deadline"):
            await generate(backend)
        elapsed = time.monotonic() - started
        await until(lambda: judge.disconnects == 2)  # the call and its hedge were both cut
        return elapsed

    elapsed = run(main, backend)
    assert elapsed < 3 * 0.5
    assert backend.stats.extra["hedges"] == 1 and judge.calls == WARM + 2


def test_the_timeout_comes_from_observed_latency_not_the_fixed_cap(judge: FaultJudge) -> None:
    backend = make_backend(judge, hedge=False, max_retries=0, latency_timeout_floor_s=0.3)

    async def main() -> tuple[float, float]:
        await warm_up(backend)
        learned, by_deadline = backend.http.call_timeout(None)  # max(floor, factor x p99 of the warm-up calls)
        assert not by_deadline
        judge.set_mode("hang")
        started = time.monotonic()
        with pytest.raises(GenerationError, match="timed out"):
            await generate(backend)
        return learned, time.monotonic() - started

    learned, elapsed = run(main, backend)
    # timeout_s stays 300: the learned timeout cut the hanging call (on a loaded machine the warm-up's
    # p99 may lift it above the 0.3 s floor, so the bound is the learned value, not the floor)
    assert 0.3 <= learned < 30
    assert elapsed < learned + 3.0
    assert backend.http.call_timeout(0.1) == (0.1, True)


# --- warm start and the adapters' deadlines --------------------------------------------------------------
def test_warmup_builds_the_engine_and_opens_this_loops_client_once(judge: FaultJudge) -> None:
    rm = GenerativeRewardModel(GRMConfig(backend="openai", openai={"base_url": judge.url, "server": "generic"}))
    assert rm._backend is None

    async def main() -> list[str | None]:
        try:
            return list(await asyncio.gather(rm.awarmup(), rm.awarmup(), rm.awarmup()))
        finally:
            await rm.aclose()

    assert asyncio.run(main()) == [None, None, None]  # ready
    assert rm._backend is not None and judge.gets == 1 and judge.calls == 0  # one cheap GET, no judge call
    judge.stop()
    dead = GenerativeRewardModel(GRMConfig(backend="openai", openai={"base_url": judge.url, "server": "generic"}))
    reason = dead.warmup()  # the blocking twin: a dead judge is reported, not raised
    dead.close()
    assert reason is not None and "does not answer" in reason


def test_the_trl_reward_keeps_its_deadline_and_cuts_a_hanging_judge(judge: FaultJudge) -> None:
    config = GRMConfig(backend="openai", openai={"base_url": judge.url, "server": "generic", **FAST})
    reward = GRMReward(GenerativeRewardModel(config), deadline_s=0.5)

    async def main() -> float:
        await reward.rm.awarmup()  # (a warm-up under a hanging judge waits for its 2 s probe timeout)
        judge.set_mode("hang")
        started = time.monotonic()
        try:
            with pytest.raises(DeadlineExceededError):
                await reward(prompts=["q", "q"], completions=["a", "b"])
            return time.monotonic() - started
        finally:
            await reward.rm.aclose()

    assert asyncio.run(main()) < 3 * 0.5  # not the 300 s timeout
    with pytest.raises(ConfigError, match="deadline_s"):
        GRMReward(GenerativeRewardModel(config), deadline_s=0)
