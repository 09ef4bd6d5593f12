"""The `vllm` backend around a fake engine built to vLLM's signatures (vLLM needs a GPU)."""

from __future__ import annotations

import asyncio
import math
import sys
import types

import pytest

from grm_reward import GenerationError, GenerativeRewardModel, GRMConfig, PromptTooLongError
from grm_reward.backends import create_backend
from grm_reward.backends.base import FORCED_SCORES_PREFIX, GenerationRequest, ScoreFillRequest
from grm_reward.backends.vllm import VLLMApi, VLLMBackend, engine_arguments
from tests import fake_vllm
from tests.fake_tokenizer import CharTokenizer

API = VLLMApi(
    SamplingParams=fake_vllm.SamplingParams,
    StructuredOutputsParams=fake_vllm.StructuredOutputsParams,
    final_only=fake_vllm.RequestOutputKind.FINAL_ONLY,
)
MESSAGES = ({"role": "user", "content": "Judge: [The Begin of Response]\nx\n[The End of Response]"},)


def judge(text, params, seed):
    return f"Analysis: seed {seed}.\nScores: \\boxed{{6}}"


def make(**kw):
    engine = fake_vllm.FakeAsyncLLM(judge=kw.pop("judge", judge), tokenizer=CharTokenizer(), **kw)
    return VLLMBackend(engine, api=API), engine


def run(coro):
    return asyncio.run(coro)


def test_one_engine_request_per_prompt_with_n_k_and_the_sampling_settings() -> None:
    backend, engine = make()
    request = GenerationRequest(messages=MESSAGES, n=4, seed=7, max_tokens=99, temperature=0.5, top_p=0.9)
    [out] = run(backend.generate([request]))
    assert len(engine.calls) == 1
    ids, params, _ = engine.calls[0]
    assert (params.n, params.temperature, params.top_p, params.seed, params.max_tokens) == (4, 0.5, 0.9, 7, 99)
    assert params.output_kind is fake_vllm.RequestOutputKind.FINAL_ONLY
    assert "".join(map(chr, ids)) == CharTokenizer().apply_chat_template(list(MESSAGES), add_generation_prompt=True)
    assert [s.text.split()[2] for s in out.samples] == ["7.", "8.", "9.", "10."]  # vLLM seeds child j with seed + j
    assert out.prompt_tokens == len(ids) and all(s.completion_tokens == len(s.text) for s in out.samples)
    assert backend.stats.samples == 4 and backend.stats.prompt_tokens == len(ids)


def test_the_final_output_is_used_when_the_engine_streams() -> None:
    api = VLLMApi(SamplingParams=fake_vllm.SamplingParams)  # no FINAL_ONLY: cumulative outputs stream
    engine = fake_vllm.FakeAsyncLLM(judge=judge, tokenizer=CharTokenizer())
    backend = VLLMBackend(engine, api=api)
    [out] = run(backend.generate([GenerationRequest(messages=MESSAGES, n=2, seed=1, max_tokens=8, temperature=1.0)]))
    assert [s.text for s in out.samples] == [judge("", None, 1), judge("", None, 2)]


@pytest.mark.timeout(30)  # a regression here hangs instead of failing
def test_batch_requests_run_concurrently_and_a_failure_aborts_the_rest() -> None:
    backend, engine = make(fail_on="BOOM", hang_on="SLOW")
    requests = [
        GenerationRequest(messages=({"role": "user", "content": "SLOW"},), n=1, seed=1, max_tokens=8, temperature=0),
        GenerationRequest(messages=({"role": "user", "content": "BOOM"},), n=1, seed=2, max_tokens=8, temperature=0),
    ]
    with pytest.raises(GenerationError, match="vLLM generation failed: RuntimeError: CUDA error") as info:
        run(asyncio.wait_for(backend.generate(requests), timeout=5))
    assert isinstance(info.value.__cause__, RuntimeError)
    slow_id = next(rid for ids, _, rid in engine.calls if "SLOW" in "".join(map(chr, ids)))
    assert engine.aborted == [slow_id]  # the hanging sibling was cancelled (vLLM then aborts it)


def test_prompt_longer_than_the_context_is_an_input_error() -> None:
    engine = fake_vllm.FakeAsyncLLM(judge=judge, tokenizer=CharTokenizer())
    backend = VLLMBackend(engine, api=API, max_model_len=64)
    request = GenerationRequest(messages=MESSAGES, n=1, seed=1, max_tokens=32, temperature=0)
    with pytest.raises(PromptTooLongError, match="context of 64"):
        run(backend.generate([request]))
    assert engine.calls == []


def fill_request(expectation: bool) -> ScoreFillRequest:
    return ScoreFillRequest(
        messages=MESSAGES, assistant_prefix="Good.\n" + FORCED_SCORES_PREFIX, num_scores=1,
        score_range=(1, 10), expectation=expectation,
    )


def test_format_guarantee_uses_guided_decoding_and_reads_back() -> None:
    backend, engine = make(judge=lambda text, params, seed: "9}")
    [fill] = run(backend.fill_scores([fill_request(False)]))
    assert fill.values == [9] and fill.expected is None
    ids, params, _ = engine.calls[0]
    assert params.structured_outputs.regex.endswith(r"\}") and params.temperature == 0.0
    assert "".join(map(chr, ids)).endswith("<assistant>Good.\n" + FORCED_SCORES_PREFIX)


