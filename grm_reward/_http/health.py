"""What every client of one server shares: :class:`ServerHealth` (latency window, circuit breaker,
retry and hedge budgets, the bookkeeping of calls out for tail hedging), and the per-URL registry
(:func:`server_health`, :func:`forget_server`) that shares it across clients and event loops.

Thread-safe, no I/O. Policy and figures: docs/backends.md.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

from grm_reward._http.values import HTTPPolicy

#: Seconds of history the retry and hedge budgets look at.
BUDGET_WINDOW_S = 10.0
#: Latencies of the most recent successful calls kept per server (for hedging and timeouts).
LATENCY_WINDOW = 512
#: Hedges allowed per window whatever the traffic (so a quiet client can still hedge once).
HEDGE_BUDGET_FLOOR = 1
#: Floor of the tail hedge's delay. Not ``hedge_min_delay_s``, which keeps a busy client's own lag from
#: hedging mid-batch calls: once the batch has drained, that lag has passed and the judge has nothing
#: else of ours to do, so only the median factor guards against jitter.
TAIL_MIN_DELAY_S = 0.01
#: Each tail hedge its original beat doubles the tail delay, up to 2**TAIL_BACKOFF_MAX x (a winning one resets
#: it): a judge whose slowest calls are long generations, which a duplicate with the same seed repeats at the
#: same length, stops being sent duplicates that cannot win; a stuck call still gets one (the hedge rules).
TAIL_BACKOFF_MAX = 4


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
        self._tail_backoff = 0  # tail hedges lost in a row (capped at TAIL_BACKOFF_MAX)
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
        :meth:`drained`: max(``TAIL_MIN_DELAY_S``, ``hedge_tail_factor`` x median latency), doubled for each
        tail hedge lost in a row (:meth:`tail_hedge_outcome`); None: off or not known yet."""
        policy = policy or self.policy
        if not policy.hedge or policy.hedge_tail_factor <= 0:
            return None
        median = self.percentile(50.0, policy)
        if median is None:
            return None
        return max(TAIL_MIN_DELAY_S, median * policy.hedge_tail_factor) * (1 << self._tail_backoff)

    def tail_hedge_outcome(self, won: bool) -> None:
        """A tail hedge won (its answer came first) or lost (its original's did): see ``TAIL_BACKOFF_MAX``."""
        with self._lock:
            self._tail_backoff = 0 if won else min(self._tail_backoff + 1, TAIL_BACKOFF_MAX)

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
