"""The one HTTP layer: every client of a server (judge, meta RM, reward server) calls through it.

Retries with backoff and jitter (honouring ``Retry-After``), per-call timeouts cut to the caller's
deadline (:mod:`grm_reward.deadlines`), cancellation that frees the connection at once, a retry
budget and a circuit breaker per server (shared by every client and event loop of that URL), hedged
calls and latency-derived timeouts from the latency observed per server, and the mapping of HTTP
failures onto :mod:`grm_reward.errors`. The client is aiohttp, one session per event loop, closed
when the loop ends; a ``transport`` handler replaces the network in tests. Policy: docs/backends.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import inspect
import itertools
import json
import os
import random
import re
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from grm_reward._sync import run_cpu
from grm_reward.deadlines import remaining
from grm_reward.errors import (
    BackendUnavailableError,
    DeadlineExceededError,
    GenerationError,
    GRMError,
    InputError,
    JudgeUnavailableError,
    PromptTooLongError,
)

__all__ = [
    "HTTPEndpoint",
    "HTTPFailure",
    "HTTPPolicy",
    "HTTPRequest",
    "HTTPResponse",
    "ServerHealth",
    "Transport",
    "forget_server",
    "import_aiohttp",
    "server_health",
]

_INSTALL_HINT = "pip install 'grm-reward[openai]'"
_SSL_LOCK = threading.Lock()
_SSL_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_CONTEXT_MESSAGE = re.compile(
    r"context length|context window|maximum (?:model|context|sequence) length|too long|too many tokens", re.IGNORECASE
)
_JSON = {"Content-Type": "application/json"}
#: Seconds of history the retry and hedge budgets look at.
BUDGET_WINDOW_S = 10.0
#: Latencies of the most recent successful calls kept per server (for hedging and timeouts).
LATENCY_WINDOW = 512
#: Hedges allowed per window whatever the traffic (so a quiet client can still hedge once).
HEDGE_BUDGET_FLOOR = 1

Validate = Callable[[dict[str, Any]], "str | None"]


def import_aiohttp() -> Any:
    """aiohttp, or :class:`BackendUnavailableError` with the install hint."""
    try:
        import aiohttp
    except ImportError as exc:
        raise BackendUnavailableError(f"HTTP clients need aiohttp: {_INSTALL_HINT}") from exc
    return aiohttp


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One request as a :data:`Transport` handler sees it (header names in lower case)."""

    method: str
    url: str
    path: str
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A whole response: status, headers (names in lower case) and body bytes."""

    status: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, *, json_body: Any = None, text: str | None = None, headers: Mapping[str, str] | None = None) -> HTTPResponse:
        """A response with a JSON (``json_body``) or text body (for transports in tests)."""
        content = json.dumps(json_body).encode() if json_body is not None else (text or "").encode()
        return cls(status, content, {k.lower(): v for k, v in (headers or {}).items()})

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (bad UTF-8 included)."""
        return json.loads(self.content)


#: Replaces the network (tests): called with each request; returns (or awaits) the response, or
#: raises as the network would: ``ConnectionRefusedError`` (cannot connect), another ``OSError``
#: (reset), ``TimeoutError``.
Transport = Callable[[HTTPRequest], "HTTPResponse | Awaitable[HTTPResponse]"]


@dataclass(frozen=True, slots=True)
class HTTPPolicy:
    """How calls to one server are timed, retried and cut off (defaults: ``OpenAIOptions``)."""

    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_concurrency: int = 64
    retry_budget: float = 0.2
    retry_budget_floor: int = 10
    breaker_failures: int = 5
    breaker_cooldown_s: float = 0.5
    breaker_cooldown_max_s: float = 1.0
    hedge: bool = True
    hedge_percentile: float = 95.0
    hedge_factor: float = 2.0
    hedge_min_delay_s: float = 0.1
    hedge_tail_factor: float = 1.5
    hedge_budget: float = 0.05
    latency_min_samples: int = 20
    latency_timeout_factor: float = 10.0
    latency_timeout_floor_s: float = 30.0

    @classmethod
    def from_options(cls, options: object, **changes: Any) -> HTTPPolicy:
        """The policy from a settings object with fields of the same names (``OpenAIOptions``)."""
        values = {f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)}
        return replace(cls(**values), **changes)


