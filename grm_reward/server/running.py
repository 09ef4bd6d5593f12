"""Running the app under uvicorn with the server's connection limits (``docs/server.md``).

uvicorn closes an idle kept-alive connection, but never one whose request line and headers stay
incomplete: thousands of half-sent requests would hold file descriptors for ever. The h11
protocol below closes such a connection after ``header_timeout_s``. And uvicorn forces its exit on
a second Ctrl-C only: :class:`RewardServer` does so on a second SIGTERM too.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from grm_reward.config import ServerOptions
from grm_reward.server.protocol import ErrorDetail, ErrorResponse

__all__ = ["HeaderTimeoutProtocol", "RewardServer", "uvicorn_config"]


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a connection waiting for a complete request head is closed after
    ``header_timeout_s`` (counted from when it opened, or from its previous answer's first new byte)."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch_header()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_header()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _watch_header(self) -> None:
        """Run the timer while the client owes a request head; stop it once one has arrived."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)
        elif not waiting:
            self._cancel_header_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse gets the JSON error every other answer has (uvicorn's is plain text)."""
        body = ErrorResponse(error=ErrorDetail(type="BadRequest", message=msg), status=400).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request head did not arrive in %s s", self.header_timeout_s)
            self.transport.close()


class RewardServer(uvicorn.Server):
    """uvicorn's server, plus: a second SIGTERM forces the exit, as a second Ctrl-C does (``kill`` twice
    need not wait ``shutdown_timeout_s`` for the requests in flight; uvicorn forced on SIGINT only).

    uvicorn re-raises the signals it caught as its serving ends, before the event loop closes: a SIGTERM,
    under its default action, then killed the process before the app had answered the requests still in
    flight (503, which OpenRLHF retries). After a forced SIGTERM the signal is raised once the loop is
    closed instead, so the process still ends by SIGTERM, with its answers written."""

    _terminate_after_run = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        forced_by_term = self.should_exit and sig == signal.SIGTERM
        super().handle_exit(sig, frame)
        if forced_by_term:
            self.force_exit = True
            self._terminate_after_run = True
            captured = getattr(self, "_captured_signals", [])
            captured[:] = [caught for caught in captured if caught != signal.SIGTERM]

    def run(self, sockets: list[Any] | None = None) -> None:
        super().run(sockets=sockets)
        if self._terminate_after_run:
            signal.raise_signal(signal.SIGTERM)


def uvicorn_config(app: Any, options: ServerOptions, **overrides: Any) -> uvicorn.Config:
    """uvicorn's config for the reward server: host, port, logging and every connection limit of ``options``."""
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": options.header_timeout_s})
    settings: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_level": options.log_level,
        "access_log": options.access_log,
        "timeout_graceful_shutdown": options.shutdown_timeout_s,
        "http": protocol,
        "timeout_keep_alive": options.keep_alive_s,
        "limit_concurrency": options.max_connections,
        "backlog": options.backlog,
        "lifespan": "on",
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
