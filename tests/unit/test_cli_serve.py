"""`grm-reward serve`: flags map onto the config, and the command serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from grm_reward.cli import build_parser
from grm_reward.cli.options import config_from_args
from tests.servers import free_port, process_server

ROOT = Path(__file__).resolve().parents[2]


def test_short_flags_map_onto_the_config(tmp_path) -> None:
    config_file = tmp_path / "judge.yaml"
    config_file.write_text("k: 4\nbatching:\n  group_by_prompt: true\nopenai:\n  max_retries: 1\n")
    args = build_parser().parse_args([
        "serve", "--config", str(config_file), "--host", "0.0.0.0", "--port", "6001", "--backend", "openai",
        "--base-url", "http://judge:8000/v1", "--model", "BBQGOD/DeepSeek-GRM-27B", "-k", "8",
        "--api-key", "server-token", "--openai-api-key", "judge-key", "--batching-window-s", "0.02",
        "--openai-extra-body", '{"top_k": 20}',
    ])
    config = config_from_args(args)
    assert (config.server.host, config.server.port, config.server.api_key) == ("0.0.0.0", 6001, "server-token")
    assert config.openai.base_url == "http://judge:8000/v1" and config.openai.api_key == "judge-key"
    assert config.openai.extra_body == {"top_k": 20} and config.openai.max_retries == 1
    assert config.k == 8 and config.model == "BBQGOD/DeepSeek-GRM-27B" and config.backend == "openai"
    assert config.batching.group_by_prompt and config.batching.window_s == 0.02


def test_score_has_no_server_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "grm_reward", "score", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert "--server-port" not in out and "--openai-base-url" in out


def test_serve_command_answers_until_stopped(tmp_path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "grm_reward", "serve", "--backend", "tests.helpers:length_backend",
               "--port", str(port), "-k", "2", "--api-key", "t0ken", "--server-log-level", "warning"]
    with process_server(command, port, log=tmp_path / "serve.log", timeout=60, cwd=ROOT) as base:
        prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        reply = httpx.post(base + "/get_reward?token=t0ken", json={"query": [prompt + "hello there"],
                                                                    "prompts": [prompt], "labels": [""]})
        assert reply.status_code == 200 and len(reply.json()["rewards"]) == 1
        assert httpx.post(base + "/get_reward", json={"query": []}).status_code == 401


def test_sigterm_with_a_request_in_flight_stops_the_server_promptly(tmp_path) -> None:
    import threading
    import time

    port = free_port()
    command = [sys.executable, "-m", "grm_reward", "serve", "--backend", "tests.helpers:stuck_backend",
               "--port", str(port), "--server-shutdown-timeout-s", "1", "--server-log-level", "warning"]
    replies: list[object] = []
    with process_server(command, port, log=tmp_path / "serve.log", timeout=60, cwd=ROOT) as base:
        prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"

        def call() -> None:
            try:
                replies.append(httpx.post(base + "/get_reward", json={"query": [prompt + "x"], "prompts": [prompt]},
                                          timeout=120).status_code)
            except httpx.HTTPError as exc:
                replies.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # the request is now waiting for the (stuck) judge
        process = process_server.current  # type: ignore[attr-defined]
        started = time.monotonic()
        process.terminate()
        process.wait(timeout=30)
        stopped_after = time.monotonic() - started
        caller.join(timeout=30)
    assert stopped_after < 10 and process.returncode in (0, -15)  # uvicorn re-raises SIGTERM after a clean exit
    assert replies and replies[0] != 200  # an error answer or a closed connection, not a hang


def test_serve_runs_uvicorn_with_the_connection_limits() -> None:
    from grm_reward.server.running import HeaderTimeoutProtocol, uvicorn_config

    args = build_parser().parse_args([
        "serve", "--server-header-timeout-s", "3", "--server-keep-alive-s", "7", "--server-max-connections", "10",
        "--server-backlog", "5", "--server-shutdown-timeout-s", "2",
    ])
    config = uvicorn_config(object(), config_from_args(args).server)
    assert issubclass(config.http, HeaderTimeoutProtocol) and config.http.header_timeout_s == 3.0
    assert (config.timeout_keep_alive, config.limit_concurrency, config.backlog) == (7, 10, 5)
    assert config.timeout_graceful_shutdown == 2


@pytest.mark.parametrize(("stop", "returncode"), [("SIGINT", 130), ("SIGTERM", -15)])
def test_a_second_signal_stops_at_once_without_a_traceback(tmp_path, stop: str, returncode: int) -> None:
    # the forced exit printed the lifespan's CancelledError traceback ("lifespan.shutdown.failed") on stderr;
    # and uvicorn forced it on a second Ctrl-C only: a second SIGTERM (kill twice) waited the whole 30 s
    import signal
    import threading
    import time

    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "grm_reward", "serve", "--backend", "tests.helpers:stuck_backend",
               "--port", str(port), "--server-shutdown-timeout-s", "30", "--server-log-level", "info"]
    replies: list[object] = []
    with process_server(command, port, log=log, timeout=60, cwd=ROOT) as base:
        prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"

        def call() -> None:
            try:
                replies.append(httpx.post(base + "/get_reward", json={"query": [prompt + "x"], "prompts": [prompt]},
                                          timeout=60).status_code)
            except httpx.HTTPError as exc:
                replies.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 30
        while "grm_batches_in_flight 1" not in httpx.get(base + "/metrics").text:  # the judge call has started
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process = process_server.current  # type: ignore[attr-defined]
        started = time.monotonic()
        process.send_signal(getattr(signal, stop))  # drains: the stuck judge call would hold it for 30 s
        while "Waiting for connections to close" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(getattr(signal, stop))  # forces
        process.wait(timeout=20)
        stopped_after = time.monotonic() - started
        caller.join(timeout=20)
    stderr = log.read_text(errors="replace")
    assert stopped_after < 15 and process.returncode == returncode, stderr
    assert replies == [503]  # the JSON "shutting down" answer: OpenRLHF retries it
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
