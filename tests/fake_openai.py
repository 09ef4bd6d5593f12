"""An in-process fake OpenAI-compatible server: a `grm_reward._http.Transport` handler (tests only).

It behaves like the servers the `openai` backend meets: ``n`` honoured (as vLLM does: choice
``j`` is the sample of seed ``seed + j``), ignored
(``transformers serve``, llama.cpp) or refused with a 400; scripted failures (status codes,
Retry-After, connection errors, timeouts); ``usage`` on every answer; logprobs when asked.
The judge text is a function of the request, so tests can check seeds and prompts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grm_reward._http import HTTPRequest, HTTPResponse


def default_judge(body: dict[str, Any], seed: int | None, index: int) -> str:
    """``seed`` is the sample's own seed (``seed + index`` within an n-request, as in vLLM)."""
    return f"Analysis: seed={seed}.\nScores: \\boxed{{7}}"


@dataclass
class FakeOpenAIServer:
    n_mode: str = "honour"  # "honour" | "ignore" | "refuse"
    judge: Callable[[dict[str, Any], int | None, int], str] = default_judge
    #: queued failures, consumed one per request: an int status, (status, headers), or an exception
    failures: list[Any] = field(default_factory=list)
    #: token alternatives for logprob probes: f(text so far) -> list[(token, logprob)]
    top_logprobs: Callable[[str], list[tuple[str, float]]] | None = None
    #: continuation text for non-probe fills: f(text so far) -> str
    fill_text: Callable[[str], str] | None = None
    hang: asyncio.Event | None = None  # requests whose body has "hang" wait on it
    models: list[dict[str, Any]] = field(default_factory=list)
    version: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0

    def transport(self) -> Any:
        return self.handle

    def sync_transport(self) -> Any:
        return self.handle_get

    def handle_get(self, request: HTTPRequest) -> HTTPResponse:
        if request.path.endswith("/models"):
            return HTTPResponse.of(200, json_body={"object": "list", "data": self.models})
        if request.path.endswith("/version") and self.version is not None:
            return HTTPResponse.of(200, json_body={"version": self.version})
        return HTTPResponse.of(404, json_body={"detail": "Not Found"})

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        body = json.loads(request.content)
        self.requests.append(body)
        self.paths.append(request.path)
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)  # let concurrent requests overlap
            if self.hang is not None and _text(body).find("hang") >= 0:
                try:
                    await self.hang.wait()
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            if self.failures:
                failure = self.failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                status, headers = failure if isinstance(failure, tuple) else (failure, {})
                message = "upstream busy" if status >= 429 else "bad request"
                return HTTPResponse.of(status, headers=headers, json_body={"error": {"message": message}})
            return self._answer(request.path, body)
        finally:
            self.in_flight -= 1

    def _answer(self, path: str, body: dict[str, Any]) -> HTTPResponse:
        n = body.get("n", 1)
        if n != 1 and self.n_mode == "refuse":
            return HTTPResponse.of(400, json_body={"error": {"message": "n must be 1"}})
        count = n if self.n_mode == "honour" else 1
        seed = body.get("seed")
        chat = path.endswith("/chat/completions")
        text_so_far = _text(body)
        choices = []
        for index in range(count):
            logprobs = None
            if body.get("logprobs") and self.top_logprobs is not None:
                top = self.top_logprobs(text_so_far)
                if chat:
                    logprobs = {"content": [{"token": top[0][0], "logprob": top[0][1],
                                             "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
                else:
                    logprobs = {"tokens": [top[0][0]], "top_logprobs": [dict(top)]}
                text = top[0][0]
            elif self.fill_text is not None and _is_continuation(body):
                text = self.fill_text(text_so_far)
            else:
                text = self.judge(body, None if seed is None else seed + index, index)
            choice: dict[str, Any] = {"index": index, "finish_reason": "stop", "logprobs": logprobs}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        completion_tokens = sum(len(_choice_text(c).split()) for c in choices)
        return HTTPResponse.of(
            200,
            json_body={
                "id": "x",
                "object": "chat.completion" if chat else "text_completion",
                "choices": choices,
                "usage": {"prompt_tokens": 11, "completion_tokens": completion_tokens,
                          "total_tokens": 11 + completion_tokens},
            },
        )


def _choice_text(choice: dict[str, Any]) -> str:
    return choice["message"]["content"] if "message" in choice else choice["text"]


def _text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content")) for m in body["messages"])
    prompt = body.get("prompt")
    if isinstance(prompt, list):  # token ids from CharTokenizer-like test tokenizers
        return "".join(map(chr, prompt))
    return str(prompt)


def _is_continuation(body: dict[str, Any]) -> bool:
    return bool(body.get("continue_final_message")) or "prompt" in body
