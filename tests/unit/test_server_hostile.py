"""The reward server against hostile clients, from outside: slow and cut-off bodies, compressed bodies,
non-standard JSON (NaN, duplicate keys), prompts without text. Each case is a defect found by attacking
the running server; the basics (malformed bodies, size limits, surrogates) are in test_server.py."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from grm_reward import GRMConfig
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.config import ServerOptions
from grm_reward.server import build_app
from tests.helpers import judge_text
from tests.servers import uvicorn_thread

PROMPT = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


def seen_judge(seen: list[str]):
    def judge(call) -> str:
        seen.append(call.prompt)
        return judge_text([5 for _ in call.responses])

    return judge


def make_app(seen: list[str] | None = None, **server):
    config = GRMConfig(backend="transformers", k=1, batching={"window_s": 0.005}, server=server)
    return build_app(config, backend=ScriptedBackend(seen_judge(seen if seen is not None else [])))


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket's timeout passes)."""
    reply = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return reply
        reply += data


# --- a body that never finishes arriving ------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 1000\r\n\r\n" + b'{"query": [',  # declared, then stalls
        b"Transfer-Encoding: chunked\r\n\r\n" + b'b\r\n{"query": [\r\n',  # chunked, cut off mid-way
    ],
    ids=["content-length", "chunked"],
)
def test_a_body_that_stalls_gets_a_408_naming_the_limit_and_others_are_served(head: bytes) -> None:
    # it held its connection (and what it had sent) until request_timeout_s, 170 s, then blamed the deadline
    options = ServerOptions(body_timeout_s=1.0)
    with uvicorn_thread(make_app(body_timeout_s=1.0), options=options) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head)
            good = httpx.post(base + "/get_reward", json={"query": [PROMPT + "4"], "prompts": [PROMPT]}, timeout=20)
            started = time.monotonic()
            reply = read_reply(sock)
            waited = time.monotonic() - started
        metrics = httpx.get(base + "/metrics").text
    assert good.status_code == 200
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"body_timeout_s=1" in reply and b'"object":"error"' in reply
    assert waited < 15  # closed after the body timeout, not after request_timeout_s (170 s)
    assert 'route="/get_reward",status="408"' in metrics


def test_body_timeout_is_a_server_setting() -> None:
    assert ServerOptions().body_timeout_s <= ServerOptions().request_timeout_s
    with pytest.raises(Exception, match="body_timeout_s"):
        ServerOptions(body_timeout_s=0)


# --- bodies the server cannot read as given ------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_body_gets_a_415_naming_the_encoding(encoding: str) -> None:
    # a gzip body was a 400 "body is not UTF-8: ... byte 0x8b", which named neither the cause nor the fix
    import gzip

    with TestClient(make_app()) as client:
        response = client.post("/get_reward", content=gzip.compress(b'{"query": []}'),
                               headers={"content-type": "application/json", "content-encoding": encoding})
    assert response.status_code == 415, response.text
    assert f"Content-Encoding '{encoding}' is not supported" in response.json()["error"]["message"]


def test_a_nan_label_is_no_reference_answer() -> None:
    # Python clients (OpenRLHF's among them) send a missing float label as NaN; it became the reference "nan"
    seen: list[str] = []
    with TestClient(make_app(seen)) as client:
        for label in ("NaN", '{"reference": NaN}', "null"):
            body = json.dumps({"query": [PROMPT + "4"], "prompts": [PROMPT], "labels": ["@"]}).replace('"@"', label)
            response = client.post("/get_reward", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2]  # as if there were no label
    assert "nan" not in seen[0].lower()


def test_an_infinite_label_is_refused_not_judged_as_the_answer_inf() -> None:
    with TestClient(make_app([])) as client:
        for label in ("Infinity", '{"reference": -Infinity}'):
            body = json.dumps({"query": [PROMPT + "4"], "prompts": [PROMPT], "labels": ["@"]}).replace('"@"', label)
            response = client.post("/get_reward", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            assert "not an answer" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"query": ["x"], "query": ["%s4"], "prompts": ["%s"]}', "query"),  # both in one run of small members
        ('{"prompts": ["%s"], "query": ["x"], "labels": [["%s"]], "query": ["%s4"]}', "query"),  # across runs
        ('{"query": ["%s4"], "prompts": ["%s"], "labels": [{"reference": "a", "reference": "b"}]}', "reference"),
    ],
)
def test_a_duplicate_key_gets_a_400_naming_it(body: str, key: str) -> None:
    # the last one won silently; another parser (a proxy, a logger) reads the first: two readings of one body
    escaped = PROMPT.replace("\n", "\\n")
    body = body % ((escaped,) * body.count("%s"))
    with TestClient(make_app()) as client:
        response = client.post("/get_reward", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert f"body is ambiguous: the key {key!r} appears twice in one object" in response.json()["error"]["message"]


# --- prompts with nothing to judge against -----------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "prompt"),
    [
        ("<|im_start|><|im_end|><|im_start|>assistant\n<|im_end|>", "<|im_start|><|im_end|><|im_start|>assistant\n"),
        ("<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\nhi<|im_end|>", "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"),
        ("<|im_start|>assistant\n<|im_end|>", None),
        ("<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nhi<|eot_id|>", None),
        ("<start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\nhi", None),
    ],
)
def test_a_prompt_of_chat_template_markers_only_gets_a_422(query: str, prompt: str | None) -> None:
    # the markers themselves ("<|im_start|>user\n<|im_end|>...") were the judge's question: a reward for nothing
    seen: list[str] = []
    body: dict = {"query": [query]} if prompt is None else {"query": [query], "prompts": [prompt]}
    with TestClient(make_app(seen)) as client:
        response = client.post("/get_reward", json=body)
        assert response.status_code == 422, response.text
        assert "query 0: the prompt has no text, only chat-template markers" in response.json()["error"]["message"]
        assert not seen
        assert client.post("/get_reward", json={"query": [PROMPT + "4"], "prompts": [PROMPT]}).status_code == 200


def test_the_prompt_limit_counts_what_the_judge_reads() -> None:
    # many one-character messages (or principles) passed the limit counted by their text alone, and the judge
    # read several times max_prompt_chars (100,000 messages: 900,000 characters, 4 s of CPU per request)
    seen: list[str] = []
    many = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}] * 20  # 40 characters of text
    with TestClient(make_app(seen, max_prompt_chars=150)) as client:
        response = client.post("/v1/rewards", json=[{"prompt": many, "responses": ["a"]}])
        assert response.status_code == 422, response.text
        assert "the prompt has" in response.json()["error"]["message"] and "max_prompt_chars=150" in response.text
        response = client.post("/v1/rewards", json=[{"prompt": "q", "responses": ["a"], "principles": ["p"] * 60}])
        assert response.status_code == 422 and "the principles has" in response.text, response.text
        assert client.post("/v1/rewards", json=[{"prompt": many[:4], "responses": ["a"]}]).status_code == 200
    assert len(seen) == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
        b"POST /get_reward HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    ],
    ids=["request-line", "two-lengths", "bad-chunk"],
)
def test_a_request_http_cannot_parse_gets_a_json_400(request_bytes: bytes) -> None:
    # uvicorn answered "Invalid HTTP request received." in plain text; every other error is JSON
    with uvicorn_thread(make_app(), options=ServerOptions()) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(request_bytes)
            reply = read_reply(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower(), reply
    error = json.loads(body)
    assert error["status"] == 400 and error["object"] == "error" and error["error"]["message"]
