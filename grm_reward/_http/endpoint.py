"""One server's calls: :class:`HTTPEndpoint` sends each call, hedges it when it straggles, retries
it with backoff and jitter (honouring ``Retry-After``) under the retry budget and circuit breaker
of :class:`~grm_reward._http.health.ServerHealth`, and cuts its timeout to the caller's deadline
(:mod:`grm_reward.deadlines`); a failure leaves as a :mod:`grm_reward.errors` error
(:func:`~grm_reward._http.failures.map_failure`). Policy: docs/backends.md.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from grm_reward._http.failures import HTTPFailure, json_object, map_failure, parse_retry_after, server_message
from grm_reward._http.health import ServerHealth, server_health
from grm_reward._http.sessions import LoopSessions, LoopState, encode_json, import_aiohttp
from grm_reward._http.values import HTTPPolicy, HTTPResponse
from grm_reward.deadlines import remaining
from grm_reward.errors import DeadlineExceededError, GenerationError, InputError, JudgeUnavailableError

Validate = Callable[[dict[str, Any]], "str | None"]


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
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self.stats: dict[str, float] = stats if stats is not None else {}
        for key in ("http_requests", "retries", "retries_denied", "breaker_rejections", "breaker_waits", "hedges", "hedge_wins"):
            self.stats.setdefault(key, 0)
        if health is None:
            health = ServerHealth(self.base_url, policy) if transport is not None else server_health(self.base_url, policy)
        self.health = health
        size = policy.max_concurrency
        # Hedges take no slot: the pool has room for one per call (the hedge budget bounds them).
        pool = 2 * size if policy.hedge else size
        self._sessions = LoopSessions(self.headers, slots=size, pool=pool, transport=transport, aiohttp=aiohttp)

    async def post_json(self, path: str, payload: Mapping[str, Any], *, validate: Validate | None = None) -> dict[str, Any]:
        """POST JSON and return the JSON object answered, retrying under the policy.

        ``validate(body)`` returns None for a well-formed answer, else the reason it is not (such an
        answer is retried like a 5xx). Raises the mapped :mod:`grm_reward.errors` error.
        """
        url = self.base_url + path
        try:  # encoded once for every attempt; text that is not valid Unicode is the caller's error
            content = await encode_json(payload)
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
                raise map_failure(last, label=self.label, auth_hint=self.auth_hint) from last
            if self.health.open and remaining() is not None:
                continue  # the breaker, not the retry budget, paces what follows: wait for a probe
            if attempt > self.policy.max_retries:
                raise map_failure(last, label=self.label, auth_hint=self.auth_hint) from last
            if not self.health.try_retry(self.policy):
                self.stats["retries_denied"] += 1
                raise map_failure(
                    last, label=self.label, auth_hint=self.auth_hint, note="the retry budget of this server is spent"
                ) from last
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
        session = self._sessions.get().session
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
            return json_object(response, url)
        except HTTPFailure as exc:
            raise GenerationError(str(exc)) from exc

    async def _attempt(self, url: str, content: bytes, validate: Validate | None) -> dict[str, Any]:
        """One call (hedged, see :meth:`_race`), its total time bounded by the timeout in force
        (:meth:`call_timeout`); raises :class:`HTTPFailure`."""
        left = remaining()
        if left is not None and left <= 0:
            raise DeadlineExceededError(f"the deadline passed before calling {self.label} {url}")
        limit, cut_by_deadline = self.call_timeout(left)
        state = self._sessions.get()
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
                server_message(response),
                status=status,
                retryable=retryable,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        body = json_object(response, url)  # a cut-off or HTML 200 is retried like a 5xx
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

    async def _race(self, state: LoopState, url: str, content: bytes, timeout: tuple[float, float]) -> HTTPResponse:
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
        tail_hedge = False  # whether the duplicate went out under the tail rule (its outcome is learned)
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
                    late = elapsed >= 2 * delay or (elapsed >= delay and health.overtaken(sent[0] + delay / 2))
                    if late or (elapsed >= tail and health.drained()):
                        if health.try_hedge(self.policy):
                            self.stats["hedges"] += 1
                            tail_hedge = not late
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
                        if tail_hedge:
                            health.tail_hedge_outcome(won=task is not tasks[0])
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

    async def aclose(self) -> None:
        """Close the session of the running loop (the others close when their loops end)."""
        await self._sessions.aclose()

