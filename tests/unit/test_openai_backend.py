"""The `openai` backend against an in-process fake server (a `grm_reward._http.Transport` handler)."""

from __future__ import annotations

import asyncio
import math

import pytest

from grm_reward import (
    BackendCapabilityError,
    BackendUnavailableError,
    GenerationError,
    GenerativeRewardModel,
    GRMConfig,
    PromptTooLongError,
)
from grm_reward._http import HTTPRequest, HTTPResponse
from grm_reward._http.failures import parse_retry_after
from grm_reward.backends import create_backend
from grm_reward.backends.base import FORCED_SCORES_PREFIX, GenerationRequest, ScoreFillRequest
from grm_reward.backends.openai import OpenAIBackend, _apportion, detect_server
from grm_reward.config import OpenAIOptions
from tests.fake_openai import FakeOpenAIServer
from tests.fake_tokenizer import CharTokenizer

MESSAGES = ({"role": "user", "content": "Judge these."},)


def backend(server: FakeOpenAIServer, *, flavour="generic", tokenizer=None, delays=None, **options) -> OpenAIBackend:
    options.setdefault("backoff_base_s", 0.001)

    async def record(delay: float) -> None:
        if delays is not None:
            delays.append(delay)

    return OpenAIBackend(
        OpenAIOptions(base_url="http://judge.test/v1", **options),
        server=flavour,
        tokenizer=tokenizer,
        transport=server.transport(),
        sleep=record,
    )


def request(n=3, seed=11, **kw) -> GenerationRequest:
    return GenerationRequest(messages=MESSAGES, n=n, seed=seed, max_tokens=64, temperature=0.5, **kw)


def generate(b: OpenAIBackend, *requests):
    async def main():
        try:
            return await b.generate(list(requests))
        finally:
            await b.aclose()

    return asyncio.run(main())


# --- k samples: n honoured, ignored, refused --------------------------------------------------------
def test_n_honoured_asks_once_and_shares_usage() -> None:
    server = FakeOpenAIServer(n_mode="honour")
    b = backend(server)
    [out] = generate(b, request())
    assert len(server.requests) == 1 and server.requests[0]["n"] == 3 and server.requests[0]["seed"] == 11
    # vLLM seeds choice j of an n-request with seed + j
    assert [s.text.split()[1] for s in out.samples] == ["seed=11.", "seed=12.", "seed=13."]
    assert out.prompt_tokens == 11 and sum(s.completion_tokens for s in out.samples) == 3 * 4
    assert b.n_honoured == {"/chat/completions": True}


def test_n_ignored_fans_out_with_each_samples_seed_and_remembers() -> None:
    server = FakeOpenAIServer(n_mode="ignore")
    b = backend(server)
    [out] = generate(b, request())
    assert [r.get("n") for r in server.requests] == [3, None, None]
    assert sorted(r["seed"] for r in server.requests[1:]) == [12, 13]
    # sample j carries seed + j, so the result matches what a server honouring n would draw
    assert [s.text.split()[1] for s in out.samples] == ["seed=11.", "seed=12.", "seed=13."]
    assert b.n_honoured == {"/chat/completions": False} and b.stats.extra["n_ignored"] == 1
    server.requests.clear()
    b2_out = asyncio.run(_generate_again(b, request()))
    assert [r.get("n") for r in server.requests] == [None, None, None]  # no `n` any more
    assert [s.text for s in b2_out.samples] == [s.text for s in out.samples]
    assert b.stats.extra["fanout_requests"] == 2 + 3


async def _generate_again(b, req):
    try:
        return (await b.generate([req]))[0]
    finally:
        await b.aclose()


def test_n_refused_with_400_falls_back_to_single_requests() -> None:
    server = FakeOpenAIServer(n_mode="refuse")
    b = backend(server)
    [out] = generate(b, request())
    assert len(out.samples) == 3 and [r.get("n") for r in server.requests] == [3, None, None, None]
    assert b.n_honoured == {"/chat/completions": False}


def test_a_400_that_is_not_about_n_is_reported_and_not_remembered() -> None:
    server = FakeOpenAIServer(failures=[400, 400, 400, 400])
    b = backend(server)
    with pytest.raises(GenerationError, match="HTTP 400: bad request") as info:
        generate(b, request())
    assert "/chat/completions" not in b.n_honoured
    assert isinstance(info.value.__cause__, Exception)  # raise ... from the HTTP failure


