"""The meta reward model: a scalar RM that rates each judge sample (paper §4, App. G).

It reads the query, the responses in the order the sample saw them, and the sample's own text
(principles and critique), and returns one number; the vote then keeps the ``k_meta`` samples
with the highest ratings, filtering out low-quality judgements. The released checkpoint is
``BBQGOD/DeepSeek-GRM-27B-MetaRM``; ``grm-reward spct`` builds data to train your own.

Engines, chosen by ``GRMConfig.meta.backend``:

- ``transformers``: ``AutoModelForSequenceClassification`` with one logit; the rating is the logit;
- ``vllm``: the same model on vLLM's pooling runner (``LLM.classify``);
- ``http``: a served classifier's ``/classify`` endpoint (vLLM, SGLang); the rating is the
  returned score (for a one-label model, vLLM's probability is a monotone function of the logit,
  so the ranking, which is all the vote uses, is the same). Calls go through the one HTTP layer
  (:mod:`grm_reward._http`: retries, budget, breaker, deadlines) with the openai section's policy.
"""

from __future__ import annotations

import abc
import asyncio
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from grm_reward._http import HTTPEndpoint, HTTPPolicy
from grm_reward.backends._shared import torch_placement
from grm_reward.errors import BackendUnavailableError, ConfigError, GenerationError
from grm_reward.prompts import render_meta_prompt
from grm_reward.types import Judgement, Message, Request

if TYPE_CHECKING:
    from grm_reward.config import GRMConfig

__all__ = [
    "HTTPMetaRM",
    "MetaRewardModel",
    "ScriptedMetaRM",
    "TransformersMetaRM",
    "VLLMMetaRM",
    "create_meta_rm",
    "meta_conversation",
    "meta_text",
]

Conversation = tuple[Message, ...]


def meta_conversation(request: Request, judgement: Judgement) -> Conversation:
    """The meta RM's input for one sample: the prompt as the user turn, the sample's text as the answer."""
    return (
        {"role": "user", "content": render_meta_prompt(request, judgement.order)},
        {"role": "assistant", "content": judgement.text},
    )


def meta_text(conversation: Conversation, tokenizer: Any = None) -> str:
    """One string for a classifier: the tokenizer's chat template when it has one, else the paper's
    plain ``Prompt: ... Response: ...`` layout."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template([dict(m) for m in conversation], tokenize=False))
    user, assistant = conversation[0]["content"], conversation[1]["content"]
    return f"Prompt: {user}\nResponse: {assistant}"


class MetaRewardModel(abc.ABC):
    """Rates judge samples: higher means a more trustworthy judgement."""

    name: str = "meta_rm"

    @abc.abstractmethod
    async def rate(self, conversations: Sequence[Conversation]) -> list[float]:
        """One rating per conversation (see :func:`meta_conversation`), in order."""

    async def aclose(self) -> None:
        """Release the model."""


class ScriptedMetaRM(MetaRewardModel):
    """A meta RM whose rating is a Python function of the sample's text (tests and demos)."""

    name = "scripted"

    def __init__(self, rate_fn: Callable[[str], float]) -> None:
        self._rate_fn = rate_fn
        self.calls: list[int] = []

    async def rate(self, conversations: Sequence[Conversation]) -> list[float]:
        self.calls.append(len(conversations))
        return [float(self._rate_fn(str(c[-1]["content"]))) for c in conversations]


def _torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError("a transformers meta RM needs torch and transformers: "
                                      "pip install 'grm-reward[transformers]'") from exc
    return torch


