"""The `openai` backend against a real OpenAI-compatible server nobody here wrote: `transformers serve`.

``transformers serve`` (transformers 5.10) serves the embedded model on 127.0.0.1; this module
starts it and stops it. Facts checked here: it ignores ``n`` (one choice comes back) so the
backend fans out and remembers; it honours ``seed``; it reports ``usage``; it offers
``/v1/completions``, so the forced prefix of the format guarantee goes there, rendered with the
model's chat template; it rejects ``continue_final_message`` (422), so the backend treats it as
a generic server. It ignores ``logprobs``: no token-probability scores from it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from grm_reward import GenerativeRewardModel, GRMConfig
from grm_reward.backends import create_backend
from grm_reward.backends.base import GenerationRequest
from grm_reward.backends.openai import OpenAIBackend
from grm_reward.config import OpenAIOptions
from tests.conftest import is_available, requires_embedded, requires_torch
from tests.servers import free_port, process_server

pytestmark = [
    pytest.mark.slow,
    requires_torch,
    requires_embedded,
    pytest.mark.skipif(not (is_available("fastapi") and is_available("uvicorn") and is_available("openai")),
                       reason="needs transformers[serving]"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from grm_reward.embedded import embedded_model_path

    model = embedded_model_path()
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent))
    assert cli, "the transformers CLI is not installed next to this Python"
    port = free_port()
    work = tmp_path_factory.mktemp("transformers-serve")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_CACHE": str(work),
           "TOKENIZERS_PARALLELISM": "false"}
    command = [cli, "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with process_server(command, port, env=env, log=work / "serve.log", timeout=300) as base:
        yield base + "/v1", str(model)


def options(base_url: str, **values) -> OpenAIOptions:
    return OpenAIOptions(base_url=base_url, timeout_s=120, max_retries=1, **values)


def test_k_samples_although_the_server_ignores_n(served) -> None:
    base_url, _ = served
    backend = OpenAIBackend(options(base_url))  # no `model` field: the server's pinned model
    with GenerativeRewardModel(backend=backend, k=3, temperature=1.0, max_new_tokens=12) as rm:
        result = rm.score("What is 2+2?", ["4"])
    assert len(result.samples) == 3 and len({s.seed for s in result.samples}) == 3
    assert backend.n_honoured == {"/chat/completions": False} and backend.stats.extra["n_ignored"] == 1
    assert backend.stats.extra["http_requests"] == 3  # one n=3 request answered with 1 choice, then 2 more
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert all(0 < s.completion_tokens <= 12 for s in result.samples)
    assert len({s.text for s in result.samples}) > 1  # distinct seeds, distinct samples


def test_seeds_make_samples_repeatable(served) -> None:
    base_url, _ = served
    backend = OpenAIBackend(options(base_url))

    def sample(seed: int) -> str:
        request = GenerationRequest(messages=({"role": "user", "content": "Name a colour."},), n=1, seed=seed,
                                    max_tokens=10, temperature=1.0)
        return asyncio.run(_generate(backend, request)).samples[0].text

    first, again, other = sample(1234), sample(1234), sample(98765)
    assert first == again and first != other


async def _generate(backend, request):
    try:
        return (await backend.generate([request]))[0]
    finally:
        await backend.aclose()


def test_format_guarantee_through_the_completions_endpoint(served) -> None:
    base_url, model = served
    config = GRMConfig(backend="openai", k=2, temperature=1.0, max_new_tokens=8, format_guarantee=True,
                       openai={"base_url": base_url, "server": "auto", "tokenizer": model, "timeout_s": 120})
    backend = create_backend(config)
    assert isinstance(backend, OpenAIBackend)
    assert backend.server == "generic" and backend.capabilities == {"score_fill"}  # detected: not vLLM/SGLang
    with GenerativeRewardModel(config, backend=backend) as rm:
        result = rm.score("What is 2+2?", ["4", "5"])  # n mode: the backend learns this server ignores n
        again = rm.score("What is 2+2?", ["4", "5"])
    # 8 tokens are too few for a judgement, so every sample went through the forced prefix on /completions
    # (one batched fill call per score call). This server has no guided decoding, so the continuation after
    # "Scores: \boxed{" is the model's own: a sample is either valid and marked forced, or invalid with the
    # parse failure of that continuation named (measured: the 135M model wrote 3 numbers, or a letter).
    assert backend.stats.fill_calls == 2
    fill_failure = re.compile(
        r"^truncated: the sample hit max_new_tokens=8 \(.*\); forcing failed: (wrong_count|not_a_number|out_of_range):"
    )
    for sample in result.samples:
        if sample.valid:
            assert sample.forced and len(sample.scores) == 2 and all(1 <= v <= 10 for v in sample.scores)
        else:
            assert not sample.forced and fill_failure.match(sample.reason), sample.reason
    # Not asserted yet: the same request drawing the same samples. Measured here, the n-mode first call
    # and the fan-out second call drew different samples for the same seeds (issue 10, "a sample is its
    # seed"); the hardening work should add `assert again.samples == result.samples` with its fix.
    assert len(again.samples) == 2


def test_completions_mode(served) -> None:
    base_url, model = served
    config = GRMConfig(backend="openai", k=2, temperature=1.0, max_new_tokens=10,
                       openai={"base_url": base_url, "mode": "completions", "tokenizer": model, "timeout_s": 120})
    with GenerativeRewardModel(config) as rm:
        result = rm.score("Say hello.", ["Hello!"])
        backend = rm.backend
    assert isinstance(backend, OpenAIBackend) and backend.n_honoured == {"/completions": False}
    assert len(result.samples) == 2 and all(s.text for s in result.samples)


@pytest.mark.skipif(not is_available("verl"), reason="needs grm-reward[verl]")
def test_verl_router_path_scores_through_the_served_judge(served) -> None:
    """verl's loader builds the `grm` manager with a router address: it judges over HTTP, here against the served model."""
    from urllib.parse import urlsplit

    from verl.trainer.ppo.reward import load_reward_manager

    from tests.verl_support import compose, rollout_batch, word_tokenizer

    base_url, model = served
    config = compose([
        "reward.reward_model.enable=True",
        f"reward.reward_model.model_path={model}",
        "reward.grm.judge.k=2",
        "reward.grm.judge.temperature=1.0",
        "reward.grm.judge.max_new_tokens=16",
        "reward.grm.judge.format_guarantee=true",
        "reward.grm.judge.openai.timeout_s=120",
    ])
    tokenizer = word_tokenizer()
    manager = load_reward_manager(
        config, tokenizer, reward_router_address=urlsplit(base_url).netloc, reward_model_tokenizer=None
    )
    try:
        assert manager.rm.config.backend == "openai" and manager.rm.config.openai.base_url == base_url
        rows = [{"prompt": "user what is two plus two assistant", "response": r, "uid": "q1",
                 "raw_prompt": [{"role": "user", "content": "What is two plus two?"}]} for r in ("four", "five")]
        batch = rollout_batch(tokenizer, rows)

        async def run():
            try:
                return await asyncio.gather(*(manager.run_single(batch[i : i + 1]) for i in range(len(batch))))
            finally:
                await manager.rm.aclose()  # its HTTP client belongs to this event loop

        outputs = asyncio.run(run())
        stats = manager.rm.backend.stats
    finally:
        if not manager.loop.is_closed() and not manager.loop.is_running():
            manager.loop.close()
    # The two rollouts of one prompt were judged together (listwise), k=2 samples, by the served
    # model over HTTP. A 135M judge given 16 tokens writes no score block, and the server offers no
    # guided decoding, so the forced prefix may still fail: then the rollout is marked failed and
    # gets failure_reward (unset: 0.0) — which is what the manager must report, either way.
    assert stats.samples == 2 and stats.prompt_tokens > 0 and stats.extra["http_requests"] >= 2
    for out in outputs:
        info = out["reward_extra_info"]
        assert info["grm_failed"] in (0.0, 1.0) and 0.0 <= out["reward_score"] <= 1.0, info
        if info["grm_failed"]:
            assert out["reward_score"] == 0.0 and info["grm_invalid_share"] == 1.0
