"""The server and the file form driven by OpenRLHF's own client code (openrlhf 0.11.2, --no-deps).

``openrlhf/utils/agent.py`` is loaded by file path with its logging module stubbed, as OpenRLHF's
own tests do (importing the ``openrlhf`` package pulls torch, transformers, deepspeed, ...).
Nothing of OpenRLHF is re-implemented here: ``SingleTurnAgentExecutor._fetch_rewards_via_http``,
``_fetch_rewards_via_func`` and ``execute`` are OpenRLHF's.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import sys
import types
from pathlib import Path

import pytest

from grm_reward import GenerationError, GRMConfig
from grm_reward.adapters.openrlhf import EXTRA_LOG_KEYS
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.server import build_app
from tests.conftest import is_available, requires_embedded, requires_torch
from tests.helpers import judge_text
from tests.servers import free_port, process_server, uvicorn_thread

pytestmark = pytest.mark.skipif(
    not (is_available("openrlhf") and is_available("aiohttp")),
    reason="needs `pip install --no-deps openrlhf==0.11.2` and aiohttp",
)

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def agent(monkeypatch):
    """OpenRLHF's released ``openrlhf/utils/agent.py``, loaded by path."""
    spec = importlib.util.find_spec("openrlhf")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "agent.py"
    monkeypatch.setitem(__import__("sys").modules, "openrlhf.utils.logging_utils",
                        types.SimpleNamespace(init_logger=logging.getLogger))
    module_spec = importlib.util.spec_from_file_location("openrlhf_agent_under_test", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def length_judge(call) -> str:
    if any("FLAKY" in r for r in call.responses) and not getattr(length_judge, "recovered", False):
        length_judge.recovered = True
        raise GenerationError("judge overloaded")
    return judge_text([max(1, min(10, len(r))) for r in call.responses])


def scripted_app(**server):
    backend = ScriptedBackend(length_judge, delay=0.02)
    config = GRMConfig(k=2, batching={"window_s": 0.02}, server=server)
    return build_app(config, backend=backend), backend


def test_openrlhfs_http_client_gets_one_reward_per_rollout_sample(agent) -> None:
    app, backend = scripted_app()
    answers = [f"It is {'4' * (i % 9 + 1)}" for i in range(64)]

    async def rollout(url):
        executor = agent.SingleTurnAgentExecutor(url)
        # one call per rollout sample, all in flight together, as RolloutRayActor runs them
        return await asyncio.gather(*(
            executor._fetch_rewards_via_http([PROMPT + a + "<|im_end|>"], [PROMPT], ["4"]) for a in answers
        ))

    with uvicorn_thread(app) as base:
        replies = asyncio.run(rollout(base + "/get_reward"))
    for answer, [info] in zip(answers, replies):
        assert info["rewards"] == pytest.approx([(min(10, len(answer)) - 1) / 9])
        assert info["scores"] == info["rewards"] and tuple(info["extra_logs"]) == EXTRA_LOG_KEYS
    assert backend.stats.calls < 64 / 4  # the single-sample requests were micro-batched


def test_several_urls_are_round_robined_and_empty_shards_answered(agent) -> None:
    app_a, backend_a = scripted_app()
    app_b, backend_b = scripted_app()

    async def main(urls):
        executor = agent.SingleTurnAgentExecutor(urls)
        for _ in range(4):
            await executor._fetch_rewards_via_http([PROMPT + "4"], [PROMPT], [""])
        import aiohttp  # an OpenRLHF <= 0.11.0 client also POSTs empty shards to the other URLs

        async with aiohttp.ClientSession() as session, session.post(urls[1], json={"query": [], "prompts": [], "labels": []}) as r:
            return r.status, await r.json()

    with uvicorn_thread(app_a) as a, uvicorn_thread(app_b) as b:
        status, empty = asyncio.run(main([a + "/get_reward", b + "/get_reward"]))
    assert backend_a.stats.calls == 2 and backend_b.stats.calls == 2
    assert status == 200 and empty["rewards"] == [] and set(empty["extra_logs"]) == set(EXTRA_LOG_KEYS)


def test_openrlhf_retries_a_failed_answer_and_the_server_recovers(agent) -> None:
    length_judge.recovered = False
    app, _ = scripted_app()

    async def main(url):
        return await agent.SingleTurnAgentExecutor(url)._fetch_rewards_via_http([PROMPT + "FLAKY"], [PROMPT], [""])

    with uvicorn_thread(app) as base:
        [info] = asyncio.run(main(base + "/get_reward"))  # 502 first; OpenRLHF waits 1 s and retries
    assert length_judge.recovered and info["rewards"] == pytest.approx([4 / 9])


def test_token_in_the_url_passes_openrlhfs_headerless_client(agent) -> None:
    app, _ = scripted_app(api_key="s3cret")

    async def main(url):
        return await agent.SingleTurnAgentExecutor(url)._fetch_rewards_via_http([PROMPT + "4"], [PROMPT], [""])

    with uvicorn_thread(app) as base:
        [info] = asyncio.run(main(base + "/get_reward?token=s3cret"))
    assert info["rewards"] == pytest.approx([0.0])


@pytest.mark.slow
def test_openrlhfs_client_against_the_real_serve_process(agent, tmp_path) -> None:
    """`grm-reward serve` as OpenRLHF users start it (its own process, judge = a backend factory), not an in-thread app."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "grm_reward", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--backend", "tests.helpers:length_backend", "-k", "2", "--batching-window-s", "0.02"]
    lengths = [4 * n for n in range(1, 13)] * 3  # 36 rollout samples, rewards 0 .. 1 and clipped at 10

    async def rollout(url):
        executor = agent.SingleTurnAgentExecutor(url)
        return await asyncio.gather(*(
            executor._fetch_rewards_via_http([PROMPT + "x" * n + "<|im_end|>"], [PROMPT], ["4"]) for n in lengths
        ))

    log = tmp_path / "serve.log"
    with process_server(command, port, env={"PYTHONPATH": str(ROOT)}, log=log, cwd=ROOT) as base:
        server = process_server.current
        replies = asyncio.run(rollout(base + "/get_reward"))
        metrics = httpx.get(base + "/metrics", timeout=10).text
    # tests.helpers.length_judge scores max(1, min(10, len // 4)) on the response OpenRLHF's query carries
    for n, [info] in zip(lengths, replies, strict=True):
        assert info["rewards"] == pytest.approx([(min(10, n // 4) - 1) / 9]), n
        assert tuple(info["extra_logs"]) == EXTRA_LOG_KEYS and info["extra_logs"]["grm_failed"] == [0.0]
    assert "grm" in metrics
    # SIGTERM: a graceful stop (uvicorn re-raises the signal once the app has shut down)
    assert server.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in log.read_text()


def test_the_file_form_loaded_by_openrlhf(agent, monkeypatch, tmp_path) -> None:
    config = tmp_path / "judge.yaml"
    config.write_text("backend: tests.helpers:length_backend\nk: 2\n")
    monkeypatch.setenv("GRM_REWARD_CONFIG", str(config))
    monkeypatch.delenv("GRM_REWARD_URL", raising=False)
    monkeypatch.syspath_prepend(str(ROOT))
    executor = agent.SingleTurnAgentExecutor(str(ROOT / "integrations" / "openrlhf" / "reward_func.py"))
    assert executor.reward_func is not None

    async def main():
        return await asyncio.gather(*(
            executor._fetch_rewards_via_func([PROMPT + "x" * n + "<|im_end|>"], [PROMPT], [""]) for n in (4, 20, 40)
        ))

    replies = asyncio.run(main())
    # tests.helpers.length_judge: max(1, min(10, len // 4))
    assert [r[0]["rewards"][0] for r in replies] == pytest.approx([0.0, 4 / 9, 9 / 9])
    assert all(tuple(r[0]["extra_logs"]) == EXTRA_LOG_KEYS for r in replies)


@pytest.mark.slow
@requires_torch
@requires_embedded
def test_execute_with_a_real_tokenizer_and_the_embedded_judge(agent) -> None:
    """OpenRLHF's whole single-turn path: tokenize (truncating the prompt), "generate", decode, reward."""
    from transformers import AutoTokenizer

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_path()))
    chat = [{"role": "system", "content": "You are a careful assistant. " * 20},
            {"role": "user", "content": "What is 2+2?"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    answer = "2+2 equals 4."
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]

    class Engine:  # stands in for vLLM: returns a fixed response
        async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
            completion = types.SimpleNamespace(token_ids=list(answer_ids), finish_reason="stop", logprobs=None)
            return types.SimpleNamespace(outputs=[completion])

    config = GRMConfig(k=2, max_new_tokens=24, format_guarantee=True, transformers={"device": "cpu"})
    app = build_app(config)
    sampling = types.SimpleNamespace(max_tokens=len(answer_ids), logprobs=None)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])

    async def main(url):
        executor = agent.SingleTurnAgentExecutor(url)
        full = await executor.execute(prompt, "4", sampling, prompt_length + 64, tokenizer, Engine())
        truncated = await executor.execute(prompt, "4", sampling, len(answer_ids) + 40, tokenizer, Engine())
        return full, truncated

    with uvicorn_thread(app) as base:
        full, truncated = asyncio.run(main(base + "/get_reward"))
    for output in (full, truncated):
        assert isinstance(output["reward"], list) and len(output["reward"]) == 1
        assert 0.0 <= output["reward"][0] <= 1.0
        assert set(output["extra_logs"]) == set(EXTRA_LOG_KEYS) and output["extra_logs"]["grm_failed"] == [0.0]
    # the truncated prompt changed what OpenRLHF sent, not the response the judge scored
    assert len(truncated["observation_tokens"]) < len(full["observation_tokens"])
    assert full["reward"] == truncated["reward"]
