"""Sessions: how the bytes of a call reach a server and its answer comes back.

aiohttp (imported lazily, with the install hint), one session and one concurrency bound per event
loop, closed when that loop ends (:class:`LoopSessions`); a :data:`Transport` handler in place of
the network in tests; the verifying TLS context; large JSON bodies encoded off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from grm_reward._http.values import HTTPRequest, HTTPResponse, Transport
from grm_reward._sync import run_cpu
from grm_reward.errors import BackendUnavailableError

_INSTALL_HINT = "pip install 'grm-reward[openai]'"
_SSL_LOCK = threading.Lock()
_SSL_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_JSON = {"Content-Type": "application/json"}


def import_aiohttp() -> Any:
    """aiohttp, or :class:`BackendUnavailableError` with the install hint."""
    try:
        import aiohttp
    except ImportError as exc:
        raise BackendUnavailableError(f"HTTP clients need aiohttp: {_INSTALL_HINT}") from exc
    return aiohttp


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


async def encode_json(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as compact UTF-8 JSON; a large one is encoded in a worker thread, off the loop.
    Raises what ``json.dumps`` raises (``ValueError``, ``TypeError``, ``RecursionError``...)."""
    if _text_chars(payload) > _ENCODE_INLINE_CHARS:
        # ~3 ms per 500K characters, and the calls of a batch start in one turn of the loop:
        # sixty such encodings inline froze the loop (the server's /health) for ~0.2 s
        return await run_cpu(_encode_json, payload)
    return _encode_json(payload)


class Session(Protocol):
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


async def _close_at_loop_end(session: Session) -> AsyncGenerator[None, None]:
    """Suspended for the life of its loop: the loop's ``shutdown_asyncgens`` (``asyncio.run``,
    uvicorn, :class:`~grm_reward._sync.LoopThread`) or its garbage collection closes the session."""
    try:
        yield
    finally:
        await session.aclose()


@dataclass
class LoopState:
    """A session and a concurrency bound, per event loop (a session must not cross loops)."""

    session: Session
    slots: asyncio.Semaphore
    closer: AsyncGenerator[None, None]



class LoopSessions:
    """The :class:`LoopState` of each event loop that calls (a session must not cross loops): made on
    the loop's first call, closed when the loop ends or by :meth:`aclose`. The session is the
    ``transport`` handler's when one is given, else an aiohttp pool of ``pool`` connections."""

    def __init__(self, headers: Mapping[str, str], *, slots: int, pool: int, transport: Any = None, aiohttp: Any = None) -> None:
        self._headers = headers
        self._slots = slots
        self._pool = pool
        self._transport = transport
        self._aiohttp = aiohttp
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()

    def get(self) -> LoopState:
        """The state of the running loop."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old in [old for old in self._states if old.is_closed()]:
                del self._states[old]  # its state refers to its loop: it would never be dropped
            session: Session = (
                _HandlerSession(self._transport, self._headers)
                if self._transport is not None
                else _AiohttpSession(self._aiohttp, self._headers, self._pool)
            )
            closer = _close_at_loop_end(session)
            with contextlib.suppress(StopIteration):  # run it to its yield: now the loop's end closes the session
                closer.asend(None).send(None)
            state = LoopState(session, asyncio.Semaphore(self._slots), closer)
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

