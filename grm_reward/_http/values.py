"""The HTTP layer's value types: a request and a response as a :data:`Transport` handler sees them,
and the :class:`HTTPPolicy` that times, retries and cuts off the calls to one server.

Plain frozen data, no I/O: every other module of :mod:`grm_reward._http` builds on these.
Policy and its defaults: docs/backends.md.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


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
    hedge_tail_factor: float = 1.25
    hedge_budget: float = 0.05
    latency_min_samples: int = 20
    latency_timeout_factor: float = 10.0
    latency_timeout_floor_s: float = 30.0

    @classmethod
    def from_options(cls, options: object, **changes: Any) -> HTTPPolicy:
        """The policy from a settings object with fields of the same names (``OpenAIOptions``)."""
        values = {f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)}
        return replace(cls(**values), **changes)