class HTTPFailure(Exception):
    """One failed HTTP call, before mapping: kept as the ``__cause__`` of the mapped error."""

    def __init__(
        self,
        url: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        kind: str = "http",
    ) -> None:
        self.url = url
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind  # "http", "timeout", "connect", "network", "malformed"
        self.attempts = 1
        super().__init__(f"{url}: HTTP {status}: {message}" if status else f"{url}: {message}")


class ServerHealth:
    """What every client of one server shares: retry and hedge budgets, breaker, latency (thread-safe).

    Budget (as Finagle's RetryBudget): retries in the last ``BUDGET_WINDOW_S`` may be at most
    ``retry_budget`` x the calls in that window, plus ``retry_budget_floor``. Breaker: after
    ``breaker_failures`` consecutive failures calls fail fast; one probe call is let through every
    cool-down (``breaker_cooldown_s``, doubling per failed probe up to ``breaker_cooldown_max_s``);
    the first success closes it. Latency: the last ``LATENCY_WINDOW`` successful calls; once
    ``latency_min_samples`` are known, a call still running after :meth:`hedge_delay` while a call
    sent half a delay after it was answered (it was overtaken: the judge is not just busy), or after
    twice the delay regardless, or after :meth:`tail_delay` once the server's calls have
    :meth:`drained` to stragglers, gets one duplicate (at most ``hedge_budget`` x the calls in the
    window, plus ``HEDGE_BUDGET_FLOOR``); a call's timeout shrinks to :meth:`latency_timeout`.

    The state is shared by every client of the server; the thresholds are each caller's: every
    method takes the caller's ``policy`` (default: the one this state was created with).
    """

    def __init__(self, url: str, policy: HTTPPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.failures = 0
        self.open = False
        self.next_probe = 0.0
        self.cooldown = policy.breaker_cooldown_s
        self.last_failure = ""
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._sorted: list[float] | None = None
        self._hedges: deque[float] = deque()
        self._youngest_answered = float("-inf")
        # First sends (not hedges) out, in the order they went out: token -> when; and those waiting for a slot
        self._out: dict[int, float] = {}
        self._waiting = 0
        self._tokens = itertools.count()

    def record_latency(self, seconds: float, started: float | None = None) -> None:
        """Record how long a successful call took (``started``: when it was sent, monotonic clock)."""
        with self._lock:
            self._latencies.append(seconds)
            self._sorted = None
            if started is not None and started > self._youngest_answered:
                self._youngest_answered = started

    def overtaken(self, since: float) -> bool:
        """Whether a call sent after ``since`` (monotonic clock) has already been answered."""
        return self._youngest_answered > since

    def call_waiting(self) -> int:
        """Track a call that waits for a slot (then :meth:`call_sent`, at last :meth:`call_over`); its token."""
        with self._lock:
            self._waiting += 1
            return next(self._tokens)

    def call_sent(self, token: int, started: float) -> None:
        """The call went out at ``started`` (monotonic clock; calls are reported in the order they go out)."""
        with self._lock:
            self._waiting -= 1
            self._out[token] = started

    def call_over(self, token: int) -> None:
        with self._lock:
            if self._out.pop(token, None) is None:
                self._waiting -= 1  # it never got a slot

    def drained(self) -> bool:
        """Whether every call to this server still out was overtaken (a call sent after it has been
        answered) and none waits for a slot: the batch has drained to stragglers. O(1)."""
        with self._lock:
            if self._waiting or not self._out:
                return False
            return next(reversed(self._out.values())) < self._youngest_answered

    def percentile(self, q: float, policy: HTTPPolicy | None = None) -> float | None:
        """The ``q``-th percentile (0-100) of recent latencies; None until ``latency_min_samples``."""
        policy = policy or self.policy
        with self._lock:
            if len(self._latencies) < max(1, policy.latency_min_samples):
                return None
            if self._sorted is None:
                self._sorted = sorted(self._latencies)
            values = self._sorted
            return values[min(len(values) - 1, max(0, round(q / 100.0 * len(values)) - 1))]

    def hedge_delay(self, policy: HTTPPolicy | None = None) -> float | None:
        """Seconds after which a call still running gets a duplicate; None: do not hedge (yet)."""
        policy = policy or self.policy
        if not policy.hedge:
            return None
        high = self.percentile(policy.hedge_percentile, policy)
        return None if high is None else max(policy.hedge_min_delay_s, high * policy.hedge_factor)

    def tail_delay(self, policy: HTTPPolicy | None = None) -> float | None:
        """Seconds after which a call still running gets a duplicate once the server's calls have
        :meth:`drained`: max(floor, ``hedge_tail_factor`` x median latency); None: off or not known yet."""
        policy = policy or self.policy
        if not policy.hedge or policy.hedge_tail_factor <= 0:
            return None
        median = self.percentile(50.0, policy)
        return None if median is None else max(policy.hedge_min_delay_s, median * policy.hedge_tail_factor)

    def latency_timeout(self, policy: HTTPPolicy | None = None) -> float | None:
        """A call's timeout from observed latency: max(floor, factor x p99); None until known or off."""
        policy = policy or self.policy
        if policy.latency_timeout_factor <= 0:
            return None
        p99 = self.percentile(99.0, policy)
        if p99 is None:
            return None
        return max(policy.latency_timeout_floor_s, p99 * policy.latency_timeout_factor)

    def try_hedge(self, policy: HTTPPolicy | None = None) -> bool:
        """Take one hedge from the budget; False when it is spent (or the circuit is open)."""
        policy = policy or self.policy
        with self._lock:
            if self.open:
                return False
            now = self._clock()
            for window in (self._calls, self._hedges):
                while window and window[0] < now - BUDGET_WINDOW_S:
                    window.popleft()
            if len(self._hedges) + 1 > policy.hedge_budget * len(self._calls) + HEDGE_BUDGET_FLOOR:
                return False
            self._hedges.append(now)
            return True

    def record_call(self) -> None:
        with self._lock:
            self._calls.append(self._clock())

    def try_retry(self, policy: HTTPPolicy | None = None) -> bool:
        """Take one retry from the budget; False when it is spent."""
        policy = policy or self.policy
        with self._lock:
            now = self._clock()
            for window in (self._calls, self._retries):
                while window and window[0] < now - BUDGET_WINDOW_S:
                    window.popleft()
            if len(self._retries) >= policy.retry_budget * len(self._calls) + policy.retry_budget_floor:
                return False
            self._retries.append(now)
            return True

    def admit(self) -> float | None:
        """None when a call may go now (it may be the probe), else seconds until the next probe."""
        with self._lock:
            if not self.open:
                return None
            now = self._clock()
            if now >= self.next_probe:
                # This call is the probe; if it has not come back within a cool-down, another goes.
                self.next_probe = now + self.cooldown
                return None
            return self.next_probe - now

    def record_success(self, policy: HTTPPolicy | None = None) -> None:
        policy = policy or self.policy
        with self._lock:
            self.failures = 0
            self.open = False
            self.cooldown = policy.breaker_cooldown_s

    def record_failure(self, reason: str, retry_after: float | None = None, policy: HTTPPolicy | None = None) -> None:
        policy = policy or self.policy
        with self._lock:
            self.failures += 1
            self.last_failure = reason
            if self.open:
                self.cooldown = min(self.cooldown * 2, policy.breaker_cooldown_max_s)
            elif self.failures < policy.breaker_failures:
                return
            self.open = True
            wait = max(self.cooldown, min(retry_after or 0.0, policy.backoff_max_s))
            self.next_probe = self._clock() + wait

    def describe(self) -> str | None:
        """None while the circuit is closed, else why calls fail fast."""
        with self._lock:
            if not self.open:
                return None
            wait = max(0.0, self.next_probe - self._clock())
            return (
                f"circuit open for {self.url} after {self.failures} consecutive failures "
                f"(last: {self.last_failure}); next probe in {wait:.1f} s"
            )


_SERVERS: dict[str, ServerHealth] = {}
_SERVERS_LOCK = threading.Lock()


def server_health(url: str, policy: HTTPPolicy) -> ServerHealth:
    """The shared state of the server at ``url`` (``policy``: its default; callers pass their own)."""
    key = url.rstrip("/")
    with _SERVERS_LOCK:
        health = _SERVERS.get(key)
        if health is None:
            health = _SERVERS[key] = ServerHealth(key, policy)
        return health


def forget_server(url: str | None = None) -> None:
    """Drop the shared state of ``url`` (a new server on a reused address starts afresh); None: of all."""
    with _SERVERS_LOCK:
        if url is None:
            _SERVERS.clear()
        else:
            _SERVERS.pop(url.rstrip("/"), None)


#: Payloads with more text than this are JSON-encoded in a worker thread, off the event loop.
_ENCODE_INLINE_CHARS = 65_536


def _encode_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _text_chars(value: Any, depth: int = 0) -> int:
    """The characters of the strings in a payload (messages, prompts), a cheap bound on its JSON size."""
    if isinstance(value, str):
        return len(value)
    if depth > 6:
        return 0
    if isinstance(value, Mapping):
        return sum(_text_chars(item, depth + 1) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_text_chars(item, depth + 1) for item in value)
    return 0


class _Session(Protocol):
    """The client of one event loop: sends one request and reads its whole answer."""

    async def send(self, method: str, url: str, content: bytes | None, timeout_s: float, connect_s: float) -> HTTPResponse: ...

    async def aclose(self) -> None: ...


#: Seconds an idle pooled connection is kept (below the common 5 s server keep-alive).
_KEEPALIVE_S = 4.0


class _AiohttpSession:
    """An aiohttp session: a keep-alive pool of ``size`` connections (per host too), no cookies, no
    redirects, proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``...; looked up once per
    origin: aiohttp's ``trust_env`` costs two thread hops per call, and reads ``.netrc``), TLS
    verified against ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set, else certifi's roots (as httpx did)."""

    def __init__(self, aiohttp: Any, headers: Mapping[str, str], size: int) -> None:
        self._timeout = aiohttp.ClientTimeout
        # Idle connections are dropped after 4 s, before the 5 s keep-alive of uvicorn (vLLM, SGLang,
        # `grm-reward serve`) closes them: reusing one a server has just closed costs a retry.
        connector = aiohttp.TCPConnector(
            limit=size, limit_per_host=size, ssl=_ssl_context(), keepalive_timeout=_KEEPALIVE_S
        )
        self._session = aiohttp.ClientSession(headers=dict(headers), connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        self._proxies: dict[str, tuple[Any, Any]] = {}

    def _proxy(self, url: str) -> tuple[Any, Any]:
        """(proxy URL, proxy auth) for ``url`` from the environment, or (None, None)."""
        origin = url.partition("://")[0] + "://" + url.partition("://")[2].partition("/")[0]
        found = self._proxies.get(origin)
        if found is None:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            try:
                found = get_env_proxy_for_url(URL(url))
            except (LookupError, ValueError):
                found = (None, None)
            self._proxies[origin] = found
        return found

    async def send(self, method: str, url: str, content: bytes | None, timeout_s: float, connect_s: float) -> HTTPResponse:
        timeout = self._timeout(total=timeout_s, sock_connect=connect_s)
        headers = _JSON if content is not None else None
        proxy, proxy_auth = self._proxy(url)
        response = await self._session.request(
            method, url, data=content, headers=headers, timeout=timeout, allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth
        )
        try:
            body = await response.read()
        except BaseException:
            response.close()  # cut off or cancelled mid-body: the connection is closed, never reused
            raise
        response.release()
        return HTTPResponse(response.status, body, response.headers)

    async def aclose(self) -> None:
        await self._session.close()


class _HandlerSession:
    """A :data:`Transport` handler in place of the network (tests)."""

    def __init__(self, handler: Transport, headers: Mapping[str, str]) -> None:
        self._handler = handler
        self._headers = {k.lower(): v for k, v in headers.items()}

    async def send(self, method: str, url: str, content: bytes | None, timeout_s: float, connect_s: float) -> HTTPResponse:
        headers = {**self._headers, **({"content-type": _JSON["Content-Type"]} if content is not None else {})}
        path = "/" + url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
        answer = self._handler(HTTPRequest(method, url, path, headers, content or b""))
        return await answer if inspect.isawaitable(answer) else answer

    async def aclose(self) -> None:
        return None


async def _close_at_loop_end(session: _Session) -> AsyncGenerator[None, None]:
    """Suspended for the life of its loop: the loop's ``shutdown_asyncgens`` (``asyncio.run``,
    uvicorn, :class:`~grm_reward._sync.LoopThread`) or its garbage collection closes the session."""
    try:
        yield
    finally:
        await session.aclose()


@dataclass
class _LoopState:
    """A session and a concurrency bound, per event loop (a session must not cross loops)."""

    session: _Session
    slots: asyncio.Semaphore
    closer: AsyncGenerator[None, None]


class HTTPEndpoint:
    """Calls to one server under an :class:`HTTPPolicy`.

    ``transport`` (a :data:`Transport` handler) replaces the network and gets a
    private :class:`ServerHealth`; real URLs share theirs through :func:`server_health`. ``stats``
    (a dict of counters) receives ``http_requests``, ``retries``, ``retries_denied``,
    ``breaker_rejections``, ``breaker_waits``, ``hedges`` (duplicates sent) and ``hedge_wins``
    (duplicates answered first). ``auth_hint`` finishes the message of a 401/403.

    While the circuit is open a call fails fast, unless a deadline is in force (the server's
    ``request_timeout_s``) that outlasts the wait for the next probe: then it waits for the probe.
    """

    def __init__(
        self,
        base_url: str,
        policy: HTTPPolicy,
        *,
        headers: Mapping[str, str] | None = None,
        transport: Any = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        rng: random.Random | None = None,
        stats: dict[str, float] | None = None,
        label: str = "judge server",
        auth_hint: str = "",
        health: ServerHealth | None = None,
    ) -> None:
        aiohttp = import_aiohttp()
        self._aiohttp = aiohttp
        # What the network raises, most specific first (a TimeoutError is caught before these).
        self._fatal_errors: tuple[type[BaseException], ...] = (aiohttp.InvalidURL, aiohttp.ClientSSLError)
        self._connect_errors: tuple[type[BaseException], ...] = (ConnectionRefusedError, aiohttp.ClientConnectorError)
        self._network_errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)
        self._get_errors = (TimeoutError, *self._network_errors)
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.headers = dict(headers or {})
        self.label = label
        self.auth_hint = auth_hint
        self._transport = transport
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self.stats: dict[str, float] = stats if stats is not None else {}
        for key in ("http_requests", "retries", "retries_denied", "breaker_rejections", "breaker_waits", "hedges", "hedge_wins"):
            self.stats.setdefault(key, 0)
        if health is None:
            health = ServerHealth(self.base_url, policy) if transport is not None else server_health(self.base_url, policy)
        self.health = health
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    # --- calls ----------------------------------------------------------------------------------
    async def post_json(self, path: str, payload: Mapping[str, Any], *, validate: Validate | None = None) -> dict[str, Any]:
        """POST JSON and return the JSON object answered, retrying under the policy.

        ``validate(body)`` returns None for a well-formed answer, else the reason it is not (such an
        answer is retried like a 5xx). Raises the mapped :mod:`grm_reward.errors` error.
        """
        url = self.base_url + path
        try:  # encoded once for every attempt; text that is not valid Unicode is the caller's error
            if _text_chars(payload) > _ENCODE_INLINE_CHARS:
                # ~3 ms per 500K characters, and the calls of a batch start in one turn of the loop:
                # sixty such encodings inline froze the loop (the server's /health) for ~0.2 s
                content = await run_cpu(_encode_json, payload)
            else:
                content = _encode_json(payload)
        except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as exc:
            raise InputError(f"the request to {self.label} {url} cannot be sent as JSON: {exc}") from exc
        attempt = 0
        last: HTTPFailure | None = None
        while True:
            wait = self.health.admit()
            left = remaining()
            if wait is not None and left is not None and wait < left:
                # The caller's deadline outlasts the cool-down: hold the call for the next probe
                # rather than fail it (a client with few retries, like OpenRLHF's, would lose it).
                self.stats["breaker_waits"] += 1
                await self._sleep(wait)
                continue
            if wait is not None:
                self.stats["breaker_rejections"] += 1
                raise JudgeUnavailableError(
                    f"{self.label} {self.base_url} keeps failing, calls fail fast until it recovers: "
                    f"{self.health.describe() or 'circuit open'}",
                    retry_after=wait,
                ) from last
            attempt += 1
            if attempt == 1:
                self.health.record_call()
            try:
                body = await self._attempt(url, content, validate)
            except HTTPFailure as failure:
                failure.attempts = attempt
                last = failure
            else:
                self.health.record_success(self.policy)
                return body
            if last.retryable:
                self.health.record_failure(str(last), last.retry_after, self.policy)
            else:
                self.health.record_success(self.policy)  # the server answered: it is up
                raise self.map_failure(last) from last
            if self.health.open and remaining() is not None:
                continue  # the breaker, not the retry budget, paces what follows: wait for a probe
            if attempt > self.policy.max_retries:
                raise self.map_failure(last) from last
            if not self.health.try_retry(self.policy):
                self.stats["retries_denied"] += 1
                raise self.map_failure(last, note="the retry budget of this server is spent") from last
            delay = self.backoff(attempt, last.retry_after)
            left = remaining()
            if left is not None and delay >= left:
                raise DeadlineExceededError(
                    f"the deadline leaves {left:.2f} s, too little to retry {self.label} after {last}"
                ) from last
            self.stats["retries"] += 1
            await self._sleep(delay)

    async def get(self, url: str, *, timeout_s: float) -> HTTPResponse:
        """One bounded GET of ``url`` (no retries, not counted by the breaker): readiness and discovery.
        :class:`GenerationError` when no answer comes; any status is returned."""
        session = self._loop_state().session
        try:
            return await asyncio.wait_for(session.send("GET", url, None, timeout_s + 1.0, timeout_s), timeout_s)
        except self._get_errors as exc:
            raise GenerationError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc

    async def get_json(self, path: str, *, timeout_s: float) -> dict[str, Any]:
        """One bounded GET of a JSON object (see :meth:`get`); a failure status is a GenerationError."""
        url = self.base_url + path
        response = await self.get(url, timeout_s=timeout_s)
        if not response.is_success:
            raise GenerationError(f"GET {url} answered HTTP {response.status}")
        try:
            return _json_object(response, url)
        except HTTPFailure as exc:
            raise GenerationError(str(exc)) from exc

    async def _attempt(self, url: str, content: bytes, validate: Validate | None) -> dict[str, Any]:
        """One call (hedged, see :meth:`_race`), its total time bounded by the timeout in force
        (:meth:`call_timeout`); raises :class:`HTTPFailure`."""
        left = remaining()
        if left is not None and left <= 0:
            raise DeadlineExceededError(f"the deadline passed before calling {self.label} {url}")
        limit, cut_by_deadline = self.call_timeout(left)
        state = self._loop_state()
        # The client's own timer runs a little longer than the bound below, so only ours fires and
        # the cut is one cancellation (which closes the connection), never a half-cut pooled one.
        timeout = (limit + 1.0, min(self.policy.connect_timeout_s, limit))
        try:
            # The whole call (queueing for a slot and any hedge included) is bounded; cancelling it
            # closes its connections.
            response = await asyncio.wait_for(self._race(state, url, content, timeout), limit)
        except TimeoutError as exc:
            if cut_by_deadline:
                raise DeadlineExceededError(
                    f"{self.label} {url} did not answer within the caller's deadline ({limit:.2f} s)"
                ) from exc
            raise HTTPFailure(url, f"no answer within {limit:.1f} s ({type(exc).__name__})", kind="timeout") from exc
        except self._fatal_errors as exc:  # bad URL, TLS verification: retrying cannot help
            raise HTTPFailure(url, f"{type(exc).__name__}: {exc}", retryable=False) from exc
        except self._connect_errors as exc:  # refused, DNS, unreachable
            raise HTTPFailure(url, f"{type(exc).__name__}: {exc}", kind="connect") from exc
        except self._network_errors as exc:  # resets, cut-off bodies, garbage that is not HTTP
            raise HTTPFailure(url, f"{type(exc).__name__}: {exc}", kind="network") from exc
        status = response.status
        if not response.is_success:
            retryable = status in (408, 429) or (status >= 500 and status not in (501, 505))
            raise HTTPFailure(
                url,
                _server_message(response),
                status=status,
                retryable=retryable,
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        body = _json_object(response, url)  # a cut-off or HTML 200 is retried like a 5xx
        reason = validate(body) if validate is not None else None
        if reason is not None:
            raise HTTPFailure(url, f"malformed answer: {reason}", kind="malformed")
        return body

    def call_timeout(self, left: float | None) -> tuple[float, bool]:
        """(seconds, whether the deadline set it): the least of ``timeout_s``, the latency-derived
        timeout (:meth:`ServerHealth.latency_timeout`) and the time ``left`` before the deadline."""
        limit = self.policy.timeout_s
        learned = self.health.latency_timeout(self.policy)
        if learned is not None:
            limit = min(limit, learned)
        if left is not None and left < limit:
            return left, True
        return limit, False

    async def _race(self, state: _LoopState, url: str, content: bytes, timeout: tuple[float, float]) -> HTTPResponse:
        """Send the call; if it straggles (see :class:`ServerHealth`), send one duplicate (the same
        bytes: the same seed, so the same sample). The duplicate takes no slot (the hedge budget bounds
        it), so it never queues behind calls that a stuck one holds up. The first successful response
        wins and the other call is cancelled, which closes its connection; if both fail, the first
        failure is the outcome."""

        health = self.health
        sent: list[float] = []  # when each call went out (the first one: once it got its slot)

        async def post() -> HTTPResponse:
            self.stats["http_requests"] += 1
            started = time.monotonic()
            sent.append(started)
            response = await state.session.send("POST", url, content, *timeout)
            if response.is_success:
                health.record_latency(time.monotonic() - started, started)
            return response

        async def send() -> HTTPResponse:
            async with state.slots:
                health.call_sent(token, time.monotonic())
                return await post()

        tasks: list[asyncio.Future[HTTPResponse]] = []
        token = health.call_waiting()
        try:
            tasks.append(asyncio.ensure_future(send()))
            delay = health.hedge_delay(self.policy)
            if delay is not None:
                # Counted from when the call went out (not while it queued for a slot). Past the delay,
                # hedge once a call sent half a delay later was answered first (this one is stuck: a
                # busy client or judge delays every call alike), or at twice the delay regardless; past
                # the (shorter) tail delay, once every call still out was overtaken (the batch waits
                # on stragglers only: the judge has nothing else of ours to do).
                tail = health.tail_delay(self.policy)
                tail = float("inf") if tail is None else tail
                first = min(tail, delay)
                await asyncio.wait(tasks, timeout=first)
                while not tasks[0].done():
                    elapsed = time.monotonic() - sent[0] if sent else 0.0
                    if (
                        elapsed >= 2 * delay
                        or (elapsed >= delay and health.overtaken(sent[0] + delay / 2))
                        or (elapsed >= tail and health.drained())
                    ):
                        if health.try_hedge(self.policy):
                            self.stats["hedges"] += 1
                            tasks.append(asyncio.ensure_future(post()))
                        break
                    if elapsed < first:
                        wait = first - elapsed
                    else:  # poll: the batch drains, or a younger call is answered, at any moment
                        wait = min([max(first / 8, 0.001)] + [t - elapsed for t in (delay, 2 * delay) if t > elapsed])
                    await asyncio.wait(tasks, timeout=wait)
            outcome: asyncio.Future[HTTPResponse] | None = None
            pending: set[asyncio.Future[HTTPResponse]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.index):
                    if task.exception() is None and task.result().is_success:
                        if task is not tasks[0]:
                            self.stats["hedge_wins"] += 1
                        return task.result()
                    outcome = outcome or task
            assert outcome is not None
            return outcome.result()  # every call failed: the first failure (raised or answered)
        finally:
            health.call_over(token)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # the loser's connection is closed now

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Delay before retry ``attempt`` (1-based): Retry-After (capped at timeout_s), else
        exponential with jitter, drawn from [d/2, d]."""
        if retry_after is not None:
            return min(retry_after, self.policy.timeout_s)
        delay = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2.0 ** (attempt - 1))
        return float(delay / 2 + self._rng.uniform(0, delay / 2))

    def map_failure(self, failure: HTTPFailure, *, note: str = "") -> GRMError:
        """The one place HTTP failures become grm-reward errors (most specific first)."""
        tries = f" after {failure.attempts} attempts" if failure.attempts > 1 else ""
        tries += f" ({note})" if note else ""
        status, message, url = failure.status, failure.message, failure.url
        if status in (401, 403):
            return BackendUnavailableError(f"{url} refused the credentials (HTTP {status}: {message}){self.auth_hint}")
        if status == 404:
            return BackendUnavailableError(
                f"{url} answered 404 ({message}): check the URL (an OpenAI base_url ends in /v1), the model name, "
                "and that the server offers this endpoint"
            )
        if status in (400, 413, 422) and _CONTEXT_MESSAGE.search(message):
            return PromptTooLongError(f"the {self.label} rejected the prompt as too long: {message}")
        if status is not None:
            return GenerationError(f"{url} answered HTTP {status}{tries}: {message}")
        if failure.kind == "timeout":
            return GenerationError(
                f"{url} timed out{tries} ({message}); if generations are long, raise timeout_s or "
                "latency_timeout_floor_s"
            )
        if failure.kind == "connect":
            return GenerationError(f"cannot connect to {url}{tries} ({message}); is the server running?")
        return GenerationError(f"{url} failed{tries}: {message}")

    # --- clients --------------------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old in [old for old in self._states if old.is_closed()]:
                del self._states[old]  # its state refers to its loop: it would never be dropped
            size = self.policy.max_concurrency
            # Hedges take no slot: the pool has room for one per call (the hedge budget bounds them).
            pool = 2 * size if self.policy.hedge else size
            session: _Session = (
                _HandlerSession(self._transport, self.headers)
                if self._transport is not None
                else _AiohttpSession(self._aiohttp, self.headers, pool)
            )
            closer = _close_at_loop_end(session)
            with contextlib.suppress(StopIteration):  # run it to its yield: now the loop's end closes the session
                closer.asend(None).send(None)
            state = _LoopState(session, asyncio.Semaphore(size), closer)
            self._states[loop] = state
        return state

    async def aclose(self) -> None:
        """Close the session of the running loop (the others close when their loops end)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self._states.pop(loop, None)
        if state is not None:
            await state.closer.aclose()


def _json_object(response: HTTPResponse, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, RecursionError) as exc:  # cut-off JSON, an HTML page, bad UTF-8, absurd nesting
        raise HTTPFailure(url, f"the answer is not JSON: {response.text[:200]!r}", kind="malformed") from exc
    if not isinstance(data, dict):
        raise HTTPFailure(url, f"the answer is not a JSON object: {str(data)[:200]}", kind="malformed")
    return data


def _server_message(response: HTTPResponse) -> str:
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


def _ssl_context() -> ssl.SSLContext:
    """The verifying TLS context: ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set, else certifi's roots
    where installed, else the system's (one per setting: building one reads the CA files)."""
    key = (os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)
    with _SSL_LOCK:
        context = _SSL_CONTEXTS.get(key)
        if context is None:
            cafile, capath = key
            if cafile is None and capath is None:
                try:
                    import certifi

                    cafile = certifi.where()
                except ImportError:
                    pass
            context = _SSL_CONTEXTS[key] = ssl.create_default_context(cafile=cafile, capath=capath)
        return context


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    >>> _retry_after("2.5"), _retry_after(None), _retry_after("soon")
    (2.5, None, None)
    """
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
