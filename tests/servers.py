"""Start and stop real servers on 127.0.0.1 with a free port (tests only)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

_PORTS = random.SystemRandom()  # not the global generator, which tests seed


def free_port() -> int:
    """A port free now, below the kernel's range for port 0 and above Ray's worker ports (10002-19999).

    The server binds it later: a port the kernel hands out for port 0 could meanwhile go to another
    process binding port 0 (a Ray cluster starts dozens; one of the fleet test's proxies once failed to
    bind its port for that). Ports below the ephemeral range are never handed out that way.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(200):
        port = _PORTS.randrange(20_000, low) if low > 21_000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port below the ephemeral range")


@contextlib.contextmanager
def uvicorn_thread(app: Any, *, port: int | None = None, options: Any = None) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL; stops it on exit.

    With ``options`` (a ``ServerOptions``), uvicorn runs as ``grm-reward serve`` runs it (connection
    limits, header timeout); the running ``uvicorn.Server`` is ``uvicorn_thread.server``.
    """
    import uvicorn

    port = port or free_port()
    if options is not None:
        from grm_reward.server.running import uvicorn_config

        config = uvicorn_config(app, options, host="127.0.0.1", port=port, log_level="warning")
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    uvicorn_thread.server = server  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def process_server(command: list[str], port: int, *, health: str = "/health", timeout: float = 240.0,
                   env: dict[str, str] | None = None, log: Path | None = None,
                   cwd: Path | None = None) -> Iterator[str]:
    """Start ``command`` (a server listening on ``port``), wait for ``health``, stop it on exit."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                               cwd=cwd, start_new_session=True)
    process_server.current = process  # type: ignore[attr-defined]  # for tests that signal it
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                raise RuntimeError(f"{command[0]} exited with {process.returncode}\n{tail}")
            try:
                if httpx.get(base + health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not become healthy in {timeout} s")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        if log:
            out.close()
