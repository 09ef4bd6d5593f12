"""The reward server with a scripted judge: protocol, robustness, auth, metrics, batching."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi.testclient import TestClient

from grm_reward import GenerationError, GRMConfig
from grm_reward.adapters.openrlhf import EXTRA_LOG_KEYS
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.server import build_app
from tests.helpers import judge_text
from tests.servers import uvicorn_thread

CHATML_PROMPT = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


def length_judge(call) -> str:
    """Longer is better; fails on demand; shows what the judge saw."""
    if any("FAIL" in r for r in call.responses):
        raise GenerationError("judge server down")
    if any("MUTE" in r for r in call.responses):
        return "I refuse to score."
    return judge_text([max(1, min(10, len(r))) for r in call.responses])


def make_app(backend=None, **config):
    batching = config.pop("batching", {})
    cfg = GRMConfig(backend="transformers", k=config.pop("k", 2), batching={"window_s": 0.005, **batching}, **config)
    return build_app(cfg, backend=backend or ScriptedBackend(length_judge))


@pytest.fixture
def client():
    with TestClient(make_app()) as c:
        yield c


def get_reward(client, queries, prompts=None, labels=None, **kw):
    body = {"query": queries, "prompts": prompts if prompts is not None else [CHATML_PROMPT] * len(queries),
            "labels": labels if labels is not None else [""] * len(queries)}
    return client.post("/get_reward", json=body, **kw)


# --- OpenRLHF protocol ---------------------------------------------------------------------------------
def test_get_reward_answers_openrlhfs_shape(client) -> None:
    response = get_reward(client, [CHATML_PROMPT + "Four.<|im_end|>", CHATML_PROMPT + "It is 4, of course.<|im_end|>"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    data = response.json()
    assert set(data) == {"rewards", "scores", "extra_logs"}
    assert data["rewards"] == pytest.approx([(5 - 1) / 9, (10 - 1) / 9])  # "Four." = 5 chars; end token stripped
    assert data["scores"] == pytest.approx(data["rewards"])
    assert tuple(data["extra_logs"]) == EXTRA_LOG_KEYS
    assert data["extra_logs"]["grm_invalid_share"] == [0.0, 0.0] and data["extra_logs"]["grm_failed"] == [0.0, 0.0]


def test_empty_batch_gets_empty_lists_and_the_same_keys(client) -> None:
    response = client.post("/get_reward", json={"query": [], "prompts": [], "labels": []})
    assert response.status_code == 200
    assert response.json() == {"rewards": [], "scores": [], "extra_logs": {k: [] for k in EXTRA_LOG_KEYS}}


def test_unreadable_judgements_get_the_configured_number_and_are_flagged() -> None:
    with TestClient(make_app(failure_reward=-1.0)) as client:
        data = get_reward(client, [CHATML_PROMPT + "MUTE"]).json()
        metrics = client.get("/metrics").text
    assert data["rewards"] == [-1.0] and data["scores"] == [-1.0]
    assert data["extra_logs"]["grm_failed"] == [1.0] and data["extra_logs"]["grm_invalid_share"] == [1.0]
    assert "grm_judgements_failed_total 1" in metrics


def test_labels_become_reference_answers() -> None:
    seen = []

    def judge(call):
        seen.append(call.prompt)
        return judge_text([5])

    with TestClient(make_app(ScriptedBackend(judge), k=1)) as client:
        assert get_reward(client, [CHATML_PROMPT + "4"], labels=["4 (exactly)"]).status_code == 200
        assert get_reward(client, [CHATML_PROMPT + "4"], labels=[{"principles": ["Be exact"]}]).status_code == 200
    assert "4 (exactly)" in seen[0] and "What is 2+2?" in seen[0]
    assert "Be exact" in seen[1]


def test_query_without_prompts_uses_the_template_markers(client) -> None:
    response = client.post("/get_reward", json={"query": [CHATML_PROMPT + "Four!<|im_end|>"]})
    assert response.status_code == 200 and response.json()["rewards"] == pytest.approx([(5 - 1) / 9])


# --- native API ----------------------------------------------------------------------------------------
def test_v1_rewards_returns_rewards_and_judgements(client) -> None:
    response = client.post("/v1/rewards", json=[{"prompt": "q", "responses": ["short", "much longer"]}])
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["votes"] == [10.0, 20.0] and result["best"] == 1
    assert len(result["samples"]) == 2 and result["samples"][0]["critique"]
    assert result["samples"][0]["principles"][0]["text"].startswith("Accuracy")
    slim = client.post("/v1/rewards", json={"requests": [{"prompt": [{"role": "user", "content": "q"}],
                                                          "responses": ["x"], "reference": "y"}],
                                            "include_samples": False}).json()["results"][0]
    assert slim["samples"] is None and slim["rewards"] == [0.0]


def test_a_backend_failure_fails_only_the_affected_request(client) -> None:
    response = client.post("/v1/rewards", json=[{"prompt": "q", "responses": ["fine"]},
                                                {"prompt": "q", "responses": ["FAIL now"]}])
    assert response.status_code == 200
    ok, failed = response.json()["results"]
    generic = "the judge server failed to generate an answer (details in the server log)"
    assert ok["rewards"] and failed == {"error": {"type": "GenerationError", "message": generic}}
    # OpenRLHF's protocol has one number per query: the HTTP request fails and OpenRLHF retries it
    response = get_reward(client, [CHATML_PROMPT + "FAIL"])
    assert response.status_code == 502 and response.json()["error"]["message"] == generic
    assert get_reward(client, [CHATML_PROMPT + "still serving"]).status_code == 200


# --- robustness: always a clear 4xx, never a 500 or a hang ---------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty body"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        (b"null", 422, "invalid request"),
        (b'"query"', 422, "invalid request"),
        (b"{}", 422, "query: Field required"),
        (b'{"query": "one string"}', 422, "query: Input should be a valid list"),
        (b'{"query": [1, 2]}', 422, "query.0: Input should be a valid string"),
        (b'{"query": ["a", "b"], "prompts": ["p"]}', 422, "'prompts' has 1 items but 'query' has 2"),
        (b'{"query": ["a"], "labels": []}', 422, "'labels' has 0 items"),
        (b'{"query": ["\\ud800"], "prompts": ["p"]}', 422, "lone surrogate"),
        (b'{"query": ["no template here"]}', 422, "cannot tell the prompt from the response"),
        (b'{"query": ["x"], "prompts": [""]}', 422, "cannot tell the prompt"),
        # an integer longer than Python converts (4,300 digits) was a ValueError: a 500
        (b'{"query": [' + b"1" * 5000 + b"]}", 400, "not valid JSON"),
        (b"[" * 16 * 2**20, 400, "nested too deeply"),
    ],
)
def test_malformed_get_reward_bodies(client, body, status, fragment) -> None:
    response = client.post("/get_reward", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([{"prompt": "q", "responses": []}], "responses: List should have at least 1 item"),
        ([{"prompt": "q", "responses": ["a"], "extra": 1}], "Extra inputs are not permitted"),
        ([{"prompt": "", "responses": ["a"]}], "prompt is empty"),
        ([{"prompt": [{"role": "user", "content": [{"type": "image_url"}]}], "responses": ["a"]}], "only text"),
        ([{"prompt": "q", "responses": ["a"] * 40}], "exceed the server's max_responses=32"),
        ({"requests": "x"}, "requests: Input should be a valid list"),
        ({"requests": [{"prompt": "q", "responses": ["a"]}], "include_samples": "yes"}, "include_samples: Input should be a valid boolean"),
    ],
)
def test_malformed_native_bodies(client, body, fragment) -> None:
    response = client.post("/v1/rewards", json=body)
    assert response.status_code == 422 and fragment in response.json()["error"]["message"], response.text


@pytest.mark.parametrize(
    "value",
    [
        {"query": ["[" * 500 + "{" * 500, '"[[[\\"' * 200, "\\" * 1000 + '"'], "n": [1, -2.5e3, True, None]},
        ["x" * 100_000] * 8 + ["short", 1, {"k": ["[" * 300]}],  # long scalars next to small ones
        {f"key{i}": "v" * (i % 50) for i in range(5000)},
        [[i, str(i)] for i in range(3000)],
        # small containers (up to three levels) ride in the runs; deeper ones are walked
        {"requests": [{"prompt": [{"role": "user", "content": f"q{i}"}], "responses": ["a", "b"]} for i in range(2000)]},
        [[[[[i]]], {"a": [{"b": [i]}]}, [], {}] for i in range(1000)],
        ["[" * 98 + "]" * 98, [[[[[[[[]]]]]]]]] * 50,
    ],
)
def test_the_json_walker_reads_what_json_loads_reads_and_bounds_each_c_call(monkeypatch, value) -> None:
    # brackets inside strings do not nest; each batch handed to json.loads is small, whatever the scalars'
    # size (a list of long strings was one json.loads of the whole list, holding the GIL throughout)
    from grm_reward.server import app as server_app

    sizes: list[int] = []
    real_loads = json.loads

    def loads(chunk: str, **options: object) -> object:
        sizes.append(len(chunk))
        return real_loads(chunk, **options)

    monkeypatch.setattr(server_app.json, "loads", loads)
    for raw in (json.dumps(value).encode(), json.dumps(value, indent=3).encode()):  # windows end anywhere
        assert server_app._parse_json(raw) == real_loads(raw)
    assert max(sizes, default=0) <= server_app._RUN_CHARS + 2


def test_oversized_bodies_are_refused() -> None:
    with TestClient(make_app(server={"max_body_bytes": 2048})) as client:
        big = json.dumps({"query": ["x" * 4000], "prompts": ["p"]})
        response = client.post("/get_reward", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "max_body_bytes=2048" in response.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b"x" * 1000

        response = client.post("/get_reward", content=chunks())
        assert response.status_code == 413


def test_too_many_queries_in_one_body() -> None:
    with TestClient(make_app(server={"max_queries": 3})) as client:
        response = get_reward(client, [CHATML_PROMPT + "a"] * 4)
        assert response.status_code == 422 and "max_queries=3" in response.json()["error"]["message"]


@pytest.mark.parametrize("levels", [99, 100, 101])
def test_the_depth_limit_is_exact_whether_the_deepest_values_are_walked_or_run(levels: int) -> None:
    from grm_reward.server import app as server_app

    # walked to the bottom; or a run of a 3-level value ([[[1]]],2) at the bottom, which a walk near
    # the limit must not hand to C unchecked
    for body in ("[" * levels + "1" + "]" * levels, "[" * (levels - 3) + "[[[1]]],2" + "]" * (levels - 3)):
        if levels > 100:
            with pytest.raises(server_app.ClientError, match="nested too deeply"):
                server_app._parse_json(body.encode())
        else:
            assert server_app._parse_json(body.encode()) == json.loads(body)


def test_a_body_of_many_deep_little_values_is_refused_not_walked_for_seconds() -> None:
    # 16 MB of [[[[0]]]]: each element a container holding a 3-level value, walked in Python at ~8 µs each
    # (13 s of CPU); the walk stops at its budget of containers
    from grm_reward.server import app as server_app

    raw = b"[" + b",".join([b"[[[[0]]]]"] * (server_app._MAX_WALKED_CONTAINERS + 1)) + b"]"
    with pytest.raises(server_app.ClientError, match="flatter or smaller body") as caught:
        server_app._parse_json(raw)
    assert caught.value.status == 413
    fine = b"[" + b",".join([b"[[[0]]]"] * (server_app._MAX_WALKED_CONTAINERS + 1)) + b"]"  # small values: runs
    assert len(server_app._parse_json(fine)) == server_app._MAX_WALKED_CONTAINERS + 1


def test_counts_are_refused_before_the_body_is_validated() -> None:
    # Validating costs CPU per item however small the item: 200,000 tiny items took 6 s before
    # max_queries refused them. These items are invalid too: the count must be what answers.
    with TestClient(make_app(server={"max_queries": 3, "max_messages": 4})) as client:
        items = [{"prompt": "q", "responses": "not a list"}] * 4
        response = client.post("/v1/rewards", json={"requests": items})
        assert response.status_code == 422 and "max_queries=3" in response.json()["error"]["message"]
        response = client.post("/v1/rewards", json=items)  # a bare list too
        assert response.status_code == 422 and "max_queries=3" in response.json()["error"]["message"]
        response = client.post("/get_reward", json={"query": [1, 2, 3, 4]})
        assert response.status_code == 422 and "max_queries=3" in response.json()["error"]["message"]
        chat = [{"role": "user", "content": "hi"}, {"role": "assistant"}] * 3  # 6 messages, invalid ones among them
        response = client.post("/v1/rewards", json=[{"prompt": "q", "responses": ["a"]}, {"prompt": chat, "responses": ["a"]}])
        message = response.json()["error"]["message"]
        assert response.status_code == 422 and "max_messages=4" in message and "6 messages" in message and "1" in message
        four = [{"role": "user", "content": "hi"}] * 4  # at the limit: scored
        response = client.post("/v1/rewards", json=[{"prompt": four, "responses": ["a"]}])
        assert response.status_code == 200 and response.json()["results"][0]["rewards"][0] is not None


def test_unknown_routes_and_methods_answer_json(client) -> None:
    assert client.get("/nope").json()["error"]["message"] == "Not Found"
    assert client.get("/get_reward").status_code == 405


@pytest.mark.timeout(30)  # a regression here hangs instead of failing
def test_a_slow_judge_gets_a_504_and_the_server_keeps_serving() -> None:
    slow = ScriptedBackend(length_judge, delay=1.0)
    with TestClient(make_app(slow, server={"request_timeout_s": 0.2})) as client:
        response = get_reward(client, [CHATML_PROMPT + "a"])
        assert response.status_code == 504 and "request_timeout_s" in response.json()["error"]["message"]
        assert client.get("/health").status_code == 200


# --- auth -----------------------------------------------------------------------------------------------------
def test_bearer_token_or_query_token() -> None:
    with TestClient(make_app(server={"api_key": "s3cret"})) as client:
        body = {"query": [CHATML_PROMPT + "a"], "prompts": [CHATML_PROMPT]}
        refused = client.post("/get_reward", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.post("/get_reward", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/get_reward", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/get_reward?token=s3cret", json=body).status_code == 200  # OpenRLHF sends no headers
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


# --- metrics ----------------------------------------------------------------------------------------------------
def test_metrics_in_prometheus_text(client) -> None:
    get_reward(client, [CHATML_PROMPT + "abc"])
    client.post("/get_reward", content=b"{bad")
    text = client.get("/metrics").text
    for name in ("grm_requests_total", "grm_request_duration_seconds_bucket", "grm_samples_total",
                 "grm_samples_invalid_share", "grm_backend_tokens_total", "grm_queue_depth", "grm_batches_total"):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text
    assert 'grm_requests_total{route="/get_reward",status="200"} 1' in text
    assert 'grm_requests_total{route="/get_reward",status="400"} 1' in text
    assert "grm_samples_total 2" in text and 'grm_backend_tokens_total{kind="completion"}' in text
    assert 'grm_request_duration_seconds_count{route="/get_reward"} 2' in text


# --- micro-batching over real HTTP ----------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer() -> None:
    backend = ScriptedBackend(length_judge, delay=0.05)
    app = make_app(backend, k=1, batching={"window_s": 0.05})
    responses_text = [f"answer number {i}" + "!" * (i % 6) for i in range(32)]

    async def main(base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            replies = await asyncio.gather(*(
                http.post("/get_reward", json={"query": [CHATML_PROMPT + t + "<|im_end|>"], "prompts": [CHATML_PROMPT],
                                               "labels": [""]})
                for t in responses_text
            ))
            metrics = (await http.get("/metrics")).text
        return replies, metrics

    with uvicorn_thread(app) as base:
        replies, metrics = asyncio.run(main(base))
    assert all(r.status_code == 200 for r in replies)
    got = [r.json()["rewards"][0] for r in replies]
    assert got == pytest.approx([(min(10, len(t)) - 1) / 9 for t in responses_text])
    assert backend.stats.calls < 32 / 4  # many requests per backend call
    assert "grm_queue_depth 0" in metrics


def test_listwise_grouping_judges_a_groups_responses_together() -> None:
    backend = ScriptedBackend(length_judge)
    app = make_app(backend, k=1, batching={"window_s": 0.1, "group_by_prompt": True, "max_group_size": 4})

    async def main(base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            return await asyncio.gather(*(
                http.post("/get_reward", json={"query": [CHATML_PROMPT + "x" * n], "prompts": [CHATML_PROMPT]})
                for n in (1, 3, 5, 7)
            ))

    with uvicorn_thread(app) as base:
        replies = asyncio.run(main(base))
    assert [r.json()["rewards"][0] for r in replies] == pytest.approx([0.0, 2 / 9, 4 / 9, 6 / 9])
    assert [len(r.messages[-1]["content"].split("[The Begin of Response")) - 1 for r in backend.requests] == [4]


# --- issue 10: no request may hurt another ---------------------------------------------------------------------------
def _percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_health_stays_responsive_while_a_hostile_16_mib_body_is_processed() -> None:
    import threading
    import time

    # 32 Mistral-looking queries of 42,000 [INST] each (16 MiB): quadratic splitting on the event loop froze the server
    prompt = "[INST]" * 42_000
    body = json.dumps({"query": [prompt + " x"] * 32, "prompts": [prompt] * 32}).encode()
    assert len(body) > 15 * 2**20
    app = make_app(k=1)
    done = threading.Event()
    statuses = []
    with uvicorn_thread(app) as base:
        def hostile():
            try:
                for _ in range(2):
                    statuses.append(httpx.post(base + "/get_reward", content=body, timeout=170,
                                               headers={"content-type": "application/json"}).status_code)
            finally:
                done.set()

        sender = threading.Thread(target=hostile)
        latencies = []
        with httpx.Client(base_url=base, timeout=60) as http:
            http.get("/health")
            sender.start()
            while not done.is_set() or len(latencies) < 20:
                started = time.perf_counter()
                assert http.get("/health").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)
        sender.join()
    p99 = _percentile(latencies, 0.99)
    print(f"/health during two 16 MiB hostile bodies: {len(latencies)} probes, p50 "
          f"{_percentile(latencies, 0.5) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; hostile answers {statuses}")
    assert statuses == [200, 200]
    assert p99 < 1.0  # the goal is 100 ms: generous on a shared 2-core machine (the old code froze for 20+ s)


BAD_TEXT = "bad \ud800 text"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/get_reward", {"query": [CHATML_PROMPT + "a"], "prompts": [CHATML_PROMPT], "labels": [BAD_TEXT]}),
        ("/get_reward", {"query": [CHATML_PROMPT + "a"], "prompts": [CHATML_PROMPT],
                         "labels": [{"reference": "4", "principles": [BAD_TEXT]}]}),
        ("/get_reward", {"query": [CHATML_PROMPT + "a"], "labels": [{"deep": {"er": [{"x": BAD_TEXT}]}}]}),
        ("/get_reward", {"query": [CHATML_PROMPT + "a"], "labels": [{BAD_TEXT: 1}]}),
        ("/v1/rewards", [{"prompt": "q", "responses": ["a"], "reference": BAD_TEXT}]),
        ("/v1/rewards", [{"prompt": "q", "responses": ["a"], "principles": ["ok", BAD_TEXT]}]),
        ("/v1/rewards", [{"prompt": [{"role": "user", "content": [{"type": "text", "text": BAD_TEXT}]}],
                          "responses": ["a"]}]),
        ("/v1/rewards", [{"prompt": [{"role": BAD_TEXT, "content": "q"}], "responses": ["a"]}]),
    ],
)
def test_a_lone_surrogate_anywhere_gets_a_422_and_batch_mates_are_scored(route, body) -> None:
    backend = ScriptedBackend(length_judge)
    app = make_app(backend, k=1, batching={"window_s": 0.1})
    good = {"query": [CHATML_PROMPT + "fine answer"], "prompts": [CHATML_PROMPT], "labels": ["4"]}

    async def main(base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # json.dumps writes the lone surrogate as the escape \ud800, as a client's JSON encoder would
            payload = json.dumps(body).encode()
            return await asyncio.gather(
                http.post(route, content=payload, headers={"content-type": "application/json"}),
                *(http.post("/get_reward", json=good) for _ in range(3)),
            )

    with uvicorn_thread(app) as base:
        bad, *goods = asyncio.run(main(base))
    assert bad.status_code == 422 and "lone surrogate" in bad.json()["error"]["message"], bad.text
    assert [g.status_code for g in goods] == [200, 200, 200]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"query": [CHATML_PROMPT + "a"], "labels": [{"reference": {"nested": "dict"}}]}, "must be a string or a number"),
        ({"query": [CHATML_PROMPT + "a"], "labels": [{"principles": [1, 2]}]}, "principles must be"),
    ],
)
def test_wrong_types_in_labels_get_a_422(client, body, fragment) -> None:
    response = client.post("/get_reward", json=body)
    assert response.status_code == 422 and fragment in response.json()["error"]["message"], response.text


def test_size_limits_name_the_limit() -> None:
    with TestClient(make_app(server={"max_prompt_chars": 150, "max_response_chars": 50})) as client:
        long_prompt = "<|im_start|>user\n" + "q" * 200 + "<|im_end|>\n<|im_start|>assistant\n"
        response = get_reward(client, [long_prompt + "a"], prompts=[long_prompt])
        assert response.status_code == 422 and "max_prompt_chars=150" in response.json()["error"]["message"]
        response = get_reward(client, [CHATML_PROMPT + "a" * 60])
        assert response.status_code == 422 and "max_response_chars=50" in response.json()["error"]["message"]
        response = client.post("/v1/rewards", json=[{"prompt": "q", "responses": ["ok", "b" * 51]}])
        assert response.status_code == 422 and "response 1 has 51 characters" in response.json()["error"]["message"]
        response = client.post("/v1/rewards", json=[{"prompt": "q", "responses": ["ok"], "reference": "r" * 151}])
        assert response.status_code == 422 and "max_prompt_chars=150" in response.json()["error"]["message"]
        assert get_reward(client, [CHATML_PROMPT + "a" * 50]).status_code == 200


class StallingBackend(ScriptedBackend):
    """A judge that stalls (calls wait for ``release``) while ``stalled``; records cancelled calls."""

    def __init__(self, judge=length_judge) -> None:
        super().__init__(judge)
        self.release: asyncio.Event | None = None
        self.stalled = True
        self.cancelled = 0
        self.cancelled_event = __import__("threading").Event()

    async def generate(self, requests):
        if self.stalled:
            self.release = self.release or asyncio.Event()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                self.cancelled_event.set()
                raise
        return await super().generate(requests)


@pytest.mark.timeout(60)
def test_a_timed_out_request_gets_a_504_blaming_the_deadline_and_its_judge_call_is_cancelled() -> None:
    import time

    backend = StallingBackend()
    app = make_app(backend, k=1, server={"request_timeout_s": 0.3}, batching={"max_concurrent_batches": 1})
    with TestClient(app) as client:
        response = get_reward(client, [CHATML_PROMPT + "a"])
        error = response.json()["error"]
        assert response.status_code == 504 and error["type"] == "DeadlineExceededError", response.text
        assert "request_timeout_s=0.3" in error["message"] and "judge" not in error["message"]
        assert backend.cancelled_event.wait(5) and backend.cancelled == 1
        backend.stalled = False  # the judge recovers: the next request is not queued behind the abandoned one
        started = time.perf_counter()
        assert get_reward(client, [CHATML_PROMPT + "b"]).status_code == 200
        print(f"first answer after the stall: {(time.perf_counter() - started) * 1000:.1f} ms")


@pytest.mark.timeout(60)
def test_a_client_that_disconnects_gets_its_judge_call_cancelled() -> None:
    backend = StallingBackend()
    app = make_app(backend, k=1, server={"request_timeout_s": 120})
    with uvicorn_thread(app) as base:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(base + "/get_reward", json={"query": [CHATML_PROMPT + "a"], "prompts": [CHATML_PROMPT]},
                       timeout=0.5)
        assert backend.cancelled_event.wait(10), "the judge call kept running after the client left"
        metrics = httpx.get(base + "/metrics").text
    assert backend.cancelled == 1 and 'status="499"' in metrics


@pytest.mark.timeout(120)
def test_half_sent_requests_are_closed_after_the_header_timeout_and_others_are_served() -> None:
    import socket
    import time

    from grm_reward.config import ServerOptions

    app = make_app(k=1, server={"api_key": "s3cret"})
    options = ServerOptions(header_timeout_s=1.0, api_key="s3cret")
    sockets = []
    with uvicorn_thread(app, options=options) as base:
        port = int(base.rsplit(":", 1)[1])
        try:
            for _ in range(300):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Ty")  # never finished
                sockets.append(sock)
            reply = httpx.post(base + "/get_reward", headers={"Authorization": "Bearer s3cret"}, timeout=30,
                               json={"query": [CHATML_PROMPT + "a"], "prompts": [CHATML_PROMPT]})
            assert reply.status_code == 200
            started = time.monotonic()
            closed = sum(sock.recv(1) == b"" for sock in sockets)  # recv returns b"" once the server closes
            waited = time.monotonic() - started
        finally:
            for sock in sockets:
                sock.close()
    print(f"{closed} of {len(sockets)} half-sent requests closed by the server, the last {waited:.1f} s after the check")
    assert closed == 300


def test_ready_reflects_the_judges_probe_and_health_reports_it() -> None:
    class Probed(ScriptedBackend):
        reason: str | None = "judge server at http://10.9.8.7:8000/v1 refused the connection"
        hang = False

        async def probe(self):
            if self.hang:
                await asyncio.sleep(60)
            return self.reason

    backend = Probed(length_judge)
    with TestClient(make_app(backend, server={"ready_timeout_s": 0.2})) as client:
        response = client.get("/ready")
        assert response.status_code == 503 and "refused" in response.json()["reason"]
        assert "10.9.8.7" not in response.text  # the judge's internal address is not shown
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["ready"] is False and "refused" in health.json()["ready_reason"]
        backend.reason = None
        assert client.get("/ready").json() == {"status": "ready"}
        assert client.get("/health").json()["ready"] is True
        backend.hang = True
        response = client.get("/ready")
        assert response.status_code == 503 and "ready_timeout_s=0.2" in response.json()["reason"]


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        ("JudgeUnavailableError", 503, {"retry-after": "8"}),
        ("BackendProtocolError", 502, {}),
        ("DeadlineExceededError", 504, {}),
        ("GenerationError", 502, {}),
    ],
)
def test_new_errors_map_to_statuses_without_the_judges_url(error, status, headers) -> None:
    import grm_reward.errors as errors

    def judge(call):
        cls = getattr(errors, error)
        message = "POST http://judge.internal:8000/v1/chat/completions failed"
        raise cls(message, retry_after=7.2) if error == "JudgeUnavailableError" else cls(message)

    with TestClient(make_app(ScriptedBackend(judge), k=1)) as client:
        response = get_reward(client, [CHATML_PROMPT + "a"])
    assert response.status_code == status and response.json()["error"]["type"] == error
    assert "judge.internal" not in response.text
    for key, value in headers.items():
        assert response.headers[key] == value


def test_openapi_needs_the_token_and_tokens_are_redacted_from_the_access_log() -> None:
    import logging

    from grm_reward.server.app import redact_token_filter

    with TestClient(make_app(server={"api_key": "s3cret"})) as client:
        assert client.get("/openapi.json").status_code == 401
        assert "/get_reward" in client.get("/openapi.json?token=s3cret").json()["paths"]
    assert redact_token_filter in logging.getLogger("uvicorn.access").filters
    # uvicorn's access-log record: '%s - "%s %s HTTP/%s" %d'
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "POST", "/get_reward?x=1&token=s3cret", "1.1", 200), None)
    assert redact_token_filter(record) and "s3cret" not in record.getMessage()
    assert "/get_reward?x=1&token=***" in record.getMessage()


@pytest.mark.timeout(60)
def test_shutdown_past_its_grace_period_answers_json() -> None:
    import threading

    from grm_reward.config import ServerOptions

    backend = StallingBackend()
    app = make_app(backend, k=1)
    replies = []
    with uvicorn_thread(app, options=ServerOptions(shutdown_timeout_s=1)) as base:
        def call():
            replies.append(httpx.post(base + "/get_reward", timeout=30,
                                      json={"query": [CHATML_PROMPT + "a"], "prompts": [CHATML_PROMPT]}))

        caller = threading.Thread(target=call)
        caller.start()
        while backend.release is None:  # the request has reached the (stalled) judge
            __import__("time").sleep(0.01)
    caller.join(30)
    [reply] = replies
    assert reply.status_code == 503 and reply.headers["content-type"] == "application/json"
    assert "shutting down" in reply.json()["error"]["message"]
