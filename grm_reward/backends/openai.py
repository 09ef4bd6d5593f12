"""`openai`: the judge behind any OpenAI-compatible server, over async HTTP.

Works with ``vllm serve``, SGLang, verl's reward router, ``transformers serve``, llama.cpp and
hosted APIs. What it does (settings: :class:`~grm_reward.config.OpenAIOptions`):

- **k samples per prompt.** It asks for ``n=k`` in one request and counts the choices it gets:
  servers that ignore ``n`` (``transformers serve``, llama.cpp) return one, servers that refuse it
  answer 400. Either way the missing samples are fetched as single requests, each with the
  sample's own seed, and the server is remembered (per endpoint) so later calls fan out directly.
- **Bounded concurrency** (one semaphore, one connection pool of the same size), **timeouts**,
  and **retries** with exponential backoff and jitter on 429, 5xx, timeouts and connection
  errors, honouring ``Retry-After``.
- **Errors** are mapped once, at the boundary (:func:`_map_error`), onto
  :mod:`grm_reward.errors`; when one request of a batch fails its siblings are cancelled.
- **Token usage** from each response's ``usage`` (``stats.extra["usage_missing"]`` counts
  responses without one). With ``n`` honoured, the completion tokens of a response are shared
  out between its choices in proportion to their text length: the API reports only the total.
- **Format guarantee / token probabilities** (``fill_scores``), chosen by server flavour
  (``openai.server``): vLLM and SGLang continue the forced prefix in chat
  (``continue_final_message``) or completions mode, with guided decoding (vLLM
  ``structured_outputs`` / ``guided_regex``, SGLang ``regex``) and ``logprobs``. A generic server
  continues it through ``/completions`` with the chat template rendered locally, and the parser
  validates what it wrote (a sample it cannot read stays invalid). Token-probability scores read
  the top-k alternatives the server returns (see :mod:`grm_reward.backends._shared` for what is
  approximated); they are offered only where the server returns logprobs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import re
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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
from grm_reward.errors import (
    BackendCapabilityError,
    BackendUnavailableError,
    GenerationError,
    GRMError,
    PromptTooLongError,
)
from grm_reward.types import Message

if TYPE_CHECKING:
    import httpx

    from grm_reward.config import GRMConfig

__all__ = ["OpenAIBackend", "ServerFlavour", "detect_server"]

ServerFlavour = Literal["vllm", "vllm-legacy", "sglang", "generic"]
_GUIDED: frozenset[str] = frozenset({"vllm", "vllm-legacy", "sglang"})
_INSTALL_HINT = "pip install 'grm-reward[openai]'"
_CONTEXT_MESSAGE = re.compile(
    r"context length|context window|maximum (?:model|context|sequence) length|too long|too many tokens", re.IGNORECASE
)


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise BackendUnavailableError(f"the openai backend needs httpx: {_INSTALL_HINT}") from exc
    return httpx


class _CallFailed(Exception):
    """An HTTP call that did not succeed (after retries); mapped by :func:`_map_error`."""

    def __init__(self, url: str, *, status: int | None = None, message: str = "", attempts: int = 1) -> None:
        self.url = url
        self.status = status
        self.message = message
        self.attempts = attempts
        super().__init__(f"{url}: HTTP {status}: {message}" if status else f"{url}: {message}")


@dataclass
class _LoopState:
    """An HTTP client and a concurrency bound, per event loop (a client must not cross loops)."""

    client: httpx.AsyncClient
    slots: asyncio.Semaphore


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
    ``transport`` (an ``httpx`` transport, e.g. ``httpx.MockTransport``) replaces the network.
    """

    name = "openai"

    def __init__(
        self,
        options: OpenAIOptions | None = None,
        *,
        model: str | None = None,
        server: ServerFlavour = "generic",
        tokenizer: Any = None,
        transport: Any = None,
        api_key: str | None = None,
        sleep: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        _import_httpx()
        self.options = options or OpenAIOptions()
        if server not in ("vllm", "vllm-legacy", "sglang", "generic"):
            raise ValueError(f"server flavour must be resolved before use, got {server!r}")
        self.server: ServerFlavour = server
        self.model = model
        self.tokenizer = tokenizer
        self.base_url = self.options.base_url.rstrip("/")
        self._api_key = api_key if api_key is not None else _api_key(self.options)
        self._transport = transport
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        #: endpoint path -> whether the server honours ``n`` there (absent: not known yet)
        self.n_honoured: dict[str, bool] = {}
        self.logprobs = self.options.logprobs if self.options.logprobs is not None else server in _GUIDED
        if self.options.mode == "completions" and tokenizer is None:
            raise BackendCapabilityError("openai.mode='completions' needs the judge's tokenizer for its chat template")
        capabilities: set[Any] = set()
        if server in _GUIDED or tokenizer is not None:
            capabilities.add("score_fill")
            if self.logprobs:
                capabilities.add("token_prob")
        self.capabilities = frozenset(capabilities)
        self.stats.extra.update(
            {"http_requests": 0, "retries": 0, "fanout_requests": 0, "n_ignored": 0, "usage_missing": 0}
        )

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
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        started = time.perf_counter()
        self.stats.calls += 1
        try:
            outputs = await gather_cancelling(self._generate_one(r) for r in requests)
        except _CallFailed as exc:
            raise _map_error(exc, self.options) from exc
        finally:
            self.stats.generate_seconds += time.perf_counter() - started
        self.stats.prompts += len(requests)
        self.stats.samples += sum(r.n for r in requests)
        for output in outputs:
            self.stats.prompt_tokens += output.prompt_tokens
            self.stats.completion_tokens += sum(s.completion_tokens for s in output.samples)
        return outputs

    async def fill_scores(self, requests: Sequence[ScoreFillRequest]) -> list[ScoreFill]:
        if "score_fill" not in self.capabilities:
            return await super().fill_scores(requests)
        self.stats.fill_calls += 1
        try:
            fills = await gather_cancelling(self._fill_one(r) for r in requests)
        except _CallFailed as exc:
            raise _map_error(exc, self.options) from exc
        for fill in fills:
            self.stats.prompt_tokens += fill.prompt_tokens
            self.stats.completion_tokens += fill.completion_tokens
        return fills

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (clients of other loops are dropped)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self._states.pop(loop, None)
        self._states.clear()
        if state is not None:
            await state.client.aclose()

    # --- sampling ---------------------------------------------------------------------------
    async def _generate_one(self, request: GenerationRequest) -> GenerationOutput:
        path, payload = self._generation_payload(request)
        payload.update(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p)
        samples: list[Generation] = []
        prompt_tokens = 0
        n_refused: _CallFailed | None = None
        if request.n > 1 and self.options.use_n and self.n_honoured.get(path, True):
            try:
                body = await self._post(path, {**payload, "n": request.n, "seed": request.seeds[0]})
            except _CallFailed as exc:
                if exc.status not in (400, 422) or path in self.n_honoured:
                    raise
                # Perhaps the server refuses `n`: find out with single-sample requests below.
                self.n_honoured[path] = False
                n_refused = exc
            else:
                samples = self._generations(body, path)[: request.n]
                prompt_tokens = _usage(body, self.stats)[0]
                honoured = len(samples) >= request.n
                if not honoured and self.n_honoured.get(path) is not False:
                    self.stats.extra["n_ignored"] += 1
                self.n_honoured[path] = honoured
        missing = range(len(samples), request.n)
        if missing:
            try:
                bodies = await gather_cancelling(
                    self._post(path, {**payload, "seed": request.seeds[j]}) for j in missing
                )
            except _CallFailed:
                if n_refused is not None:
                    self.n_honoured.pop(path, None)  # `n` was not (only) what the server refused
                raise
            self.stats.extra["fanout_requests"] += len(missing) if request.n > 1 else 0
            for body in bodies:
                got = self._generations(body, path)
                if not got:
                    raise _CallFailed(self.base_url + path, message="the response holds no choices")
                samples.append(got[0])
                prompt_tokens = prompt_tokens or _usage(body, self.stats)[0]
        return GenerationOutput(samples=samples, prompt_tokens=prompt_tokens)

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
        if not isinstance(choices, list):
            raise _CallFailed(self.base_url + path, message="the response has no 'choices' list")
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
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            httpx = _import_httpx()
            options = self.options
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(options.timeout_s, connect=min(options.connect_timeout_s, options.timeout_s)),
                limits=httpx.Limits(
                    max_connections=options.max_concurrency, max_keepalive_connections=options.max_concurrency
                ),
                transport=self._transport,
            )
            state = _LoopState(client, asyncio.Semaphore(options.max_concurrency))
            self._states[loop] = state
        return state

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; the parsed JSON object, or :class:`_CallFailed`."""
        httpx = _import_httpx()
        state = self._loop_state()
        body = {**self.options.extra_body, **payload}
        if self.model is not None:
            body["model"] = self.model
        url = self.base_url + path
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            async with state.slots:
                self.stats.extra["http_requests"] += 1
                try:
                    response = await state.client.post(path, json=body)
                except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                    failure = _CallFailed(url, message=f"{type(exc).__name__}: {exc}", attempts=attempt)
                    failure.__cause__ = exc
                    retryable = True
                except httpx.HTTPError as exc:  # bad URL, unsupported protocol, ...: retrying cannot help
                    raise _CallFailed(url, message=f"{type(exc).__name__}: {exc}", attempts=attempt) from exc
                else:
                    if response.is_success:
                        return _json_object(response, url)
                    status = response.status_code
                    failure = _CallFailed(url, status=status, message=_server_message(response), attempts=attempt)
                    retryable = status in (408, 429) or (status >= 500 and status not in (501, 505))
                    retry_after = _retry_after(response.headers.get("retry-after"))
            if not retryable or attempt > self.options.max_retries:
                raise failure
            self.stats.extra["retries"] += 1
            await self._sleep(self._backoff(attempt, retry_after))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Delay before retry ``attempt`` (1-based): the server's Retry-After, else exponential with jitter."""
        if retry_after is not None:
            return min(retry_after, self.options.timeout_s)
        delay = min(self.options.backoff_max_s, self.options.backoff_base_s * 2.0 ** (attempt - 1))
        return float(delay / 2 + self._rng.uniform(0, delay / 2))


