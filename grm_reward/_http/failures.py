"""How an answer becomes a failure, and a failure a grm-reward error.

:class:`HTTPFailure` is one failed call before mapping (kept as the mapped error's ``__cause__``);
the helpers read a response's JSON object, error message and ``Retry-After``; :func:`map_failure`
is the one place HTTP failures become :mod:`grm_reward.errors` (docs/backends.md).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import Any

from grm_reward._http.values import HTTPResponse
from grm_reward.errors import BackendUnavailableError, GenerationError, GRMError, PromptTooLongError

_CONTEXT_MESSAGE = re.compile(
    r"context length|context window|maximum (?:model|context|sequence) length|too long|too many tokens", re.IGNORECASE
)


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


def map_failure(failure: HTTPFailure, *, label: str, auth_hint: str = "", note: str = "") -> GRMError:
    """The one place HTTP failures become grm-reward errors (most specific first); ``label`` names the
    server in messages, ``auth_hint`` finishes the message of a 401/403."""
    tries = f" after {failure.attempts} attempts" if failure.attempts > 1 else ""
    tries += f" ({note})" if note else ""
    status, message, url = failure.status, failure.message, failure.url
    if status in (401, 403):
        return BackendUnavailableError(f"{url} refused the credentials (HTTP {status}: {message}){auth_hint}")
    if status == 404:
        return BackendUnavailableError(
            f"{url} answered 404 ({message}): check the URL (an OpenAI base_url ends in /v1), the model name, "
            "and that the server offers this endpoint"
        )
    if status in (400, 413, 422) and _CONTEXT_MESSAGE.search(message):
        return PromptTooLongError(f"the {label} rejected the prompt as too long: {message}")
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


def json_object(response: HTTPResponse, url: str) -> dict[str, Any]:
    """The body as a JSON object; :class:`HTTPFailure` (``malformed``) when it is not one."""
    try:
        data = response.json()
    except (ValueError, RecursionError) as exc:  # cut-off JSON, an HTML page, bad UTF-8, absurd nesting
        raise HTTPFailure(url, f"the answer is not JSON: {response.text[:200]!r}", kind="malformed") from exc
    if not isinstance(data, dict):
        raise HTTPFailure(url, f"the answer is not a JSON object: {str(data)[:200]}", kind="malformed")
    return data


def server_message(response: HTTPResponse) -> str:
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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    >>> parse_retry_after("2.5"), parse_retry_after(None), parse_retry_after("soon")
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
