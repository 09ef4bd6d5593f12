"""A fault-injecting judge: a real OpenAI-compatible HTTP/1.1 server on 127.0.0.1, in a thread.

    judge = FaultJudge().start()          # judge.url == "http://127.0.0.1:PORT/v1"
    judge.set_mode("500", times=2)        # the next 2 calls answer 500, then "ok" again
    judge.set_mode("hang")                # calls hang until set_mode(...) / release() / stop()
    judge.stop(); judge.restart()         # killed (every connection dropped), back on the same port
    judge.calls, judge.calls_by_mode, judge.disconnects, judge.max_in_flight
    judge.connections, judge.open_connections, judge.headers  # TCP connections opened / open now; last headers

Modes: ok, 500, 429 (with ``Retry-After: retry_after``), hang, reset (TCP RST), cutoff (a 200
whose body stops mid-JSON), html (a 200 HTML page), no_choices (a 200 JSON without ``choices``),
short (one choice whatever ``n``), slow (answers after ``latency_s``). Stragglers, whatever the
mode: ``judge.stragglers = {5, 40, "question 7:"}`` makes POSTs number 5 and 40, and the first POST
whose body contains "question 7:" (not its retries or hedges), wait ``straggle_s`` more first. Run
as a script (``python tests/fault_judge.py --latency 0.05``) it serves in its own process. It honours ``n`` the way
vLLM does (choice ``j`` is the sample of seed ``seed + j``) and answers like a judge: a
``Scores: \\boxed{...}`` block, one score per shown response, a function of the response text
and the sample's seed only, so rewards are deterministic and comparable across transports. It
also serves ``GET /v1/models``, ``POST /classify`` (meta RM) and ``POST /get_reward`` (reward
server), under the same modes. Used by the unit tests and ``benchmarks/bench_faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import socket
import statistics
import struct
import threading
from collections import Counter
from typing import Any

MODES = ("ok", "500", "429", "hang", "reset", "cutoff", "html", "no_choices", "short", "slow")
_RESPONSE = re.compile(r"\[The Begin of Response(?: \d+)?\]\n(.*?)\n\[The End of Response(?: \d+)?\]", re.DOTALL)


def judge_score(response: str, seed: int | None, score_range: tuple[int, int] = (1, 10)) -> int:
    """The score the fault judge gives ``response`` in the sample of ``seed`` (deterministic)."""
    lo, hi = score_range
    digest = hashlib.blake2b(f"{seed}|{response}".encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return lo + int.from_bytes(digest, "big") % (hi - lo + 1)


def judge_text(prompt: str, seed: int | None) -> str:
    """What the fault judge writes for ``prompt`` in the sample of ``seed``."""
    responses = _RESPONSE.findall(prompt) or [prompt]
    scores = ", ".join(str(judge_score(r, seed)) for r in responses)
    return f"Analysis: fault judge, seed {seed}.\nScores: \\boxed{{{scores}}}"


class FaultJudge:
    """The server; see the module docstring. ``port=0`` picks a free port on first start."""

    def __init__(self, *, port: int = 0, latency_s: float = 0.0, owned_by: str = "vllm") -> None:
        self.port = port
        self.latency_s = latency_s
        #: log-normal spread of the slow mode's latency (0: every call takes latency_s); see _spread_factor
        self.latency_spread = 0.0
        self.owned_by = owned_by
        self.mode = "ok"
        self.retry_after: float | None = 1.0
        self._times: int | None = None
        self.calls = 0  # POSTs received
        self.gets = 0
        self.calls_by_mode: Counter[str] = Counter()
        self.disconnects = 0  # clients that left a call before its answer
        self.connections = 0  # TCP connections accepted
        self.open_connections = 0
        self.headers: dict[str, str] = {}  # of the last request
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []  # bodies answered
        self.received: list[bytes] = []  # every POST body as it arrived (answered or not)
        self.stragglers: set[int | str] = set()  # POST numbers (1-based) / body substrings that wait straggle_s
        self.straggle_s = 60.0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._release: asyncio.Event | None = None
        self._started_once = False

    # --- control -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultJudge:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._open())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-judge", daemon=True)
        self._thread.start()
        ready.wait(10)
        if not self._started_once:
            from grm_reward._http import forget_server

            for url in (self.url, self.root + "/classify", self.root + "/get_reward"):
                forget_server(url)  # a reused port starts with fresh breaker state
            self._started_once = True
        return self

    def stop(self) -> None:
        """Kill: close the listener and drop every connection (calls in flight see a reset)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def restart(self) -> FaultJudge:
        self.stop()
        return self.start()

    def set_mode(
        self, mode: str, *, times: int | None = None, retry_after: float | None = 1.0, latency_s: float | None = None
    ) -> None:
        """Switch what the next calls get; ``times``: only the next so many calls, then "ok"."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        with self._lock:
            self.mode, self._times, self.retry_after = mode, times, retry_after
            if latency_s is not None:
                self.latency_s = latency_s
        loop, event = self._loop, self._release
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.clear if mode == "hang" else event.set)

    def release(self) -> None:
        """Let hung calls answer now (as in "ok" mode)."""
        loop, event = self._loop, self._release
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def __enter__(self) -> FaultJudge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- server ------------------------------------------------------------------------------
    async def _open(self) -> None:
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        left = self.disconnects  # calls cut by the kill are not clients that left
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()
        # Killed: let the handlers see their connection gone, so none outlives the loop ("Task was destroyed").
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=2.0)
        for task in self._handlers:
            task.cancel()
        self.disconnects = left
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _take_mode(self) -> str:
        with self._lock:
            mode = self.mode
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self.mode, self._times = "ok", None
            return mode

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.connections += 1
        self.open_connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                self.headers = headers
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if not await self._answer(method, target, body, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # (a cancelled handler returns: Python 3.11's start_server callback chokes on a cancelled task)
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    def _spread_factor(self, raw: bytes) -> float:
        """exp(spread x z), z a standard normal drawn from the request's bytes: calls vary in length as a
        real judge's generations do (median latency_s), and a hedge or retry (the same bytes: the same
        seed, the same sample) takes exactly as long as its original."""
        if self.latency_spread <= 0:
            return 1.0
        fraction = (int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") + 0.5) / 2**64
        return math.exp(self.latency_spread * statistics.NormalDist().inv_cdf(fraction))

    async def _answer(
        self, method: str, target: str, raw: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        path = target.split("?")[0]
        if method == "GET":
            self.gets += 1
        else:
            self.calls += 1
            self.received.append(raw)
        mode = self._take_mode()
        self.calls_by_mode[mode] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        delay = self.latency_s * self._spread_factor(raw) if mode == "slow" else 0.0
        if method != "GET" and self.stragglers:
            hit = self.calls if self.calls in self.stragglers else next(
                (key for key in self.stragglers if isinstance(key, str) and key.encode() in raw), None
            )
            if hit is not None:
                delay += self.straggle_s
                if isinstance(hit, str):
                    self.stragglers.discard(hit)  # its retries and hedges are answered normally
        try:
            if mode == "hang" or delay > 0:
                assert self._release is not None
                waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(reader.read(1))]
                if mode == "hang":
                    waits.append(asyncio.ensure_future(self._release.wait()))
                else:
                    waits.append(asyncio.ensure_future(asyncio.sleep(delay)))
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)  # the read is over before the next one
                if waits[0] in done:  # the client left (EOF) before the answer
                    self.disconnects += 1
                    return False
                if mode in ("hang", "slow"):
                    mode = "ok"
            if mode == "reset":
                _abort(writer)
                return False
            if mode == "500":
                await _send(writer, 500, {"error": {"message": "fault judge: internal error"}})
            elif mode == "429":
                extra = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else {}
                await _send(writer, 429, {"error": {"message": "fault judge: too many requests"}}, extra)
            elif mode == "html":
                await _send_raw(writer, 200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            elif mode == "no_choices":
                await _send(writer, 200, {"object": "error", "message": "fault judge: no choices"})
            elif mode == "cutoff":
                data = json.dumps(self._reply(path, raw, short=False)).encode()
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data[: len(data) // 2]
                )
                await writer.drain()
                _abort(writer)
                return False
            else:
                await _send(writer, 200, self._reply(path, raw, short=mode == "short"))
            return True
        finally:
            self.in_flight -= 1

    def _reply(self, path: str, raw: bytes, *, short: bool) -> dict[str, Any]:
        if path.endswith("/models"):
            return {"object": "list", "data": [{"id": "fault-judge", "object": "model", "owned_by": self.owned_by}]}
        body = json.loads(raw or b"{}")
        self.bodies.append(body)
        if path.endswith("/classify"):
            texts = body.get("input", [])
            return {"data": [{"index": i, "probs": [judge_score(t, 0) / 10]} for i, t in enumerate(texts)]}
        if path.endswith("/get_reward"):
            queries = body.get("query", [])
            rewards = [judge_score(q, 0) / 10 for q in queries]
            return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
        chat = "messages" in body
        prompt = body["messages"][-1]["content"] if chat else str(body.get("prompt", ""))
        seed = body.get("seed")
        n = 1 if short else int(body.get("n", 1))
        choices = []
        for j in range(n):
            text = judge_text(prompt, None if seed is None else seed + j)  # vLLM: child j is seed + j
            choice: dict[str, Any] = {"index": j, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            choices.append(choice)
        tokens = sum(len((c.get("message") or c)["content" if chat else "text"].split()) for c in choices)
        return {
            "id": "fault",
            "object": "chat.completion" if chat else "text_completion",
            "choices": choices,
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": tokens},
        }


async def _send(writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    await _send_raw(writer, status, json.dumps(payload).encode(), "application/json", headers)


async def _send_raw(
    writer: asyncio.StreamWriter, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
) -> None:
    reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "X")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n{extra}\r\n".encode()
        + data
    )
    await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


if __name__ == "__main__":  # a judge in its own process: prints its URL, serves until stdin closes
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="the fault-injecting judge, in its own process")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per call (mode slow)")
    parser.add_argument("--spread", type=float, default=0.0, help="log-normal spread of the latency (sigma)")
    parser.add_argument("--straggle-s", type=float, default=60.0)
    parser.add_argument("--straggle", action="append", default=[], help="body substring whose first call straggles")
    cli = parser.parse_args()
    server = FaultJudge(latency_s=cli.latency).start()
    server.set_mode("slow" if cli.latency > 0 else "ok", latency_s=cli.latency)
    server.straggle_s, server.stragglers = cli.straggle_s, set(cli.straggle)
    server.latency_spread = cli.spread
    print(server.url, flush=True)
    sys.stdin.read()
    print(json.dumps({"calls": server.calls, "disconnects": server.disconnects}), flush=True)
    server.stop()