def test_use_n_false_always_fans_out() -> None:
    server = FakeOpenAIServer(n_mode="honour")
    generate(backend(server, use_n=False), request())
    assert [r.get("n") for r in server.requests] == [None, None, None]


# --- retries, backoff, errors -------------------------------------------------------------------------
def test_retries_5xx_with_exponential_backoff_and_jitter() -> None:
    server = FakeOpenAIServer(failures=[503, 502, 500])
    delays: list[float] = []
    b = backend(server, delays=delays, backoff_base_s=1.0, backoff_max_s=3.0)
    [out] = generate(b, request(n=1))
    assert out.samples[0].text.startswith("Analysis")
    assert len(server.requests) == 4 and b.stats.extra["retries"] == 3
    # delay for retry r is uniform in [d/2, d] with d = min(max, base * 2**(r-1))
    for delay, full in zip(delays, [1.0, 2.0, 3.0]):
        assert full / 2 <= delay <= full


def test_retry_after_is_honoured() -> None:
    server = FakeOpenAIServer(failures=[(429, {"Retry-After": "2"}), (503, {"Retry-After": "0.25"})])
    delays: list[float] = []
    generate(backend(server, delays=delays), request(n=1))
    assert delays == [2.0, 0.25]
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and parse_retry_after("soon") is None


def test_429_until_retries_run_out() -> None:
    server = FakeOpenAIServer(failures=[429] * 10)
    with pytest.raises(GenerationError, match="HTTP 429 after 3 attempts"):
        generate(backend(server, max_retries=2), request(n=1))
    assert len(server.requests) == 3


def test_connection_errors_and_timeouts_are_retried_then_mapped() -> None:
    refused = ConnectionRefusedError("connection refused")
    server = FakeOpenAIServer(failures=[refused, refused])
    [out] = generate(backend(server), request(n=1))
    assert out.samples and len(server.requests) == 3
    server = FakeOpenAIServer(failures=[refused] * 5)
    with pytest.raises(GenerationError, match=r"cannot connect .* is the server running"):
        generate(backend(server, max_retries=1), request(n=1))
    server = FakeOpenAIServer(failures=[TimeoutError("slow")] * 5)
    with pytest.raises(GenerationError, match="timed out after 2 attempts"):
        generate(backend(server, max_retries=1), request(n=1))


@pytest.mark.parametrize(
    ("status", "message", "error", "match"),
    [
        (401, "bad key", BackendUnavailableError, "credentials .*OPENAI_API_KEY"),
        (404, "model not found", BackendUnavailableError, "check the URL"),
        (400, "This model's maximum context length is 2048 tokens", PromptTooLongError, "too long"),
        (422, "Unexpected fields in the request: {'foo'}", GenerationError, "HTTP 422: Unexpected fields"),
    ],
)
def test_client_errors_are_not_retried_and_map_onto_the_tree(status, message, error, match) -> None:
    async def handler(request: HTTPRequest) -> HTTPResponse:
        calls.append(request)
        return HTTPResponse.of(status, json_body={"error": {"message": message}})

    calls: list[HTTPRequest] = []
    b = OpenAIBackend(OpenAIOptions(base_url="http://judge.test/v1"), transport=handler)
    with pytest.raises(error, match=match):
        generate(b, request(n=1))
    assert len(calls) == 1


def test_malformed_answers_are_retried_then_generation_errors() -> None:
    calls: list[HTTPRequest] = []

    async def handler(request):
        calls.append(request)
        return HTTPResponse.of(200, text="<html>oops</html>")

    b = OpenAIBackend(
        OpenAIOptions(base_url="http://judge.test/v1", max_retries=2, backoff_base_s=0.001),
        transport=handler,
    )
    with pytest.raises(GenerationError, match="not JSON"):
        generate(b, request(n=1))
    assert len(calls) == 3  # retried like a 5xx