def test_older_vllm_gets_guided_decoding_params() -> None:
    api = VLLMApi(SamplingParams=fake_vllm.OldSamplingParams, GuidedDecodingParams=fake_vllm.GuidedDecodingParams)
    engine = fake_vllm.FakeAsyncLLM(judge=lambda text, params, seed: "4}", tokenizer=CharTokenizer())
    [fill] = run(VLLMBackend(engine, api=api).fill_scores([fill_request(False)]))
    assert fill.values == [4] and engine.calls[0][1].guided_decoding.regex is not None


def test_a_constraint_that_did_not_hold_is_reported() -> None:
    backend, _ = make(judge=lambda text, params, seed: "nine}")
    [fill] = run(backend.fill_scores([fill_request(False)]))
    assert fill.values is None and "guided decoding did not hold" in fill.reason


def test_token_probabilities_from_the_engines_logprobs() -> None:
    def alternatives(text):
        if text.endswith("{"):
            return [("8", math.log(0.5)), ("▁6", math.log(0.25)), ("Well", math.log(0.25))]
        return [("}", 0.0)]

    backend, engine = make(alternatives=alternatives)
    [fill] = run(backend.fill_scores([fill_request(True)]))
    assert fill.values == [8] and fill.expected == pytest.approx([(8 * 0.5 + 6 * 0.25) / 0.75])
    assert engine.calls[0][1].logprobs == 20 and engine.calls[0][1].max_tokens == 1


def test_end_to_end_through_the_core_and_close() -> None:
    backend, engine = make()
    rm = GenerativeRewardModel(backend=backend, k=3)
    result = rm.score("q", ["only answer"])
    rm.close()
    assert result.votes == [18.0] and engine.shut_down


def test_engine_arguments_from_config() -> None:
    config = GRMConfig(model="BBQGOD/DeepSeek-GRM-27B", seed=5, vllm={"tensor_parallel_size": 4,
                       "gpu_memory_utilization": 0.6, "max_model_len": 8192, "engine_args": {"enforce_eager": True}})
    args = engine_arguments(config.model, config.vllm, config.seed)
    assert args["tensor_parallel_size"] == 4 and args["gpu_memory_utilization"] == 0.6
    assert args["enable_prefix_caching"] is True and args["max_model_len"] == 8192
    assert args["seed"] == 5 and args["enforce_eager"] is True and args["max_logprobs"] >= 20
    fake_vllm.AsyncEngineArgs(**args)  # every argument is a real AsyncEngineArgs field


def install_fake_vllm(monkeypatch, *, new: bool = True) -> list:
    built: list = []

    class AsyncLLM(fake_vllm.FakeAsyncLLM):
        @classmethod
        def from_engine_args(cls, engine_args, start_engine_loop=True, usage_context=None, stat_loggers=None):
            built.append(engine_args)
            return cls(judge=judge, tokenizer=CharTokenizer())

    modules = {
        "vllm": types.SimpleNamespace(SamplingParams=fake_vllm.SamplingParams if new else fake_vllm.OldSamplingParams),
        "vllm.sampling_params": types.SimpleNamespace(RequestOutputKind=fake_vllm.RequestOutputKind,
                                                      **({"StructuredOutputsParams": fake_vllm.StructuredOutputsParams}
                                                         if new else {"GuidedDecodingParams": fake_vllm.GuidedDecodingParams})),
        "vllm.engine.arg_utils": types.SimpleNamespace(AsyncEngineArgs=fake_vllm.AsyncEngineArgs),
    }
    if new:
        modules["vllm.v1.engine.async_llm"] = types.SimpleNamespace(AsyncLLM=AsyncLLM)
    else:
        modules["vllm"].AsyncLLMEngine = AsyncLLM
        monkeypatch.setitem(sys.modules, "vllm.v1.engine.async_llm", None)
    modules["vllm"].sampling_params = modules["vllm.sampling_params"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return built


@pytest.mark.parametrize("new", [True, False])
def test_from_config_builds_the_engine(monkeypatch, new) -> None:
    built = install_fake_vllm(monkeypatch, new=new)
    backend = create_backend(GRMConfig(backend="vllm", model="m", format_guarantee=True))
    assert isinstance(backend, VLLMBackend) and built[0].model == "m" and built[0].enable_prefix_caching
    assert (backend.api.StructuredOutputsParams is not None) is new
    rm = GenerativeRewardModel(backend=backend, k=2)
    assert rm.score("q", ["a"]).votes == [12.0]
    rm.close()


def test_missing_vllm_gives_an_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    from grm_reward import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="grm-reward\\[vllm\\]"):
        create_backend(GRMConfig(backend="vllm", model="m"))


def test_judgements_record_the_seeds_vllm_sampled_with() -> None:
    """vLLM seeds child j of an n-request with seed + j (vllm/v1/engine/parallel_sampling.py,
    ParentRequest._get_child_sampling_params); the judgement must record that seed."""

    def seed_judge(text, params, seed):
        count = text.count("[The Begin of Response")
        return f"seed {seed}\nScores: \\boxed{{{', '.join(['5'] * count)}}}"

    backend, engine = make(judge=seed_judge)
    rm = GenerativeRewardModel(backend=backend, k=6, seed=2)
    result = rm.score("q", ["a", "b"])
    rm.close()
    assert any(params.n > 1 for _, params, _ in engine.calls)  # samples sharing a shown order: one n-request
    assert all(s.text.startswith(f"seed {s.seed}\n") for s in result.samples)