# --- server flavour ---------------------------------------------------------------------------------
def detect_server(options: OpenAIOptions, *, api_key: str | None = None, transport: Any = None) -> ServerFlavour:
    """Which server is behind ``options.base_url``: who owns its models, and vLLM's version.

    vLLM and SGLang name themselves in ``GET /models`` (``owned_by``); vLLM older than 0.10.2
    only knows ``guided_regex``. Anything else is treated as a generic server.
    """
    httpx = _import_httpx()
    base = options.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(headers=headers, timeout=min(options.connect_timeout_s, options.timeout_s), transport=transport) as client:
        try:
            response = client.get(base + "/models")
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                f"cannot reach {base}/models to detect the server flavour ({exc}); start the server first, or set "
                "openai.server to vllm, sglang or generic"
            ) from exc
        try:
            models = response.json().get("data") if response.is_success else None
        except ValueError:
            models = None
        owners = {str(m.get("owned_by", "")).lower() for m in models or [] if isinstance(m, dict)}
        if "sglang" in owners:
            return "sglang"
        if "vllm" not in owners:
            return "generic"
        root = base[: -len("/v1")] if base.endswith("/v1") else base
        try:
            version = str(client.get(root + "/version").json().get("version", ""))
        except (httpx.HTTPError, ValueError, AttributeError):
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