@pytest.mark.timeout(30)  # a regression here hangs instead of failing
def test_one_failure_cancels_its_siblings() -> None:
    async def main():
        server = FakeOpenAIServer(hang=asyncio.Event())
        server.failures = [400]  # the first request to arrive fails at once
        b = backend(server)
        slow = GenerationRequest(
            messages=({"role": "user", "content": "hang"},), n=1, seed=1, max_tokens=8, temperature=0.0
        )
        try:
            with pytest.raises(GenerationError):
                await asyncio.wait_for(b.generate([request(n=1), slow]), timeout=5)
        finally:
            await b.aclose()
        return server

    server = asyncio.run(main())
    assert server.cancelled == 1 and server.in_flight == 0


def test_concurrency_is_bounded() -> None:
    server = FakeOpenAIServer(n_mode="ignore")
    generate(backend(server, max_concurrency=2), *[request(n=3) for _ in range(4)])
    assert len(server.requests) == 12 and server.max_in_flight <= 2


def test_api_key_from_config_or_environment(monkeypatch) -> None:
    server = FakeOpenAIServer()
    generate(backend(server, api_key="sk-config"), request(n=1))
    assert server.headers[-1]["authorization"] == "Bearer sk-config"
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-env")
    generate(backend(server, api_key_env="MY_JUDGE_KEY"), request(n=1))
    assert server.headers[-1]["authorization"] == "Bearer sk-env"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    generate(backend(server), request(n=1))
    assert "authorization" not in server.headers[-1]


def test_model_and_extra_body_are_sent() -> None:
    server = FakeOpenAIServer()
    b = OpenAIBackend(
        OpenAIOptions(base_url="http://judge.test/v1", extra_body={"top_k": 20, "temperature": 9.0}),
        model="BBQGOD/DeepSeek-GRM-27B",
        transport=server.transport(),
    )
    generate(b, request(n=1))
    sent = server.requests[0]
    assert sent["model"] == "BBQGOD/DeepSeek-GRM-27B" and sent["top_k"] == 20
    assert sent["temperature"] == 0.5  # our sampling settings win over extra_body
    assert sent["max_tokens"] == 64 and sent["top_p"] == 1.0


def test_completions_mode_renders_the_chat_template_locally() -> None:
    server = FakeOpenAIServer(n_mode="ignore")
    b = backend(server, mode="completions", tokenizer=CharTokenizer())
    [out] = generate(b, request(n=2))
    assert server.paths == ["/v1/completions"] * 2
    assert server.requests[0]["prompt"] == "<user>Judge these.</><assistant>"
    assert len(out.samples) == 2
    # vLLM/SGLang get token ids, so the server cannot add a second BOS to an already templated text
    server = FakeOpenAIServer()
    generate(backend(server, flavour="vllm", mode="completions", tokenizer=CharTokenizer()), request(n=1))
    assert server.requests[0]["prompt"][:3] == [ord("<"), ord("u"), ord("s")]


def test_completions_mode_needs_a_tokenizer() -> None:
    with pytest.raises(BackendCapabilityError, match="tokenizer"):
        backend(FakeOpenAIServer(), mode="completions")
    with pytest.raises(Exception, match=r"openai\.tokenizer"):
        GRMConfig(backend="openai", openai={"mode": "completions"})


def test_usage_apportioning() -> None:
    # largest remainders: the floor of each exact share, then +1 to the largest fractions (ties: first)
    assert _apportion(10, [1, 1, 2]) == [3, 2, 5]  # exact 2.5, 2.5, 5
    assert _apportion(10, [1, 2]) == [3, 7]  # exact 3.33, 6.67: the larger fraction gets the unit
    assert _apportion(100, [1, 1, 1]) == [34, 33, 33]
    assert _apportion(7, [0, 0]) == [4, 3]  # no weights: even shares
    assert _apportion(5, [3]) == [5] and _apportion(0, []) == [] and _apportion(0, [2, 5]) == [0, 0]
    for total, weights in [(17, [3, 5, 9]), (1, [4, 4, 4, 4]), (1000, [7, 0, 13, 1])]:
        shares = _apportion(total, weights)
        assert sum(shares) == total
        assert all(abs(share - total * w / sum(weights)) < 1 for share, w in zip(shares, weights, strict=True))


