"""Routes of the reward server, and the one mapping from exceptions to HTTP answers.

=================  ======================================================================
``POST /get_reward``   OpenRLHF's protocol (``docs/openrlhf.md``)
``POST /v1/rewards``   native API: rewards and judgements
``GET /health``        liveness (always cheap) and the last readiness probe
``GET /ready``         readiness: 200 when the judge answers its probe, else 503 with the reason
``GET /metrics``       Prometheus text
=================  ======================================================================

Each request runs under its own deadline (``request_timeout_s``, :mod:`grm_reward.deadlines`) and
is cancelled, judge work included, when the deadline passes or its client disconnects. Bodies are
read with a size limit, then parsed and validated in a worker thread; whatever goes wrong becomes
a JSON error through :func:`error_response` (``docs/server.md`` lists the statuses).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from grm_reward import deadlines
from grm_reward._sync import prestart_worker_threads, run_cpu
from grm_reward.batching import MicroBatcher
from grm_reward.config import GRMConfig
from grm_reward.errors import (
    AllSamplesInvalidError,
    BackendError,
    BackendUnavailableError,
    DeadlineExceededError,
    GRMError,
    InputError,
    JudgeUnavailableError,
)
from grm_reward.jsonl import duplicate_key, unique_keys
from grm_reward.server.protocol import (
    ErrorDetail,
    ErrorResponse,
    find_lone_surrogate,
)
from grm_reward.server.serving import RewardService, public_error_message

__all__ = ["build_app", "create_app", "error_response", "redact_token_filter"]

logger = logging.getLogger("grm_reward.server")

#: Status logged (never sent) for a request whose client went away before the answer (nginx's 499).
CLIENT_GONE = 499
# A JSON escape of a UTF-16 surrogate: only bodies containing one can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


class ClientError(Exception):
    """A request the server rejects before scoring it (status and message given)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        super().__init__(message)


