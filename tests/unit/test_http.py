"""The one HTTP layer (grm_reward._http) against a real faulty judge server (tests/fault_judge.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from grm_reward import GenerationError, GenerativeRewardModel, GRMConfig
from grm_reward._http import HTTPPolicy, ServerHealth
from grm_reward.adapters.openrlhf import RewardFunction
from grm_reward.backends.base import GenerationRequest
from grm_reward.backends.openai import OpenAIBackend
from grm_reward.config import OpenAIOptions
from grm_reward.deadlines import deadline_scope
from grm_reward.errors import BackendUnavailableError, DeadlineExceededError, JudgeUnavailableError
from grm_reward.meta_rm import HTTPMetaRM
from tests.fault_judge import FaultJudge

pytestmark = pytest.mark.timeout(60)  # a regression here hangs instead of failing

MESSAGES = ({"role": "user", "content": "Judge: [The Begin of Response]\nfine\n[The End of Response]"},)
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01}


@pytest.fixture
def judge() -> Iterator[FaultJudge]:
    with FaultJudge() as server:
        yield server


def make_backend(judge: FaultJudge, **options: object) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=judge.url, **{**FAST, **options}))


def request(n: int = 1, seed: int = 5) -> GenerationRequest:
    return GenerationRequest(messages=MESSAGES, n=n, seed=seed, max_tokens=32, temperature=0.5)


async def generate(backend: OpenAIBackend, *requests: GenerationRequest) -> list[str]:
    outputs = await backend.generate(list(requests) or [request()])
    return [s.text for out in outputs for s in out.samples]


def run(coro_fn, backend: OpenAIBackend):
    async def main():
        try:
            return await coro_fn()
        finally:
            await backend.aclose()

    return asyncio.run(main())


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait for a condition the server thread sets (bounded poll: the server is in another thread)."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


# --- item 7: every transient fault is retried like a 5xx ----------------------------------------------
@pytest.mark.parametrize("mode", ["500", "429", "reset", "cutoff", "html", "no_choices"])
def test_each_transient_fault_is_retried_then_answered(judge: FaultJudge, mode: str) -> None:
    judge.set_mode(mode, times=2, retry_after=0.01)
    backend = make_backend(judge)
    texts = run(lambda: generate(backend), backend)
    assert texts and "Scores:" in texts[0]
    assert judge.calls == 3 and judge.calls_by_mode[mode] == 2
    assert backend.stats.extra["retries"] == 2


def test_killed_and_restarted_judge_on_the_same_port(judge: FaultJudge) -> None:
    port = judge.port
    judge.stop()
    backend = make_backend(judge, max_retries=1)
    with pytest.raises(GenerationError, match="cannot connect"):
        run(lambda: generate(backend), backend)
    judge.restart()
    assert judge.port == port
    backend = make_backend(judge)
    assert "Scores:" in run(lambda: generate(backend), backend)[0]


# --- item 6: deadlines, timeouts, cancellation -------------------------------------------------------
def test_a_hanging_call_is_cut_at_the_deadline_and_its_connection_closed(judge: FaultJudge) -> None:
    judge.set_mode("hang")
    backend = make_backend(judge)  # timeout_s stays 300: the deadline is what cuts it

    async def call() -> float:
        started = time.monotonic()
        with deadline_scope(0.3), pytest.raises(DeadlineExceededError, match="deadline"):
            await generate(backend)
        elapsed = time.monotonic() - started
        await until(lambda: judge.disconnects == 1)  # the server saw the client leave
        return elapsed

    elapsed = run(call, backend)
    assert elapsed < 10 * 0.3  # cut at the deadline, not at timeout_s=300
    assert judge.calls == 1  # no retry past the deadline


def test_no_backoff_sleep_past_the_deadline(judge: FaultJudge) -> None:
    judge.set_mode("500")
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    backend = OpenAIBackend(OpenAIOptions(base_url=judge.url, backoff_base_s=30.0, backoff_max_s=60.0), sleep=sleep)

    async def call() -> None:
        with deadline_scope(5.0), pytest.raises(DeadlineExceededError, match="too little to retry"):
            await generate(backend)

    run(call, backend)
    assert slept == [] and judge.calls == 1


def test_the_call_timeout_is_the_configured_one_without_a_deadline(judge: FaultJudge) -> None:
    judge.set_mode("hang")
    backend = make_backend(judge, timeout_s=0.2, max_retries=1)
    with pytest.raises(GenerationError, match="timed out after 2 attempts"):
        run(lambda: generate(backend), backend)
    assert judge.calls == 2


def test_a_cancelled_caller_frees_its_connection_slot_at_once(judge: FaultJudge) -> None:
    judge.set_mode("hang", times=1)  # the first call hangs, later ones are answered
    backend = make_backend(judge, max_concurrency=1)

    async def main() -> list[str]:
        stuck = asyncio.ensure_future(generate(backend))
        await until(lambda: judge.in_flight == 1)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        await until(lambda: judge.disconnects == 1)
        # the one slot is free again: this call is answered, not queued behind the cancelled one
        return await asyncio.wait_for(generate(backend), timeout=5)

    texts = run(main, backend)
    assert "Scores:" in texts[0] and judge.calls == 2


# --- item 8: retry budget and circuit breaker -------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_retry_budget_allows_a_share_of_recent_calls_plus_a_floor() -> None:
    clock = Clock()
    health = ServerHealth("http://x", HTTPPolicy(retry_budget=0.2, retry_budget_floor=3), clock=clock)
    for _ in range(50):
        health.record_call()
    allowed = 0
    while health.try_retry():
        allowed += 1
    assert allowed == 0.2 * 50 + 3
    clock.now += 11  # the window moved on: only the floor is left
    assert sum(health.try_retry() for _ in range(10)) == 3


def test_breaker_opens_fails_fast_probes_with_doubling_cooldown_and_closes() -> None:
    clock = Clock()
    policy = HTTPPolicy(breaker_failures=3, breaker_cooldown_s=0.5, breaker_cooldown_max_s=1.0)
    health = ServerHealth("http://x", policy, clock=clock)
    for _ in range(2):
        health.record_failure("500")
    assert health.admit() is None  # still closed after 2
    health.record_failure("500")
    assert health.admit() == pytest.approx(0.5) and "circuit open" in (health.describe() or "")
    clock.now += 0.5
    assert health.admit() is None  # the probe
    assert health.admit() == pytest.approx(0.5)  # others still fail fast while it is out
    health.record_failure("500")  # the probe failed: cool-down doubles (capped at 1 s)
    assert health.admit() == pytest.approx(1.0)
    clock.now += 1.0
    assert health.admit() is None
    health.record_success()
    assert health.admit() is None and health.describe() is None


def dead_judge_calls_per_request(judge: FaultJudge, requests: int, **options: object) -> float:
    judge.set_mode("500")
    backend = make_backend(judge, **options)

    async def main() -> list[BaseException]:
        errors: list[BaseException] = []
        for _ in range(requests):
            try:
                await generate(backend)
            except GenerationError as exc:
                errors.append(exc)
        return errors

    errors = run(main, backend)
    assert len(errors) == requests
    return judge.calls / requests


def test_a_dead_judge_costs_at_most_two_calls_per_request(judge: FaultJudge) -> None:
    per_request = dead_judge_calls_per_request(judge, 40)
    assert per_request <= 2
    # without budget and breaker every request pays 1 + max_retries calls: the policy is what bounds it
    with FaultJudge() as other:
        unbounded = dead_judge_calls_per_request(
            other, 10, breaker_failures=10**6, retry_budget=10.0, retry_budget_floor=10**6
        )
    assert unbounded == 5


def test_open_circuit_fails_fast_with_retry_after_and_recovery_is_noticed_quickly(judge: FaultJudge) -> None:
    judge.set_mode("500")
    backend = make_backend(judge, breaker_failures=3, breaker_cooldown_s=0.2, breaker_cooldown_max_s=0.4)

    async def main() -> float:
        with pytest.raises(GenerationError):
            await generate(backend)  # 1 + 4 retries: the circuit opens after the third
        with pytest.raises(JudgeUnavailableError) as info:
            await generate(backend)
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.4
        assert "circuit open" in (await backend.probe() or "")
        judge.set_mode("ok")
        recovered_at = time.monotonic()
        while True:
            try:
                await generate(backend)
                return time.monotonic() - recovered_at
            except JudgeUnavailableError as exc:
                await asyncio.sleep(min(exc.retry_after or 0.05, 0.05))

    took = run(main, backend)
    assert took < 5 * 0.4  # noticed within about one cool-down
    assert backend.stats.extra["breaker_rejections"] >= 1


def test_under_a_deadline_an_open_circuit_holds_the_call_for_the_probe(judge: FaultJudge) -> None:
    """The server's deadline outlasts an outage: its calls wait for the judge instead of failing fast
    (OpenRLHF's client gives up after 5 tries 1 s apart); without a deadline they still fail fast."""
    judge.set_mode("500")
    backend = make_backend(judge, breaker_failures=2, breaker_cooldown_s=0.05, breaker_cooldown_max_s=0.1)

    async def main() -> tuple[list[str], int]:
        with pytest.raises(GenerationError):
            await generate(backend)  # opens the circuit
        with pytest.raises(JudgeUnavailableError):
            await generate(backend)  # no deadline: fail fast, as before
        calls_before = judge.calls
        asyncio.get_running_loop().call_later(0.5, judge.set_mode, "ok")  # the judge comes back
        with deadline_scope(30):
            texts = await generate(backend)
        return texts, judge.calls - calls_before

    texts, calls = run(main, backend)
    assert texts and "Scores:" in texts[0]
    assert calls <= 0.5 / 0.05 + 2  # only probes went out while it waited, at most one per cool-down
    assert backend.stats.extra["breaker_waits"] >= 1


def test_an_open_circuit_still_fails_fast_when_the_deadline_is_shorter_than_the_wait(judge: FaultJudge) -> None:
    judge.set_mode("500")
    backend = make_backend(judge, breaker_failures=1, breaker_cooldown_s=5.0, breaker_cooldown_max_s=5.0)

    async def main() -> None:
        with pytest.raises(GenerationError):
            await generate(backend)
        with deadline_scope(1.0), pytest.raises(JudgeUnavailableError):
            await generate(backend)

    run(main, backend)


def test_probe_reports_readiness_and_is_cached(judge: FaultJudge) -> None:
    backend = make_backend(judge)

    async def main() -> tuple[str | None, str | None, str | None]:
        ready = await backend.probe()
        again = await backend.probe()  # cached: no second GET
        gets = judge.gets
        judge.stop()
        backend._probed = None  # expire the cache
        down = await backend.probe()
        return ready, again, down if gets == 1 else "uncached"

    ready, again, down = run(main, backend)
    assert ready is None and again is None
    assert down is not None and "does not answer" in down


# --- item 9: n re-probed; fan-out never changes a reward --------------------------------------------------
def test_a_short_answer_does_not_switch_n_off_for_good(judge: FaultJudge) -> None:
    judge.set_mode("short", times=1)
    backend = make_backend(judge, n_reprobe_s=0.0)

    async def main() -> tuple[list[str], list[str]]:
        first = await generate(backend, request(n=3))
        assert backend.n_honoured == {"/chat/completions": False}
        second = await generate(backend, request(n=3))
        return first, second

    first, second = run(main, backend)
    assert [b.get("n") for b in judge.bodies] == [3, None, None, 3]  # fan-out, then n re-probed
    assert backend.n_honoured == {"/chat/completions": True}
    assert first == second  # the fan-out drew the very samples n draws


def test_n_stays_off_until_the_reprobe_time(judge: FaultJudge) -> None:
    judge.set_mode("short")
    backend = make_backend(judge)  # n_reprobe_s = 60
    run(lambda: generate(backend, request(n=2)), backend)
    judge.set_mode("ok")
    run(lambda: generate(backend, request(n=2)), backend)
    assert [b.get("n") for b in judge.bodies] == [2, None, None, None]


def rewards_through(judge: FaultJudge, **options: object) -> list[tuple[list[float | None], list[int]]]:
    backend = make_backend(judge, **options)
    rows = [(f"question {i}", [f"answer {i}", f"other {i}", f"third {i}"]) for i in range(6)]
    with GenerativeRewardModel(backend=backend, k=4, seed=3) as rm:
        results = [rm.score(prompt, responses) for prompt, responses in rows]
    return [(r.rewards, [s.seed for s in r.samples]) for r in results]


def test_n_mode_fan_out_mode_and_short_answers_give_the_same_rewards(judge: FaultJudge) -> None:
    with_n = rewards_through(judge)
    n_calls = judge.calls
    fanned_out = rewards_through(judge, use_n=False)
    judge.set_mode("short")  # a server that ignores n: one choice, the rest fetched one by one
    short = rewards_through(judge)
    assert with_n == fanned_out == short
    assert judge.calls > 2 * n_calls  # the three really took different transports


def test_the_recorded_seed_is_the_seed_the_judge_used(judge: FaultJudge) -> None:
    backend = make_backend(judge)
    with GenerativeRewardModel(backend=backend, k=6, seed=1) as rm:
        result = rm.score("q", ["one", "two"])
    seeds = [s.seed for s in result.samples]
    # the fault judge writes "seed X" for the seed it sampled with, child j of an n-request = seed + j
    assert all(f"seed {s.seed}." in s.text for s in result.samples)
    assert seeds != list(range(seeds[0], seeds[0] + 6))  # several shown orders: non-consecutive seeds
    assert any(b.get("n", 1) > 1 for b in judge.bodies)


# --- item 6: the meta RM and the OpenRLHF forwarder use the same layer ----------------------------------
def test_meta_rm_is_retried_through_the_layer(judge: FaultJudge) -> None:
    judge.set_mode("html", times=1)
    meta = HTTPMetaRM(judge.root + "/classify", policy=HTTPPolicy(**FAST))
    conversation = ({"role": "user", "content": "u"}, {"role": "assistant", "content": "a"})

    async def main() -> list[float]:
        try:
            return await meta.rate([conversation, conversation])
        finally:
            await meta.aclose()

    ratings = asyncio.run(main())
    assert len(ratings) == 2 and judge.calls == 2


def test_openrlhf_forwarder_retries_and_maps_errors(judge: FaultJudge) -> None:
    judge.set_mode("reset", times=1)
    forward = RewardFunction(GRMConfig(openai={**FAST, "max_retries": 1}), url=judge.root + "/get_reward")
    try:
        out = forward(["q1", "q2"], ["p", "p"], ["", ""])
        assert len(out["rewards"]) == 2 and judge.calls == 2
        judge.set_mode("500")
        with pytest.raises(GenerationError, match="HTTP 500 after 2 attempts"):
            forward(["q1"], ["p"], [""])
    finally:
        forward.close()


# --- hostile input and hostile answers --------------------------------------------------------------------
def mock_backend(handler, **options: object) -> OpenAIBackend:
    return OpenAIBackend(
        OpenAIOptions(base_url="http://judge.test/v1", **{**FAST, "max_retries": 1, **options}),
        transport=handler,
    )


def test_a_lone_surrogate_is_an_input_error_not_a_crash_or_a_call() -> None:
    from grm_reward import InputError

    calls = []
    backend = mock_backend(lambda r: calls.append(r))
    bad = GenerationRequest(messages=({"role": "user", "content": "x\udcff"},), n=1, seed=1, max_tokens=8, temperature=0)
    with pytest.raises(InputError, match="cannot be sent as JSON"):
        run(lambda: backend.generate([bad]), backend)
    assert calls == []


@pytest.mark.parametrize(
    "body", [b"\xff\xfe{not utf-8", b"[" * 100_000 + b"]" * 100_000, b'{"choices": "nope"}', b'{"choices": []}']
)
def test_garbage_200_answers_are_retried_then_reported(body: bytes) -> None:
    from grm_reward._http import HTTPRequest, HTTPResponse

    calls = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        calls.append(request)
        return HTTPResponse(200, body, {"content-type": "application/json"})

    backend = mock_backend(handler)
    with pytest.raises(GenerationError, match="after 2 attempts"):
        run(lambda: generate(backend), backend)
    assert len(calls) == 2


@pytest.mark.parametrize(("header", "expected"), [("inf", 300.0), ("nan", 0.0), ("-5", 0.0), ("1e400", 300.0)])
def test_absurd_retry_after_headers_are_bounded(header: str, expected: float) -> None:
    from grm_reward._http import HTTPEndpoint
    from grm_reward._http.failures import parse_retry_after

    endpoint = HTTPEndpoint("http://x.test", HTTPPolicy(timeout_s=300.0), transport=object())
    assert endpoint.backoff(1, parse_retry_after(header)) == expected


def test_meta_rm_answer_with_nan_ratings_is_retried() -> None:
    from grm_reward._http import HTTPResponse

    answers = iter([{"data": [{"index": 0, "probs": [float("nan")]}]}, {"data": [{"index": 0, "probs": [0.5]}]}])
    meta = HTTPMetaRM(
        "http://meta.test/classify",
        transport=lambda r: HTTPResponse.of(200, json_body=next(answers)),
        policy=HTTPPolicy(**FAST),
    )
    conversation = ({"role": "user", "content": "u"}, {"role": "assistant", "content": "a"})
    assert asyncio.run(meta.rate([conversation])) == [0.5]


# --- the client under the layer (issue 13 item 5: aiohttp) ------------------------------------------------
def test_keep_alive_reuses_connections_within_the_pool_bound(judge: FaultJudge) -> None:
    backend = make_backend(judge, max_concurrency=4, api_key="k3y")

    async def main() -> None:
        for _ in range(5):  # 5 waves of 8 calls: the 4 pooled connections carry all 40
            await asyncio.gather(*(generate(backend) for _ in range(8)))

    run(main, backend)
    assert judge.calls == 40 and judge.connections <= 4 and judge.max_in_flight <= 4
    assert judge.headers["authorization"] == "Bearer k3y" and judge.headers["content-type"] == "application/json"


def test_a_session_left_open_is_closed_when_its_loop_ends(judge: FaultJudge) -> None:
    import gc
    import warnings

    backend = make_backend(judge)
    rm = GenerativeRewardModel(GRMConfig(backend="openai", k=1, openai={"base_url": judge.url, **FAST}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(generate(backend))  # no aclose: asyncio.run's end closes the session
        rm.score("q", ["a", "b"])
        rm._loop.close()  # the model's private loop thread, without the model's close()
        del backend, rm
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    give_up = time.monotonic() + 5
    while judge.open_connections and time.monotonic() < give_up:
        time.sleep(0.01)  # the server thread sees the closes
    assert judge.connections >= 2 and judge.open_connections == 0


def test_forget_server_drops_the_shared_state_of_one_url_or_of_all() -> None:
    # A new server on a reused address (the fault judge's restarts, the autouse fixture) starts afresh.
    from grm_reward._http import forget_server, server_health

    a, b = server_health("http://a.test/v1/", HTTPPolicy()), server_health("http://b.test", HTTPPolicy())
    assert server_health("http://a.test/v1", HTTPPolicy()) is a  # one state per URL, trailing slash or not
    forget_server("http://a.test/v1/")
    assert server_health("http://a.test/v1", HTTPPolicy()) is not a
    assert server_health("http://b.test", HTTPPolicy()) is b
    forget_server()
    assert server_health("http://b.test", HTTPPolicy()) is not b


def test_each_client_of_a_server_keeps_its_own_thresholds(judge: FaultJudge) -> None:
    # The breaker state of a URL is shared, but a later client's policy is not overruled by the first one's.
    first = make_backend(judge, breaker_failures=50)
    second = make_backend(judge, breaker_failures=2, max_retries=5)
    assert first.http.health is second.http.health
    judge.set_mode("500")
    with pytest.raises(JudgeUnavailableError, match="circuit open"):
        run(lambda: generate(second), second)
    assert judge.calls == 2  # its own breaker_failures=2, not the first client's 50 (6 calls)


def test_detect_server_goes_through_the_layer_inside_a_running_loop(judge: FaultJudge) -> None:
    from grm_reward.backends.openai import detect_server

    async def main() -> str:  # as the server's start-up calls it: from inside a running loop
        return detect_server(OpenAIOptions(base_url=judge.url), api_key="k3y")

    assert asyncio.run(main()) == "vllm" and judge.gets >= 1
    assert judge.headers["authorization"] == "Bearer k3y"
    judge.stop()
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        detect_server(OpenAIOptions(base_url=judge.url, connect_timeout_s=1.0))


def test_a_proxy_from_the_environment_is_used(judge: FaultJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", judge.root)  # the fault judge answers absolute-form targets as a proxy would
    backend = OpenAIBackend(OpenAIOptions(base_url="http://judge.invalid/v1", **FAST))
    texts = run(lambda: generate(backend), backend)
    assert "Scores:" in texts[0] and judge.calls == 1


def test_a_large_payload_is_encoded_off_the_event_loop(judge: FaultJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    # the calls of a batch start in one turn of the loop: encoding sixty 500K-character prompts inline
    # held the server's loop (its /health) for ~0.2 s
    import threading

    from grm_reward._http import sessions  # encode_json reads both names here, at call time

    threads: list[tuple[int, int]] = []
    encode = sessions._encode_json

    def recording(payload):  # type: ignore[no-untyped-def]
        threads.append((len(str(payload)), threading.get_ident()))
        return encode(payload)

    monkeypatch.setattr(sessions, "_encode_json", recording)
    backend = make_backend(judge)
    big = GenerationRequest(
        messages=[{"role": "user", "content": "é" * (sessions._ENCODE_INLINE_CHARS + 1)}], n=1, seed=5, max_tokens=8, temperature=0.5
    )

    async def main() -> int:
        await generate(backend, request())
        await generate(backend, big)
        return threading.get_ident()

    loop_thread = run(main, backend)
    small_call, big_call = [t for _, t in threads][-2:]
    assert small_call == loop_thread and big_call != loop_thread
    assert judge.calls >= 2  # both were sent, the big one's body intact (the judge parsed it)