def test_missing_usage_is_counted_not_invented() -> None:
    async def handler(request):
        return HTTPResponse.of(200, json_body={"choices": [{"index": 0, "message": {"content": "hi"}}]})

    b = OpenAIBackend(OpenAIOptions(base_url="http://judge.test/v1"), transport=handler)
    [out] = generate(b, request(n=1))
    assert out.prompt_tokens == 0 and out.samples[0].completion_tokens == 0
    assert b.stats.extra["usage_missing"] == 1


# --- score filling ----------------------------------------------------------------------------------------
def fill_request(n=2, expectation=False) -> ScoreFillRequest:
    return ScoreFillRequest(
        messages=MESSAGES,
        assistant_prefix="Analysis: fine.\n" + FORCED_SCORES_PREFIX,
        num_scores=n,
        score_range=(1, 10),
        expectation=expectation,
    )


def fill(b, *requests):
    async def main():
        try:
            return await b.fill_scores(list(requests))
        finally:
            await b.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("flavour", "field"), [("vllm", "structured_outputs"), ("vllm-legacy", "guided_regex"), ("sglang", "regex")]
)
def test_guided_fill_sends_the_servers_constraint_and_reads_back(flavour, field) -> None:
    server = FakeOpenAIServer(fill_text=lambda text: "7, 10}")
    b = backend(server, flavour=flavour)
    assert b.capabilities == {"score_fill", "token_prob"}
    [result] = fill(b, fill_request())
    assert result.values == [7, 10] and result.reason is None
    sent = server.requests[0]
    constraint = sent[field]["regex"] if field == "structured_outputs" else sent[field]
    assert constraint.endswith(r"\}") and sent["temperature"] == 0.0
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    assert sent["messages"][-1] == {"role": "assistant", "content": "Analysis: fine.\n" + FORCED_SCORES_PREFIX}


def test_guided_fill_that_the_server_ignored_fails_with_a_reason() -> None:
    server = FakeOpenAIServer(fill_text=lambda text: "great answers")
    [result] = fill(backend(server, flavour="vllm"), fill_request())
    assert result.values is None and "did not apply the guided-decoding constraint" in result.reason


def test_generic_server_continues_the_forced_prefix_through_completions() -> None:
    server = FakeOpenAIServer(fill_text=lambda text: "8, 3} and more text")
    b = backend(server, tokenizer=CharTokenizer())
    assert b.capabilities == {"score_fill"}  # no logprobs from a generic server: no token_prob
    [result] = fill(b, fill_request())
    assert result.values == [8, 3]
    assert server.paths == ["/v1/completions"]
    assert server.requests[0]["prompt"].endswith("<assistant>Analysis: fine.\n" + FORCED_SCORES_PREFIX)
    assert "regex" not in server.requests[0] and "structured_outputs" not in server.requests[0]


def test_generic_server_without_tokenizer_cannot_fill() -> None:
    b = backend(FakeOpenAIServer())
    assert b.capabilities == frozenset()
    with pytest.raises(BackendCapabilityError):
        fill(b, fill_request())
    with pytest.raises(BackendCapabilityError, match=r"openai\.tokenizer"):
        create_backend(GRMConfig(backend="openai", format_guarantee=True, openai={"server": "generic"}))


def test_unreadable_forced_continuation_leaves_the_sample_invalid() -> None:
    server = FakeOpenAIServer(
        judge=lambda body, seed, index: "I like both.", fill_text=lambda text: "eleven, 3}"
    )
    rm = GenerativeRewardModel(backend=backend(server, tokenizer=CharTokenizer()), k=2, format_guarantee=True)
    result = rm.score("q", ["a", "b"])
    rm.close()
    assert result.num_valid == 0 and result.all_invalid
    assert all("forcing failed" in s.reason and "not_a_number" in s.reason for s in result.samples)