def error_response(exc: BaseException) -> JSONResponse:
    """The HTTP answer for an exception (the only place exceptions become statuses)."""
    headers: dict[str, str] = {}
    if isinstance(exc, ClientError):
        status, message, headers = exc.status, str(exc), exc.headers
    elif isinstance(exc, StarletteHTTPException):
        status, message, headers = exc.status_code, str(exc.detail), dict(exc.headers or {})
    elif isinstance(exc, ValidationError):
        status, message = 422, _validation_message(exc)
    elif isinstance(exc, InputError):  # PromptTooLongError and the size limits included
        status, message = 422, str(exc)
    elif isinstance(exc, ClientDisconnect):
        status, message = CLIENT_GONE, "the client disconnected before the answer"
    elif isinstance(exc, (DeadlineExceededError, asyncio.TimeoutError, TimeoutError)):
        status = 504
        message = f"deadline exceeded (the server's request_timeout_s, queueing included): {public_error_message(exc)}"
    elif isinstance(exc, JudgeUnavailableError):
        status, message = 503, public_error_message(exc)
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after or 1)))}
    elif isinstance(exc, BackendUnavailableError):
        status, message = 503, public_error_message(exc)
    elif isinstance(exc, BackendError):
        status, message = 502, public_error_message(exc)
    elif isinstance(exc, AllSamplesInvalidError):
        status, message = 502, str(exc)
    elif isinstance(exc, GRMError):
        status, message = 500, str(exc)
    else:
        status, message = 500, "internal server error (see the server log)"
    if status >= 500 and status != CLIENT_GONE:
        internal = status == 500 and not isinstance(exc, GRMError)
        logger.error("answering %d: %s: %s", status, type(exc).__name__, exc, exc_info=exc if internal else None)
    body = ErrorResponse(error=ErrorDetail(type=type(exc).__name__, message=message), status=status)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def create_app(service: RewardService, *, lifespan: Any = None) -> FastAPI:
    """The FastAPI app around a ready :class:`RewardService` (settings from ``service.config.server``)."""
    options = service.config.server
    app = FastAPI(
        title="grm-reward", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.service = service
    access = logging.getLogger("uvicorn.access")
    if redact_token_filter not in access.filters:
        access.addFilter(redact_token_filter)

    async def answer(request: Request, route: str, handler: Callable[[Any], Awaitable[BaseModel]], parse: Any) -> Response:
        started = time.perf_counter()
        body_read = asyncio.Event()

        async def handle() -> BaseModel:
            _authorize(request, options.api_key)
            raw = await _read_body(request, options.max_body_bytes, options.body_timeout_s)
            body_read.set()
            parsed = await run_cpu(_decode, raw, parse)  # JSON + validation: CPU, off the loop
            return await handler(parsed)

        try:
            with deadlines.deadline_scope(options.request_timeout_s):
                result = await _until_done_or_gone(request, handle(), body_read, options.request_timeout_s)
            response: Response = JSONResponse(result.model_dump())
        except asyncio.CancelledError:
            # uvicorn cancels requests still running when the shutdown grace period ends: answer JSON
            response = error_response(
                StarletteHTTPException(503, "the server is shutting down; retry the request", {"Retry-After": "1"})
            )
        except Exception as exc:
            if service.closing and isinstance(exc, GRMError) and not isinstance(exc, InputError):
                exc = StarletteHTTPException(503, "the server is shutting down; retry the request", {"Retry-After": "1"})
            response = error_response(exc)
        service.metrics.observe(route, response.status_code, time.perf_counter() - started)
        return response

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Response:
        return await answer(request, "/get_reward", service.get_reward, service.openrlhf_body)

    @app.post("/v1/rewards")
    async def rewards(request: Request) -> Response:
        return await answer(request, "/v1/rewards", service.rewards, service.native_body)

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse(service.health())

    @app.get("/ready")
    async def ready() -> Response:
        reason = await service.readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        try:
            _authorize(request, options.api_key)
        except ClientError as exc:
            return error_response(exc)
        return PlainTextResponse(service.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        try:
            _authorize(request, options.api_key)
        except ClientError as exc:
            return error_response(exc)
        return JSONResponse(app.openapi())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc)

    return app


def build_app(config: GRMConfig, *, backend: Any = None) -> FastAPI:
    """The app for a config: builds the judge at start-up (``/health`` answers once it is loaded)."""
    from grm_reward.model import GenerativeRewardModel

    rm = GenerativeRewardModel(config, backend=backend)
    service = RewardService(MicroBatcher.from_options(rm, config.batching_for("server")), config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await prestart_worker_threads()  # decoding and planning run in them: none may start mid-request
        await rm.awarmup()  # load the model, open the judge's HTTP clients on this loop: before the first request
        reason = await service.readiness()
        logger.info("grm-reward judge loaded: %s", "ready" if reason is None else f"not ready yet: {reason}")
        try:
            yield
        except asyncio.CancelledError:
            # a second Ctrl-C: uvicorn skips the lifespan shutdown and the event loop cancels it instead, which
            # Starlette reported as a failed shutdown with a traceback. A forced stop is no failure: close, quietly.
            logger.warning("forced shutdown (a second signal): requests still in flight are answered 503")
        finally:
            await service.aclose()

    return create_app(service, lifespan=lifespan)


def redact_token_filter(record: logging.LogRecord) -> bool:
    """A logging filter: ``?token=SECRET`` in a log line's arguments becomes ``?token=***``.

    Installed on uvicorn's access log by :func:`create_app`, so OpenRLHF's URL token never lands there.
    """
    if isinstance(record.args, tuple):
        record.args = tuple(_TOKEN_IN_URL.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
    if isinstance(record.msg, str) and "token=" in record.msg:
        record.msg = _TOKEN_IN_URL.sub(r"\1***", record.msg)
    return True


async def _until_done_or_gone(
    request: Request, work: Awaitable[BaseModel], body_read: asyncio.Event, timeout: float
) -> BaseModel:
    """Await ``work``; cancel it when the deadline passes or, once the body is read, the client leaves."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request, body_read))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=deadlines.remaining(), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (task, watcher):
            if not waiting.done():
                waiting.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task in done:
        return task.result()
    if watcher in done and not watcher.cancelled() and watcher.exception() is None:
        raise ClientDisconnect()
    raise DeadlineExceededError(f"the request was not answered within request_timeout_s={timeout:g}")


async def _disconnected(request: Request, body_read: asyncio.Event) -> None:
    """Return when the client disconnects (after the body: the ASGI receive channel says so)."""
    await body_read.wait()
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _decode(raw: bytes, parse: Callable[[Any], BaseModel]) -> BaseModel:
    data = _parse_json(raw)
    if _SURROGATE_ESCAPE.search(raw):  # only then can a string hold a lone surrogate
        where = find_lone_surrogate(data)
        if where is not None:
            raise ClientError(422, f"invalid request: {where}: text is not valid Unicode (lone surrogate)")
    return parse(data)


def _authorize(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.query_params.get("token", "")
    if not token or not hmac.compare_digest(token.encode(), api_key.encode()):
        raise ClientError(
            401, "missing or wrong token: send 'Authorization: Bearer KEY' or '?token=KEY'",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ClientError(400, "Content-Length is not a number") from None
        if size > limit:
            raise ClientError(413, f"body of {size} bytes exceeds the server's max_body_bytes={limit}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # a gzip body read as JSON was a 400 "not UTF-8" that named neither the cause nor the fix
        raise ClientError(415, f"Content-Encoding {encoding!r} is not supported: send the JSON body uncompressed")
    try:
        return await asyncio.wait_for(_read_chunks(request, limit), timeout)
    except asyncio.TimeoutError:  # slowloris, or a body cut off with the connection left open
        raise ClientError(
            408, f"the request body did not arrive within the server's body_timeout_s={timeout:g}",
            headers={"Connection": "close"},
        ) from None


async def _read_chunks(request: Request, limit: int) -> bytes:
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ClientError(413, f"body exceeds the server's max_body_bytes={limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ClientError(400, "empty body: send a JSON object")
    try:
        text = raw.decode("utf-8")  # JSON over HTTP is UTF-8 (RFC 8259); no guessing from BOMs
    except UnicodeDecodeError as exc:
        raise ClientError(400, f"body is not UTF-8: {exc}") from None
    try:
        value, end = _json_value(text, _json_space(text, 0), 0, [_MAX_WALKED_CONTAINERS])
        if _json_space(text, end) != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return value
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ClientError(400, f"body is nested too deeply (more than {_MAX_JSON_DEPTH} levels)") from None
    except _TooManyContainers:
        raise ClientError(
            413,
            f"body has more than {_MAX_WALKED_CONTAINERS} JSON arrays and objects that hold values nested over "
            f"{_SMALL_DEPTH} levels deep: send a flatter or smaller body",
        ) from None
    except InputError as exc:  # a key twice in one object: json keeps the last, other parsers the first
        raise ClientError(400, f"body is ambiguous: {exc} (send each key once)") from None
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits
        raise ClientError(400, f"body is not valid JSON: {exc}") from None


# json.loads builds a body's values in one C call that holds the GIL: 16 MiB of small values froze the
# event loop (and /health) for over a second even from a worker thread. This parser walks containers in
# Python and hands the C scanner runs of at most 1,024 small values (or "key": value pairs) within 16K
# characters at a time, so the GIL is released between runs; a longer scalar gets a C call of its own
# (a run of 60 strings of 262K characters was one 16 MB regular-expression match and one 16 MB
# json.loads, each holding the GIL throughout). A small value is a scalar or a container of small values
# nested at most three deep (a request item with its chat messages): walked in Python one by one, the
# 200,000 items of a 7 MB body cost 3.6 s of CPU.
_MAX_JSON_DEPTH = 100
_RUN_CHARS = 16_384
#: Containers a body may have walked in Python (8-30 µs each): 16 MiB of [[[[0]]]] took 13 s of CPU. A
#: full batch of chat requests (max_queries 4096) with content parts needs one per request: 8 x that.
_MAX_WALKED_CONTAINERS = 32_768
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
# Possessive (*+, ?+, {}+): a run cut short by the window fails in one pass instead of backtracking through it.
_WS = r"[ \t\n\r]*+"
_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_SCALAR = r"(?:" + _STRING + r"|-?\d++(?:\.\d++)?+(?:[eE][+-]?\d++)?+|true|false|null)"


def _containers(value: str) -> str:
    """A JSON array of ``value`` or an object whose values are ``value`` (possessively)."""
    array = r"\[" + _WS + r"(?:" + value + r"(?:" + _WS + "," + _WS + value + r")*+)?+" + _WS + r"\]"
    pair = _STRING + _WS + ":" + _WS + value
    return array + "|" + r"\{" + _WS + r"(?:" + pair + r"(?:" + _WS + "," + _WS + pair + r")*+)?+" + _WS + r"\}"


# Three levels: a request item whose prompt is a list of chat messages is one small value.
_SMALL_DEPTH = 3
_SMALL = _SCALAR
for _ in range(_SMALL_DEPTH):
    _SMALL = r"(?:" + _SCALAR + "|" + _containers(_SMALL) + ")"
_SCALAR_RUN = re.compile(r"(?:" + _SMALL + _WS + "," + _WS + r"){1,1024}+")
_PAIR_RUN = re.compile(r"(?:" + _STRING + _WS + ":" + _WS + _SMALL + _WS + "," + _WS + r"){1,1024}+")


_scan_scalar: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_scan_string: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _json_space(text: str, index: int) -> int:
    return _JSON_SPACE.match(text, index).end()  # type: ignore[union-attr]


class _TooManyContainers(Exception):
    pass


def _json_value(text: str, index: int, depth: int, budget: list[int]) -> tuple[Any, int]:
    """The JSON value at ``index`` and the index after it (containers in Python, small values in C);
    ``budget[0]``: containers this body may still have walked in Python."""
    opener = text[index : index + 1]
    if opener not in ("[", "{"):
        try:
            return _scan_scalar(text, index)
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
    if depth >= _MAX_JSON_DEPTH:
        raise RecursionError
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooManyContainers
    closer = "]" if opener == "[" else "}"
    items: list[Any] = []
    pairs: dict[str, Any] = {}
    index = _json_space(text, index + 1)
    if text[index : index + 1] == closer:
        return (items if opener == "[" else pairs), index + 1
    run_pattern = _PAIR_RUN if opener == "{" else _SCALAR_RUN
    while True:
        # (a small value nests 3 levels: near the depth limit, walk, so that the limit stays exact)
        run = run_pattern.match(text, index, index + _RUN_CHARS) if depth + _SMALL_DEPTH < _MAX_JSON_DEPTH else None
        if run is not None:  # many small members: parse them in C, a bounded run at a time
            chunk = opener + text[index : run.end()].rstrip(" \t\n\r").removesuffix(",") + closer
            try:
                parsed = json.loads(chunk, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as exc:
                raise json.JSONDecodeError(exc.msg, text, index + exc.pos - 1) from None
            if opener == "{":
                if not pairs.keys().isdisjoint(parsed):
                    raise duplicate_key(next(key for key in parsed if key in pairs))
                pairs.update(parsed)
            else:
                items.extend(parsed)
            index = _json_space(text, run.end())  # the window may end between the comma and the next member
        if opener == "{":
            if text[index : index + 1] != '"':
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
            key, index = _scan_string(text, index + 1)
            index = _json_space(text, index)
            if text[index : index + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
            value, index = _json_value(text, _json_space(text, index + 1), depth + 1, budget)
            if key in pairs:
                raise duplicate_key(key)
            pairs[key] = value
        else:
            value, index = _json_value(text, index, depth + 1, budget)
            items.append(value)
        index = _json_space(text, index)
        separator = text[index : index + 1]
        if separator == closer:
            return (items if opener == "[" else pairs), index + 1
        if separator != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _json_space(text, index + 1)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
