"""`vllm`: the judge in-process on vLLM's async engine (GPU).

A thin layer over ``AsyncLLM`` (``vllm.v1.engine.async_llm``; ``AsyncLLMEngine`` on older
releases): each :class:`GenerationRequest` becomes one engine request with
``SamplingParams(n=k, temperature, top_p, seed, max_tokens)``, all requests of a batch are
submitted at once (the engine schedules them together), prefix caching is on so the k samples
and the requests sharing a judge prompt prefill it once. Prompts are rendered with the model
tokenizer's chat template and passed as token ids. With ``n=k`` and ``seed=s`` vLLM seeds sample
``j`` with ``s + j``, so a request's samples are reproducible whatever else is in the batch.

Score filling (format guarantee): guided decoding with a regex for the score block
(``StructuredOutputsParams(regex=...)``, or ``GuidedDecodingParams`` on releases before it),
read back with the parser. Token-probability scores: the top-``logprobs`` alternatives of the
next token at each score position, renormalised over the in-range numbers (see
:mod:`grm_reward.backends._shared`; exact up to the top-k cut).

vLLM cannot run on the machines this project is built on (no GPU): everything around the
engine call is unit-tested against a fake engine written to vLLM's signatures, and
docs/backends.md lists what was and was not run.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grm_reward._tasks import gather_cancelling
from grm_reward.backends._shared import (
    fill_budget,
    probe_fill,
    read_fill,
    render_chat_prompt,
)
from grm_reward.backends.base import (
    Backend,
    Generation,
    GenerationOutput,
    GenerationRequest,
    ScoreFill,
    ScoreFillRequest,
    score_block_regex,
)
from grm_reward.errors import BackendUnavailableError, GenerationError, GRMError, PromptTooLongError
from grm_reward.types import Message

if TYPE_CHECKING:
    from grm_reward.config import GRMConfig, VLLMOptions

__all__ = ["VLLMApi", "VLLMBackend"]

_INSTALL_HINT = "pip install 'grm-reward[vllm]' (needs a CUDA GPU)"


@dataclass(frozen=True)
class VLLMApi:
    """The parts of vLLM this backend uses, so tests can supply fakes with the same signatures."""

    SamplingParams: Any
    StructuredOutputsParams: Any = None  # vLLM >= 0.10.2: SamplingParams(structured_outputs=...)
    GuidedDecodingParams: Any = None  # older vLLM: SamplingParams(guided_decoding=...)
    final_only: Any = None  # RequestOutputKind.FINAL_ONLY: only the finished output is streamed back

    @classmethod
    def load(cls) -> VLLMApi:
        try:
            import vllm
            from vllm import sampling_params
        except ImportError as exc:
            raise BackendUnavailableError(f"the vllm backend needs vLLM: {_INSTALL_HINT}") from exc
        kind = getattr(sampling_params, "RequestOutputKind", None)
        return cls(
            SamplingParams=vllm.SamplingParams,
            StructuredOutputsParams=getattr(sampling_params, "StructuredOutputsParams", None),
            GuidedDecodingParams=getattr(sampling_params, "GuidedDecodingParams", None),
            final_only=getattr(kind, "FINAL_ONLY", None),
        )

    def sampling(self, *, regex: str | None = None, **values: Any) -> Any:
        """``SamplingParams`` with a regex constraint expressed as this vLLM version wants it."""
        if self.final_only is not None:
            values["output_kind"] = self.final_only
        if regex is not None:
            if self.StructuredOutputsParams is not None:
                values["structured_outputs"] = self.StructuredOutputsParams(regex=regex)
            elif self.GuidedDecodingParams is not None:
                values["guided_decoding"] = self.GuidedDecodingParams(regex=regex)
            else:
                raise BackendUnavailableError("this vLLM has neither structured outputs nor guided decoding")
        return self.SamplingParams(**values)


class VLLMBackend(Backend):
    """A judge running in vLLM's async engine, in this process."""

    name = "vllm"
    capabilities = frozenset({"score_fill", "token_prob"})

    def __init__(
        self,
        engine: Any,
        *,
        api: VLLMApi | None = None,
        tokenizer: Any = None,
        top_logprobs: int = 20,
        max_model_len: int | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.api = api or VLLMApi.load()
        self._tokenizer = tokenizer
        self.top_logprobs = top_logprobs
        self.max_model_len = max_model_len or _engine_max_model_len(engine)

    @classmethod
    def from_config(cls, config: GRMConfig) -> VLLMBackend:
        api = VLLMApi.load()
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
        except ImportError as exc:
            raise BackendUnavailableError(f"the vllm backend needs vLLM: {_INSTALL_HINT}") from exc
        engine_class = _engine_class()
        if config.model is None:
            from grm_reward.embedded import embedded_model_path

            model = str(embedded_model_path())
        else:
            model = config.model
        engine = engine_class.from_engine_args(AsyncEngineArgs(**engine_arguments(model, config.vllm, config.seed)))
        return cls(engine, api=api, top_logprobs=config.vllm.top_logprobs, max_model_len=config.vllm.max_model_len)

    # --- protocol ---------------------------------------------------------------------------
    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        tokenizer = await self._get_tokenizer()
        prompts = [self._encode(tokenizer, r.messages, r.assistant_prefix, r.max_tokens, i) for i, r in enumerate(requests)]
        outputs = await gather_cancelling(
            self._run(
                ids,
                self.api.sampling(
                    n=r.n,
                    temperature=r.temperature,
                    top_p=r.top_p,
                    seed=r.seed,  # vLLM seeds child j with seed + j: the core's seed rule
                    max_tokens=r.max_tokens,
                ),
            )
            for r, ids in zip(requests, prompts)
        )
        results = []
        for ids, output in zip(prompts, outputs):
            completions = sorted(output.outputs, key=lambda c: c.index)
            samples = [
                Generation(text=c.text, completion_tokens=len(c.token_ids), finish_reason=c.finish_reason or "stop")
                for c in completions
            ]
            results.append(GenerationOutput(samples=samples, prompt_tokens=len(ids)))
            self.stats.prefill_tokens += len(ids)  # an upper bound: prefix caching may skip part of it
        return results

    async def _fill_scores(self, requests: list[ScoreFillRequest]) -> list[ScoreFill]:
        tokenizer = await self._get_tokenizer()
        return await gather_cancelling(self._fill_one(tokenizer, r) for r in requests)

    async def aclose(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            result = shutdown()
            if inspect.isawaitable(result):
                await result

    def _map_error(self, exc: Exception) -> GRMError:
        """vLLM's exceptions onto grm-reward's (matched by message/name: vllm is not imported here)."""
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ValueError) and ("maximum model length" in str(exc) or "too long" in str(exc)):
            return PromptTooLongError(f"vLLM rejected the judge prompt as too long: {exc}")
        if type(exc).__name__ == "EngineDeadError":
            return GenerationError(f"the vLLM engine died ({message}); restart the process")
        return GenerationError(f"vLLM generation failed: {message}")

    # --- internals ----------------------------------------------------------------------------
    async def _fill_one(self, tokenizer: Any, request: ScoreFillRequest) -> ScoreFill:
        text = render_chat_prompt(tokenizer, request.messages, request.assistant_prefix)
        n, score_range = request.num_scores, request.score_range
        if request.expectation:
            used = {"prompt": 0}

            async def next_tokens(extra: str) -> list[tuple[str, float]]:
                ids = list(tokenizer(text + extra, add_special_tokens=False)["input_ids"])
                used["prompt"] += len(ids)
                params = self.api.sampling(n=1, temperature=0.0, max_tokens=1, logprobs=self.top_logprobs)
                output = await self._run(ids, params)
                return _alternatives(tokenizer, output.outputs[0])

            probed = await probe_fill(next_tokens, n, score_range)
            return ScoreFill(
                values=probed.values,
                expected=probed.expected,
                prompt_tokens=used["prompt"],
                completion_tokens=probed.probes,
                reason=probed.reason,
            )
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        params = self.api.sampling(
            n=1, temperature=0.0, max_tokens=fill_budget(n), regex=score_block_regex(n, score_range)
        )
        completion = (await self._run(ids, params)).outputs[0]
        values, reason = read_fill(completion.text, n, score_range)
        if reason is not None:
            reason = f"{reason} (guided decoding did not hold)"
        return ScoreFill(
            values=values,
            expected=None,
            prompt_tokens=len(ids),
            completion_tokens=len(completion.token_ids),
            reason=reason,
        )

    async def _run(self, prompt_token_ids: list[int], params: Any) -> Any:
        """One engine request; its final ``RequestOutput`` (cancelling it aborts it in vLLM)."""
        final = None
        async for output in self.engine.generate({"prompt_token_ids": prompt_token_ids}, params, uuid.uuid4().hex):
            final = output
        if final is None:
            raise GenerationError("vLLM finished a request without output")
        return final

    async def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = self.engine.get_tokenizer()  # a coroutine on older vLLM releases
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return self._tokenizer

    def _encode(
        self, tokenizer: Any, messages: Sequence[Message], assistant_prefix: str | None, max_tokens: int, index: int
    ) -> list[int]:
        text = render_chat_prompt(tokenizer, messages, assistant_prefix)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.max_model_len is not None and len(ids) + max_tokens > self.max_model_len:
            raise PromptTooLongError(
                f"judge prompt of {len(ids)} tokens + max_new_tokens={max_tokens} exceeds the judge's context of "
                f"{self.max_model_len} tokens (generation request {index})"
            )
        return ids


def engine_arguments(model: str, options: VLLMOptions, seed: int) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments for the judge (prefix caching on)."""
    arguments: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "dtype": options.dtype,
        "enable_prefix_caching": options.enable_prefix_caching,
        "max_logprobs": max(20, options.top_logprobs),
        "seed": seed,
        "trust_remote_code": options.trust_remote_code,
    }
    if options.max_model_len is not None:
        arguments["max_model_len"] = options.max_model_len
    if options.max_num_seqs is not None:
        arguments["max_num_seqs"] = options.max_num_seqs
    arguments.update(options.engine_args)
    return arguments


def _engine_class() -> Any:
    try:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM
    except ImportError:
        pass
    try:
        from vllm import AsyncLLMEngine
    except ImportError as exc:
        raise BackendUnavailableError(f"the vllm backend needs vLLM: {_INSTALL_HINT}") from exc
    return AsyncLLMEngine


def _engine_max_model_len(engine: Any) -> int | None:
    value = getattr(getattr(engine, "model_config", None), "max_model_len", None)
    return value if isinstance(value, int) else None


def _alternatives(tokenizer: Any, completion: Any) -> list[tuple[str, float]]:
    """(token text, logprob) of the first generated position's top alternatives."""
    if not completion.logprobs:
        raise GenerationError("vLLM returned no logprobs for a token-probability probe")
    first = completion.logprobs[0]
    alternatives = []
    for token_id, logprob in first.items():
        text = getattr(logprob, "decoded_token", None)
        if text is None:
            text = tokenizer.decode([token_id])
        alternatives.append((str(text), float(logprob.logprob)))
    return alternatives