def digit_split_engine(text: str) -> list[tuple[str, float]]:
    """A judge whose tokenizer splits digits (Gemma, Qwen): '10' is '1' then '0'."""
    if text.endswith("{") or text.endswith(","):
        return [(" 1", math.log(0.5)), ("7", math.log(0.3)), ("Hmm", math.log(0.2))]
    if text.endswith("1"):
        return [("0", math.log(0.6)), (",", math.log(0.2)), ("}", math.log(0.2))]
    return [(",", math.log(0.9)), ("}", math.log(0.1))]


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_token_probabilities_from_top_logprobs(mode) -> None:
    server = FakeOpenAIServer(top_logprobs=digit_split_engine)
    b = backend(server, flavour="vllm", mode=mode, tokenizer=CharTokenizer() if mode == "completions" else None)
    [result] = fill(b, fill_request(n=2, expectation=True))
    # first position: "1" (0.5/0.8) then "0" vs end: P(10)=0.625*0.6/(0.6+0.2 allowed)... end is "," for
    # position 1 and "}" for the last: P(10 | "1") = 0.6 / 0.8 at position 1, 0.6 / 0.8 at position 2.
    p1, p7 = 0.5 / 0.8, 0.3 / 0.8
    p10, p1_alone = p1 * 0.75, p1 * 0.25
    assert result.values == [10, 10]
    assert result.expected == pytest.approx([10 * p10 + 1 * p1_alone + 7 * p7] * 2)
    probe = server.requests[0]
    assert probe["max_tokens"] == 1 and probe["temperature"] == 0.0
    assert (probe["top_logprobs"] == 20 and probe["logprobs"] is True) if mode == "chat" else probe["logprobs"] == 20
    # the second position continues after the first number's most likely spelling
    assert any(str(_last(r)).endswith("{ 10,") for r in server.requests)


def _last(body):
    return body["messages"][-1]["content"] if "messages" in body else "".join(map(chr, body["prompt"]))


def test_token_probabilities_need_logprobs_in_the_answer() -> None:
    server = FakeOpenAIServer()  # no top_logprobs support: answers without logprobs
    with pytest.raises(BackendCapabilityError, match="no top_logprobs"):
        fill(backend(server, flavour="sglang"), fill_request(expectation=True))


def test_generic_server_with_logprobs_probes_instead_of_free_text() -> None:
    server = FakeOpenAIServer(top_logprobs=digit_split_engine)
    b = backend(server, tokenizer=CharTokenizer(), logprobs=True)
    assert b.capabilities == {"score_fill", "token_prob"}
    [result] = fill(b, fill_request(n=1))
    assert result.values == [10] and result.expected is None


# --- flavour detection and construction -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("owner", "version", "expected"),
    [("vllm", "0.11.0", "vllm"), ("vllm", "0.9.2", "vllm-legacy"), ("vllm", None, "vllm"),
     ("sglang", None, "sglang"), ("huggingface", None, "generic"), (None, None, "generic")],
)
def test_detect_server(owner, version, expected) -> None:
    server = FakeOpenAIServer(models=[{"id": "m", "owned_by": owner}] if owner else [], version=version)
    options = OpenAIOptions(base_url="http://judge.test/v1")
    assert detect_server(options, transport=server.sync_transport()) == expected


def test_detect_server_when_unreachable() -> None:
    def refuse(request):
        raise ConnectionRefusedError("refused")

    with pytest.raises(BackendUnavailableError, match=r"set openai\.server"):
        detect_server(OpenAIOptions(base_url="http://judge.test/v1"), transport=refuse)


def test_from_config_does_not_touch_the_network_for_plain_generation() -> None:
    b = create_backend(GRMConfig(backend="openai", openai={"base_url": "http://127.0.0.1:9/v1"}))
    assert isinstance(b, OpenAIBackend) and b.server == "generic" and b.capabilities == frozenset()


# --- end to end through the core ---------------------------------------------------------------------------
def test_generative_reward_model_over_http_is_deterministic() -> None:
    def judge(body, seed, index):
        text = body["messages"][-1]["content"]
        first = text.index("short") < text.index("a longer answer")
        return f"Analysis: ok.\nScores: \\boxed{{{'3, 8' if first else '8, 3'}}}"

    def run():
        server = FakeOpenAIServer(n_mode="ignore", judge=judge)
        with GenerativeRewardModel(backend=backend(server), k=4) as rm:
            return rm.score("q", ["short", "a longer answer"]), server

    first, server = run()
    second, _ = run()
    assert first.votes == [12.0, 32.0] and first.best == 1
    assert [s.seed for s in first.samples] == [s.seed for s in second.samples]
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    seeds = sorted(r["seed"] for r in server.requests)
    assert len(set(seeds)) == 4  # one distinct seed per sample
