"""Fakes of the vLLM pieces the `vllm` backend touches, written to vLLM's signatures (tests only).

Signatures follow vllm-project/vllm at the time of writing (``vllm/v1/engine/async_llm.py``:
``AsyncLLM.generate(prompt, sampling_params, request_id, *, prompt_text=None, lora_request=None,
tokenization_kwargs=None, trace_headers=None, priority=0, data_parallel_rank=None, ...)``, an async
generator of ``RequestOutput``; ``from_engine_args(engine_args, start_engine_loop=True,
usage_context=..., stat_loggers=None)``; ``get_tokenizer()``; ``shutdown(timeout=None)``;
``vllm/sampling_params.py``: ``SamplingParams`` keyword fields, ``StructuredOutputsParams(regex=...)``,
``RequestOutputKind``; ``vllm/outputs.py``: ``RequestOutput`` / ``CompletionOutput`` fields;
``vllm/logprobs.py``: ``Logprob(logprob, rank, decoded_token)``; v1 parallel sampling seeds child
``j`` with ``seed + j``). vLLM itself is never imported: it needs a GPU.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class StructuredOutputsParams:
    json: Any = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.json, self.regex, self.choice, self.grammar, self.json_object)) != 1:
            raise ValueError("exactly one structured-output constraint")


@dataclass
class GuidedDecodingParams:  # vLLM < 0.10.2
    regex: str | None = None


@dataclass(kw_only=True)
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    structured_outputs: StructuredOutputsParams | None = None
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE


@dataclass
class OldSamplingParams(SamplingParams):  # what older vLLM accepts instead of structured_outputs
    guided_decoding: GuidedDecodingParams | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool


Judge = Callable[[str, SamplingParams, int], str]


@dataclass
class FakeAsyncLLM:
    """Generates ``judge(prompt_text, params, sample_seed)``; token ids are code points."""

    judge: Judge
    tokenizer: Any
    #: for logprob probes: f(prompt text) -> [(token text, logprob)]
    alternatives: Callable[[str], list[tuple[str, float]]] | None = None
    fail_on: str | None = None  # prompts containing this raise
    hang_on: str | None = None  # prompts containing this wait until cancelled
    calls: list[tuple[list[int], SamplingParams, str]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    shut_down: bool = False

    @classmethod
    def from_engine_args(cls, engine_args: Any, start_engine_loop: bool = True, usage_context: Any = None,
                         stat_loggers: Any = None) -> FakeAsyncLLM:
        raise NotImplementedError("tests construct FakeAsyncLLM directly")

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True

    async def generate(
        self,
        prompt: Any,
        sampling_params: SamplingParams,
        request_id: str,
        *,
        prompt_text: str | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        trace_headers: Any = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        assert isinstance(sampling_params, SamplingParams)
        ids = list(prompt["prompt_token_ids"])
        text = "".join(map(chr, ids))
        self.calls.append((ids, sampling_params, request_id))
        try:
            await asyncio.sleep(0)
            if self.fail_on and self.fail_on in text:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if self.hang_on and self.hang_on in text:
                await asyncio.Event().wait()
            outputs = []
            for j in range(sampling_params.n):
                seed = None if sampling_params.seed is None else sampling_params.seed + j
                logprobs = None
                if sampling_params.logprobs and self.alternatives is not None:
                    top = self.alternatives(text)
                    out = top[0][0]
                    logprobs = [{1000 + i: Logprob(lp, i + 1, tok) for i, (tok, lp) in enumerate(top)}]
                else:
                    out = self.judge(text, sampling_params, seed)
                outputs.append(CompletionOutput(j, out, [ord(c) for c in out], None, logprobs, "stop"))
            if sampling_params.output_kind is not RequestOutputKind.FINAL_ONLY:
                partial = [CompletionOutput(o.index, o.text[:1], o.token_ids[:1], None, None, None) for o in outputs]
                yield RequestOutput(request_id, None, ids, None, partial, False)
            yield RequestOutput(request_id, None, ids, None, outputs, True)
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise


@dataclass
class AsyncEngineArgs:
    model: str
    tokenizer: str | None = None
    dtype: str = "auto"
    seed: int | None = 0
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool | None = None
    max_num_seqs: int | None = None
    max_logprobs: int = 20
    trust_remote_code: bool = False
    enforce_eager: bool = False
