"""`openai`: the judge behind any OpenAI-compatible server (vLLM, SGLang, verl's router, hosted APIs).

k samples per prompt as ``n=k`` with the group's base seed (missing choices fetched one by one,
seeded ``seed + i``); HTTP through :mod:`grm_reward._http` (deadlines, retry budget, breaker);
token usage from ``usage``; the format guarantee and token probabilities by server flavour
(guided decoding and logprobs). Settings: :class:`~grm_reward.config.OpenAIOptions`; docs/backends.md.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from grm_reward._http import HTTPEndpoint, HTTPFailure, HTTPPolicy, Transport, import_aiohttp
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
from grm_reward.config import OpenAIOptions
from grm_reward.errors import BackendCapabilityError, BackendUnavailableError, GRMError
from grm_reward.types import Message

if TYPE_CHECKING:
    from grm_reward.config import GRMConfig

__all__ = ["OpenAIBackend", "ServerFlavour", "detect_server"]

ServerFlavour = Literal["vllm", "vllm-legacy", "sglang", "generic"]
_GUIDED: frozenset[str] = frozenset({"vllm", "vllm-legacy", "sglang"})
#: How long a readiness probe's answer is reused, in seconds.
_PROBE_CACHE_S = 1.5


@dataclass(frozen=True)
class _Continuation:
    """How to continue ``messages`` + an open assistant answer on this server."""

    path: str
    messages: tuple[Message, ...]
    prefix: str
    text: str | None  # rendered prompt for /completions; None for chat


class OpenAIBackend(Backend):
    """A judge behind an OpenAI-compatible HTTP server.

    ``server`` is the flavour (``"auto"`` is resolved by :meth:`from_config` through
    :func:`detect_server`); ``tokenizer`` is only needed to render prompts for ``/completions``.
    ``transport`` (a :data:`~grm_reward._http.Transport` handler) replaces the network (tests).
    """

    name = "openai"
    #: Transport errors are mapped where they happen, in the HTTP layer (grm_reward._http).
    foreign_errors = ()

    def __init__(
        self,
        options: OpenAIOptions | None = None,
        *,
        model: str | None = None,
        server: ServerFlavour = "generic",
        tokenizer: Any = None,
        transport: Transport | None = None,
        api_key: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        import_aiohttp()
        self.options = options or OpenAIOptions()
        if server not in ("vllm", "vllm-legacy", "sglang", "generic"):
            raise ValueError(f"server flavour must be resolved before use, got {server!r}")
        self.server: ServerFlavour = server
        self.model = model
        self.tokenizer = tokenizer
        self.base_url = self.options.base_url.rstrip("/")
        self._api_key = api_key if api_key is not None else _api_key(self.options)
        self._clock = clock
        self.stats.extra.update(
            {"http_requests": 0, "retries": 0, "fanout_requests": 0, "n_ignored": 0, "usage_missing": 0}
        )
        self.http = HTTPEndpoint(
            self.base_url,
            HTTPPolicy.from_options(self.options),
            headers={"Authorization": f"Bearer {self._api_key}"} if self._api_key else {},
            transport=transport,
            sleep=sleep,
            rng=rng,
            stats=self.stats.extra,
            auth_hint=f"; set openai.api_key or ${self.options.api_key_env}",
        )
        #: endpoint path -> whether the server honours ``n`` there (absent: not known yet)
        self.n_honoured: dict[str, bool] = {}
        self._n_off_since: dict[str, float] = {}
        self._probed: tuple[float, str | None] | None = None
        self.logprobs = self.options.logprobs if self.options.logprobs is not None else server in _GUIDED
        if self.options.mode == "completions" and tokenizer is None:
            raise BackendCapabilityError("openai.mode='completions' needs the judge's tokenizer for its chat template")
        capabilities: set[Any] = set()
        if server in _GUIDED or tokenizer is not None:
            capabilities.add("score_fill")
            if self.logprobs:
                capabilities.add("token_prob")
        self.capabilities = frozenset(capabilities)

    @classmethod
    def from_config(cls, config: GRMConfig) -> OpenAIBackend:
        options = config.openai
        api_key = _api_key(options)
        wants_fill = config.format_guarantee or config.token_prob
        server = options.server
        if server == "auto":
            # The flavour only changes how scores are filled; do not probe the server otherwise.
            server = detect_server(options, api_key=api_key) if wants_fill else "generic"
        tokenizer = None
        if options.mode == "completions" or (wants_fill and server not in _GUIDED):
            name = options.tokenizer or config.model
            if name is None:
                raise BackendCapabilityError(
                    "format_guarantee/token_prob on a generic OpenAI-compatible server continue the forced prefix "
                    "through /completions, which needs the judge's chat template: set openai.tokenizer (or model) "
                    "to its Hugging Face id or folder, or set openai.server to vllm/sglang if that is what it is"
                )
            tokenizer = _load_tokenizer(name)
        return cls(options, model=config.model, server=server, tokenizer=tokenizer, api_key=api_key)

    # --- protocol ---------------------------------------------------------------------------
    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        return await gather_cancelling(self._generate_one(r) for r in requests)

    async def _fill_scores(self, requests: list[ScoreFillRequest]) -> list[ScoreFill]:
        return await gather_cancelling(self._fill_one(r) for r in requests)

    async def probe(self) -> str | None:
        """None when the judge server answers ``GET /models`` now; else why not (cached ~1.5 s).

        While the circuit is open it says so without calling the server.
        """
        circuit = self.http.health.describe()
        if circuit is not None:
            return circuit
        now = self._clock()
        if self._probed is not None and now - self._probed[0] < _PROBE_CACHE_S:
            return self._probed[1]
        try:
            await self.http.get_json("/models", timeout_s=min(self.options.connect_timeout_s, 2.0))
            reason = None
        except GRMError as exc:
            reason = f"the judge server does not answer: {exc}"
        self._probed = (self._clock(), reason)
        return reason

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (clients of other loops are dropped)."""
        await self.http.aclose()

    # --- sampling ---------------------------------------------------------------------------
    async def _generate_one(self, request: GenerationRequest) -> GenerationOutput:
        path, payload = self._generation_payload(request)
        payload.update(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p)
        samples: list[Generation] = []
        prompt_tokens = 0
        n_refused = False
        if request.n > 1 and self._n_wanted(path):
            try:
                body = await self._post(path, {**payload, "n": request.n, "seed": request.seed})
            except GRMError as exc:
                if _status(exc) not in (400, 422) or self.n_honoured.get(path) is True:
                    raise
                n_refused = True  # perhaps the server refuses `n`: the single requests below tell
            else:
                samples = self._generations(body, path)[: request.n]
                prompt_tokens = _usage(body, self.stats)[0]
                if len(samples) >= request.n:
                    self.n_honoured[path] = True
                else:
                    self.stats.extra["n_ignored"] += 1
                    if len(samples) <= 1:  # n ignored (transformers serve, llama.cpp); else a glitch
                        self._n_off(path)
        # Sample i of the group is seeded seed + i, as vLLM seeds the children of an n-request:
        # the fan-out draws the very samples the n-request would have.
        missing = range(len(samples), request.n)
        if missing:
            bodies = await gather_cancelling(self._post(path, {**payload, "seed": request.seed + j}) for j in missing)
            if n_refused:
                self._n_off(path)
            self.stats.extra["fanout_requests"] += len(missing) if request.n > 1 else 0
            for body in bodies:
                samples.append(self._generations(body, path)[0])
                prompt_tokens = prompt_tokens or _usage(body, self.stats)[0]
        return GenerationOutput(samples=samples, prompt_tokens=prompt_tokens)

    def _n_wanted(self, path: str) -> bool:
        """Whether to send ``n``: unless switched off, or it was switched off less than n_reprobe_s ago."""
        if not self.options.use_n:
            return False
        if self.n_honoured.get(path) is False:
            return self._clock() - self._n_off_since.get(path, 0.0) >= self.options.n_reprobe_s
        return True

    def _n_off(self, path: str) -> None:
        self.n_honoured[path] = False
        self._n_off_since[path] = self._clock()

    def _generation_payload(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        if self.options.mode == "completions":
            text = render_chat_prompt(self.tokenizer, request.messages, request.assistant_prefix)
            return "/completions", {"prompt": self._prompt_field(text)}
        payload: dict[str, Any] = {"messages": [dict(m) for m in request.messages]}
        if request.assistant_prefix is not None:
            if self.server not in _GUIDED:
                raise BackendCapabilityError(
                    "continuing an assistant prefix in chat mode needs a vLLM or SGLang server "
                    "(continue_final_message); use openai.mode='completions'"
                )
            payload["messages"].append({"role": "assistant", "content": request.assistant_prefix})
            payload.update(continue_final_message=True, add_generation_prompt=False)
        return "/chat/completions", payload

    def _generations(self, body: dict[str, Any], path: str) -> list[Generation]:
        choices = body.get("choices")
        assert isinstance(choices, list)  # checked by _has_choices before the answer was accepted
        ordered = sorted(
            (c for c in choices if isinstance(c, dict)), key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0
        )
        texts = [_choice_text(c) for c in ordered]
        completion_tokens = _usage(body, None)[1]
        shares = _apportion(completion_tokens, [len(t) for t in texts])
        return [
            Generation(text=text, completion_tokens=tokens, finish_reason=str(choice.get("finish_reason") or "stop"))
            for choice, text, tokens in zip(ordered, texts, shares)
        ]

    # --- score filling ------------------------------------------------------------------------
    async def _fill_one(self, request: ScoreFillRequest) -> ScoreFill:
        continuation = self._continuation(request.messages, request.assistant_prefix)
        n, score_range = request.num_scores, request.score_range
        if request.expectation or (self.server not in _GUIDED and self.logprobs):
            if not self.logprobs:
                raise BackendCapabilityError("token-probability scores need a server that returns logprobs")
            used = {"prompt": 0}

            async def next_tokens(extra: str) -> list[tuple[str, float]]:
                body = await self._post(continuation.path, self._continuation_payload(continuation, extra, probe=True))
                used["prompt"] += _usage(body, self.stats)[0]
                return self._top_logprobs(body, continuation.path)

            probed = await probe_fill(next_tokens, n, score_range)
            return ScoreFill(
                values=probed.values,
                expected=probed.expected if request.expectation else None,
                prompt_tokens=used["prompt"],
                completion_tokens=probed.probes,
                reason=probed.reason,
            )
        payload = self._continuation_payload(continuation, "", probe=False)
        payload.update(max_tokens=fill_budget(n), temperature=0.0)
        if self.server == "vllm":
            payload["structured_outputs"] = {"regex": score_block_regex(n, score_range)}
        elif self.server == "vllm-legacy":
            payload["guided_regex"] = score_block_regex(n, score_range)
        elif self.server == "sglang":
            payload["regex"] = score_block_regex(n, score_range)
        body = await self._post(continuation.path, payload)
        generations = self._generations(body, continuation.path)
        text = generations[0].text if generations else ""
        values, reason = read_fill(text, n, score_range)
        if reason is not None and self.server in _GUIDED:
            reason = f"{reason} (the server did not apply the guided-decoding constraint)"
        prompt_tokens, completion_tokens = _usage(body, self.stats)
        return ScoreFill(
            values=values, expected=None, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, reason=reason
        )

    def _continuation(self, messages: Sequence[Message], prefix: str) -> _Continuation:
        if self.options.mode == "chat" and self.server in _GUIDED:
            return _Continuation("/chat/completions", tuple(messages), prefix, None)
        if self.tokenizer is None:
            raise BackendCapabilityError(
                "continuing the forced prefix on a generic server needs the judge's chat template (openai.tokenizer)"
            )
        return _Continuation("/completions", tuple(messages), prefix, render_chat_prompt(self.tokenizer, messages, prefix))

    def _continuation_payload(self, continuation: _Continuation, extra: str, *, probe: bool) -> dict[str, Any]:
        payload: dict[str, Any]
        if continuation.text is None:
            messages = [dict(m) for m in continuation.messages]
            messages.append({"role": "assistant", "content": continuation.prefix + extra})
            payload = {"messages": messages, "continue_final_message": True, "add_generation_prompt": False}
            if probe:
                payload.update(logprobs=True, top_logprobs=self.options.top_logprobs)
        else:
            payload = {"prompt": self._prompt_field(continuation.text + extra)}
            if probe:
                payload["logprobs"] = self.options.top_logprobs
        if probe:
            payload.update(max_tokens=1, temperature=0.0)
        return payload

    def _top_logprobs(self, body: dict[str, Any], path: str) -> list[tuple[str, float]]:
        try:
            logprobs = body["choices"][0]["logprobs"]
            if path == "/chat/completions":
                top = logprobs["content"][0]["top_logprobs"]
                return [(str(t["token"]), float(t["logprob"])) for t in top]
            first = logprobs["top_logprobs"][0]
            return [(str(token), float(lp)) for token, lp in first.items()]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendCapabilityError(
                f"{self.base_url}{path} returned no top_logprobs: this server does not support token-probability "
                "scores (set openai.logprobs=false, or use vLLM/SGLang)"
            ) from exc

    def _prompt_field(self, text: str) -> Any:
        """vLLM and SGLang take token ids (the text is already templated: no second BOS); others text."""
        if self.server in _GUIDED and self.tokenizer is not None:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return text

    # --- HTTP ---------------------------------------------------------------------------------
    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST under the HTTP policy; an answer without choices is retried like a 5xx."""
        body = {**self.options.extra_body, **payload}
        if self.model is not None:
            body["model"] = self.model
        return await self.http.post_json(path, body, validate=_has_choices)


# --- server flavour ---------------------------------------------------------------------------------
def detect_server(options: OpenAIOptions, *, api_key: str | None = None, transport: Transport | None = None) -> ServerFlavour:
    """Which server is behind ``options.base_url``: who owns its models, and vLLM's version.

    vLLM and SGLang name themselves in ``GET /models`` (``owned_by``); vLLM older than 0.10.2
    only knows ``guided_regex``. Anything else is treated as a generic server. Blocking (through
    the HTTP layer, on a short-lived private loop, so it works inside a running loop too).
    """
    from grm_reward._sync import LoopThread

    base = options.base_url.rstrip("/")
    http = HTTPEndpoint(
        base,
        HTTPPolicy.from_options(options),
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        transport=transport,
    )
    timeout = min(options.connect_timeout_s, options.timeout_s)

    async def detect() -> ServerFlavour:
        try:
            return await _detect(http, base, timeout)
        finally:
            await http.aclose()

    loop = LoopThread(name="grm-reward-detect")
    try:
        return loop.run(detect())
    finally:
        loop.close()


async def _detect(http: HTTPEndpoint, base: str, timeout: float) -> ServerFlavour:
    try:
        response = await http.get(base + "/models", timeout_s=timeout)
    except GRMError as exc:
        raise BackendUnavailableError(
            f"cannot reach {base}/models to detect the server flavour ({exc}); start the server first, or set "
            "openai.server to vllm, sglang or generic"
        ) from exc
    try:
        models = response.json().get("data") if response.is_success else None
    except (ValueError, AttributeError):
        models = None
    owners = {str(m.get("owned_by", "")).lower() for m in models or [] if isinstance(m, dict)}
    if "sglang" in owners:
        return "sglang"
    if "vllm" not in owners:
        return "generic"
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    try:
        version = str((await http.get(root + "/version", timeout_s=timeout)).json().get("version", ""))
    except (GRMError, ValueError, AttributeError):
        return "vllm"
    numbers = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    return "vllm-legacy" if numbers and numbers < (0, 10, 2) else "vllm"


# --- helpers ------------------------------------------------------------------------------------------
def _api_key(options: OpenAIOptions) -> str | None:
    return options.api_key or os.environ.get(options.api_key_env) or None


def _load_tokenizer(name: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise BackendUnavailableError(
            "rendering the judge's chat template locally needs transformers: pip install 'grm-reward[transformers]'"
        ) from exc
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise BackendUnavailableError(f"cannot load the judge's tokenizer {name!r} (openai.tokenizer): {exc}") from exc


def _choice_text(choice: dict[str, Any]) -> str:
    if isinstance(choice.get("message"), dict):
        content = choice["message"].get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _usage(body: dict[str, Any], stats: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of a response; (0, 0) and counted when absent."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        if stats is not None:
            stats.extra["usage_missing"] += 1
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0), (completion if isinstance(completion, int) else 0)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainders; even if all 0)."""
    if not weights:
        return []
    if len(weights) == 1:
        return [total]
    if sum(weights) == 0:
        weights = [1] * len(weights)
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _has_choices(body: dict[str, Any]) -> str | None:
    """None for an answer with a non-empty ``choices`` list, else what is wrong with it."""
    choices = body.get("choices")
    if not isinstance(choices, list):
        return "no 'choices' list"
    if not any(isinstance(c, dict) for c in choices):
        return "an empty 'choices' list"
    return None


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind a mapped error, if it came from one."""
    cause = exc.__cause__
    return cause.status if isinstance(cause, HTTPFailure) else None