class TransformersMetaRM(MetaRewardModel):
    """A sequence classifier with one output logit, run in-process."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, max_length: int = 4096) -> None:
        self.torch = _torch()
        labels = getattr(model.config, "num_labels", 1)
        if labels != 1:
            raise ConfigError(f"the meta RM must output one logit (num_labels=1); this model has {labels}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        # Long inputs keep their end: the critique and scores matter more than the query's start.
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = next(model.parameters()).device
        self.batch_size = batch_size
        self.max_length = max_length
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: GRMConfig) -> TransformersMetaRM:
        torch = _torch()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        options = config.meta
        device, dtype = torch_placement(torch, options.device, options.dtype)
        assert config.meta_rm is not None
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.meta_rm)
            model = AutoModelForSequenceClassification.from_pretrained(config.meta_rm, dtype=dtype)
        except OSError as exc:
            raise BackendUnavailableError(f"cannot load meta RM {config.meta_rm!r}: {exc}") from exc
        model.to(device)
        return cls(model, tokenizer, batch_size=options.batch_size, max_length=options.max_length)

    async def rate(self, conversations: Sequence[Conversation]) -> list[float]:
        return await asyncio.to_thread(self.rate_sync, conversations)

    def rate_sync(self, conversations: Sequence[Conversation]) -> list[float]:
        torch = self.torch
        texts = [meta_text(c, self.tokenizer) for c in conversations]
        ratings: list[float] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(self.device)
                try:
                    logits = self.model(**batch).logits
                except RuntimeError as exc:
                    raise GenerationError(f"meta RM forward pass failed: {exc}") from exc
                ratings.extend(float(v) for v in logits[:, 0].float().cpu())
        return ratings


class VLLMMetaRM(MetaRewardModel):
    """The classifier on vLLM's pooling runner (GPU). Thin: one ``LLM.classify`` call per batch."""

    name = "vllm"

    def __init__(self, llm: Any, tokenizer: Any = None) -> None:
        self.llm = llm
        self.tokenizer = tokenizer

    @classmethod
    def from_config(cls, config: GRMConfig) -> VLLMMetaRM:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendUnavailableError("the vllm meta RM needs vLLM: pip install 'grm-reward[vllm]'") from exc
        llm = LLM(
            model=config.meta_rm,
            runner="pooling",
            tensor_parallel_size=config.vllm.tensor_parallel_size,
            gpu_memory_utilization=config.vllm.gpu_memory_utilization,
            max_model_len=config.meta.max_length,
        )
        return cls(llm, llm.get_tokenizer())

    async def rate(self, conversations: Sequence[Conversation]) -> list[float]:
        texts = [meta_text(c, self.tokenizer) for c in conversations]
        outputs = await asyncio.to_thread(self.llm.classify, texts, use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outputs]


class HTTPMetaRM(MetaRewardModel):
    """A served classifier: ``POST url`` with ``{"model", "input": [texts]}`` (vLLM/SGLang ``/classify``).

    ``policy`` (retries, budget, breaker; default: ``OpenAIOptions``' with ``timeout_s``) is applied
    by the shared HTTP layer; an answer without one rating per input is retried like a 5xx.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        tokenizer: Any = None,
        transport: Any = None,
        policy: HTTPPolicy | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.tokenizer = tokenizer
        self.http = HTTPEndpoint(
            url,
            policy or HTTPPolicy(timeout_s=timeout_s),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            transport=transport,  # a _http.Transport handler, for tests
            label="meta RM server",
            auth_hint="; set the variable named by meta.api_key_env",
        )

    @classmethod
    def from_config(cls, config: GRMConfig) -> HTTPMetaRM:
        assert config.meta_rm is not None
        policy = HTTPPolicy.from_options(config.openai, timeout_s=config.meta.timeout_s)
        return cls(config.meta_rm, api_key=os.environ.get(config.meta.api_key_env), policy=policy)

    async def rate(self, conversations: Sequence[Conversation]) -> list[float]:
        payload: dict[str, Any] = {"input": [meta_text(c, self.tokenizer) for c in conversations]}
        if self.model:
            payload["model"] = self.model
        count = len(conversations)

        def malformed(body: dict[str, Any]) -> str | None:
            try:
                _ratings(body, count)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                return f"no rating per input ({type(exc).__name__}: {exc})"
            return None

        body = await self.http.post_json("", payload, validate=malformed)
        return _ratings(body, count)

    async def aclose(self) -> None:
        await self.http.aclose()


def _ratings(body: dict[str, Any], count: int) -> list[float]:
    """One finite rating per input from a ``/classify`` answer (raises on any other shape)."""
    ratings = {int(item.get("index", i)): float(item["probs"][0]) for i, item in enumerate(body["data"])}
    values = [ratings[i] for i in range(count)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("a rating is not a finite number")
    return values


def create_meta_rm(config: GRMConfig) -> MetaRewardModel:
    """The meta RM ``config.meta_rm`` names, on the engine ``config.meta.backend`` chooses."""
    if config.meta_rm is None:
        raise ConfigError("no meta_rm configured")
    backend = config.meta.backend
    if backend == "auto":
        backend = "http" if config.meta_rm.startswith(("http://", "https://")) else "transformers"
    if backend == "http":
        return HTTPMetaRM.from_config(config)
    if backend == "vllm":
        return VLLMMetaRM.from_config(config)
    return TransformersMetaRM.from_config(config)
