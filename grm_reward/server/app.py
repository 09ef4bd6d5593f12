"""Routes of the reward server, and the one mapping from exceptions to HTTP answers.

=================  ======================================================================
``POST /get_reward``   OpenRLHF's protocol (``docs/openrlhf.md``)
``POST /v1/rewards``   native API: rewards and judgements
``GET /health``        200 once the judge is loaded
``GET /metrics``       Prometheus text
=================  ======================================================================

Bodies are read here with a size limit, parsed, validated against :mod:`.protocol` and handed
to :class:`~.serving.RewardService`; whatever goes wrong becomes a JSON error through
:func:`error_response` (4xx for the client's mistakes, 5xx for the judge's), never a hang:
every request has a deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from grm_reward.batching import MicroBatcher
from grm_reward.config import GRMConfig
from grm_reward.errors import (
    AllSamplesInvalidError,
    BackendError,
    BackendUnavailableError,
    GRMError,
    InputError,
)
from grm_reward.server.protocol import ErrorDetail, ErrorResponse, GetRewardRequest, RewardsRequest
from grm_reward.server.serving import RewardService

__all__ = ["build_app", "create_app", "error_response"]

logger = logging.getLogger("grm_reward.server")


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
        status, message = exc.status_code, str(exc.detail)
    elif isinstance(exc, ValidationError):
        status, message = 422, _validation_message(exc)
    elif isinstance(exc, InputError):  # PromptTooLongError included
        status, message = 422, str(exc)
    elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        status, message = 504, "the judge did not answer within the server's request_timeout_s"
    elif isinstance(exc, BackendUnavailableError):
        status, message = 503, str(exc)
    elif isinstance(exc, (BackendError, AllSamplesInvalidError)):
        status, message = 502, str(exc)
    elif isinstance(exc, GRMError):
        status, message = 500, str(exc)
    else:
        status, message = 500, "internal server error (see the server log)"
    if status >= 500:
        logger.error("answering %d: %s", status, message, exc_info=status == 500 and not isinstance(exc, GRMError))
    body = ErrorResponse(error=ErrorDetail(type=type(exc).__name__, message=message), status=status)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def create_app(service: RewardService, *, lifespan: Any = None) -> FastAPI:
    """The FastAPI app around a ready :class:`RewardService` (settings from ``service.config.server``)."""
    options = service.config.server
    app = FastAPI(title="grm-reward", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    async def answer(request: Request, route: str, handler: Callable[[Any], Awaitable[BaseModel]], parse: Any) -> Response:
        started = time.perf_counter()

        async def handle() -> BaseModel:
            _authorize(request, options.api_key)
            data = _parse_json(await _read_body(request, options.max_body_bytes))
            return await handler(parse(data))

        try:
            result = await asyncio.wait_for(handle(), timeout=options.request_timeout_s)
            response: Response = JSONResponse(result.model_dump())
        except Exception as exc:
            response = error_response(exc)
        service.metrics.observe(route, response.status_code, time.perf_counter() - started)
        return response

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Response:
        return await answer(request, "/get_reward", service.get_reward, GetRewardRequest.model_validate)

    @app.post("/v1/rewards")
    async def rewards(request: Request) -> Response:
        def parse(data: Any) -> RewardsRequest:
            return RewardsRequest.model_validate({"requests": data} if isinstance(data, list) else data)

        return await answer(request, "/v1/rewards", service.rewards, parse)

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse(service.health())

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        try:
            _authorize(request, options.api_key)
        except ClientError as exc:
            return error_response(exc)
        return PlainTextResponse(service.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc)

    return app


def build_app(config: GRMConfig, *, backend: Any = None) -> FastAPI:
    """The app for a config: builds the judge at start-up (``/health`` answers once it is loaded)."""
    from grm_reward.model import GenerativeRewardModel

    rm = GenerativeRewardModel(config, backend=backend)
    service = RewardService(MicroBatcher.from_options(rm, config.server), config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(lambda: rm.backend)  # load the model / reach the judge server now
        logger.info("grm-reward judge ready: %s", service.health())
        try:
            yield
        finally:
            await service.aclose()

    return create_app(service, lifespan=lifespan)


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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ClientError(400, "Content-Length is not a number") from None
        if size > limit:
            raise ClientError(413, f"body of {size} bytes exceeds the server's max_body_bytes={limit}")
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
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ClientError(400, "body is nested too deeply") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