def _json_object(response: Any, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise _CallFailed(url, message=f"the response is not JSON: {response.text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise _CallFailed(url, message=f"the response is not a JSON object: {str(data)[:200]}")
    return data


def _server_message(response: Any) -> str:
    """The error message a server put in its body (OpenAI, FastAPI and plain-text shapes)."""
    try:
        data = response.json()
    except ValueError:
        return str(response.text[:500]).strip()
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                value = data[key]
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return str(data)[:500]


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _map_error(exc: _CallFailed, options: OpenAIOptions) -> GRMError:
    """The one place HTTP failures become grm-reward errors (most specific first)."""
    tries = f" after {exc.attempts} attempts" if exc.attempts > 1 else ""
    status, message = exc.status, exc.message
    if status in (401, 403):
        return BackendUnavailableError(
            f"{exc.url} refused the credentials (HTTP {status}: {message}); set openai.api_key or ${options.api_key_env}"
        )
    if status == 404:
        return BackendUnavailableError(
            f"{exc.url} answered 404 ({message}): check openai.base_url (it ends in /v1), the model name, and that "
            "the server offers this endpoint"
        )
    if status in (400, 413, 422) and _CONTEXT_MESSAGE.search(message):
        return PromptTooLongError(f"the judge server rejected the prompt as too long: {message}")
    if status is not None:
        return GenerationError(f"{exc.url} answered HTTP {status}{tries}: {message}")
    httpx = _import_httpx()
    if isinstance(exc.__cause__, httpx.TimeoutException):
        return GenerationError(f"{exc.url} timed out{tries} ({message}); raise openai.timeout_s if generations are long")
    if isinstance(exc.__cause__, httpx.ConnectError):
        return GenerationError(f"cannot connect to {exc.url}{tries} ({message}); is the server running?")
    return GenerationError(f"{exc.url} failed{tries}: {message}")
