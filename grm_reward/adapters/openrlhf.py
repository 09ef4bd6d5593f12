"""OpenRLHF (0.9.1 - 0.11.x): from its reward protocol to grm-reward requests and back.

OpenRLHF sends, per rollout sample, ``query`` = the chat-templated prompt followed by the
response, decoded with special tokens (so it usually ends with an end-of-turn token such as
``<|im_end|>``), ``prompt`` = the templated prompt, and ``label`` = the raw dataset value of
``--data.label_key`` (``""`` without one). The prompt may have been left-truncated to fit
``max_len`` before generation, so it is not always a prefix of the query. This module

- splits a query into the conversation and the response (:func:`split_query`): exact prefix,
  else the longest tail of the prompt that starts the query (left truncation), else the last
  assistant header of a known chat template, else the whole query;
- rebuilds chat messages from templated text for ChatML, Llama 3, Gemma, Mistral, DeepSeek,
  Phi-3/Zephyr (:func:`parse_chat_prompt`), so the judge reads a clean conversation;
- turns a label into a reference answer and/or principles (:func:`label_fields`);
- shapes results as OpenRLHF wants them (:func:`openrlhf_response`): one number per query in
  ``rewards`` and ``scores`` and always the same ``extra_logs`` keys.

Both the reward server's ``/get_reward`` and the in-process file form
(``integrations/openrlhf/reward_func.py`` -> :class:`RewardFunction`) use these functions.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grm_reward.adapters._common import as_principles, defence_flags, result_stats
from grm_reward.adapters._common import as_reference as reference_text
from grm_reward.config import GRMConfig
from grm_reward.errors import InputError
from grm_reward.types import Message, Request, RewardResult

__all__ = [
    "END_TOKENS",
    "EXTRA_LOG_KEYS",
    "RewardFunction",
    "SplitQuery",
    "build_request",
    "label_fields",
    "openrlhf_response",
    "parse_chat_prompt",
    "split_query",
    "strip_end_tokens",
]

#: Special tokens that end a turn or pad a sequence in common chat templates.
END_TOKENS = (
    "<|im_end|>",  # ChatML (Qwen, SmolLM, ...)
    "<|eot_id|>",  # Llama 3
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<end_of_turn>",  # Gemma (DeepSeek-GRM-27B)
    "<eos>",
    "</s>",  # Llama 2, Mistral, Zephyr
    "<|end|>",  # Phi-3
    "<|return|>",
    "<｜end▁of▁sentence｜>",  # DeepSeek (DeepSeek-GRM-16B)
    "<|end▁of▁sentence|>",
    "<pad>",
    "<|pad|>",
    "[PAD]",
    "<|finetune_right_pad_id|>",
)

#: The ``extra_logs`` keys of every /get_reward answer (OpenRLHF needs the same keys each time);
#: the numbers of :func:`grm_reward.adapters._common.result_stats` and ``defence_flags`` (the hacking
#: monitor, docs/reward-hacking.md), named as verl's adapter names them.
EXTRA_LOG_KEYS = (
    "grm_invalid_share",
    "grm_forced_share",
    "grm_failed",
    "grm_vote_spread",
    "grm_vote",
    "grm_neutralised",
    "grm_injection",
    "grm_response_chars",
)

# (name, turn pattern with groups (role, content), assistant header) per chat template family.
_TEMPLATES: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = (
    (
        "chatml",
        re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|(?=<\|im_start\|>)|$)", re.DOTALL),
        re.compile(r"<\|im_start\|>assistant\n"),
    ),
    (
        "llama3",
        re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)(?:<\|eot_id\|>|(?=<\|start_header_id\|>)|$)", re.DOTALL),
        re.compile(r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n"),
    ),
    (
        "gemma",
        re.compile(r"<start_of_turn>(\w+)\n(.*?)(?:<end_of_turn>|(?=<start_of_turn>)|$)", re.DOTALL),
        re.compile(r"<start_of_turn>model\n"),
    ),
    (
        "phi",
        re.compile(r"<\|(system|user|assistant)\|>\n?(.*?)(?:<\|end\|>|</s>|(?=<\|(?:system|user|assistant)\|>)|$)", re.DOTALL),
        re.compile(r"<\|assistant\|>\n?"),
    ),
    (
        "deepseek",
        re.compile(r"<｜(User|Assistant)｜>(.*?)(?=<｜(?:User|Assistant)｜>|<｜end▁of▁sentence｜>|$)", re.DOTALL),
        re.compile(r"<｜Assistant｜>"),
    ),
    (
        "mistral",
        # tempered: a turn never spans another [INST], so an unclosed [INST] costs one scan, not one per [INST]
        re.compile(r"\[INST\]((?:(?!\[/?INST\]).)*)\[/INST\]", re.DOTALL),
        re.compile(r"\[/INST\]"),
    ),
)
_TRAILING_END = re.compile(
    "(?:\\s|" + "|".join(re.escape(t[::-1]) for t in sorted(END_TOKENS, key=len, reverse=True)) + ")*"
)
_LEADING_SPECIAL = re.compile(r"^(?:<s>|<bos>|<\|begin_of_text\|>|<｜begin▁of▁sentence｜>)+")
_ROLES = {"model": "assistant", "User": "user", "Assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class SplitQuery:
    """A query split into the conversation (messages, or text when no template matched) and the response.

    ``method`` says how: "prefix", "truncated" (the prompt was left-truncated), "marker" (the
    last assistant header of a known template), or "whole" (nothing matched: the whole query is
    the response).
    """

    prompt: str | list[Message]
    response: str
    method: str


def strip_end_tokens(text: str) -> str:
    """Remove trailing whitespace and end-of-turn / padding tokens (repeatedly; linear in the text).

    >>> strip_end_tokens("Four. <|im_end|>\\n<pad><pad>")
    'Four.'
    """
    # One anchored match over the reversed text: no backtracking, no copy per token removed.
    return text[: len(text) - _TRAILING_END.match(text[::-1]).end()]  # type: ignore[union-attr]


def split_query(query: str, prompt: str | None = None) -> SplitQuery:
    """Split OpenRLHF's ``query`` (prompt + response) using its ``prompt`` where possible.

    >>> split_query("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>",
    ...             "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n")
    SplitQuery(prompt=[{'role': 'user', 'content': 'Hi'}], response='Hello!', method='prefix')
    """
    response: str | None = None
    method = "whole"
    if prompt:
        if query.startswith(prompt):
            response, method = query[len(prompt) :], "prefix"
        else:
            start = _after_truncated_prompt(query, prompt)
            if start is not None:
                response, method = query[start:], "truncated"
    if response is None:
        header_end = _last_assistant_header_end(query)
        if header_end is not None:
            response, method = query[header_end:], "marker"
            if not prompt:
                prompt = query[:header_end]
        else:
            response = query
    conversation = prompt or ""
    messages = parse_chat_prompt(conversation)
    return SplitQuery(
        prompt=messages if messages else _clean_text(conversation),
        response=strip_end_tokens(response).strip(),
        method=method,
    )


def parse_chat_prompt(text: str) -> list[Message] | None:
    """Chat messages from a templated prompt (the open assistant turn at the end dropped); None if unknown."""
    for name, turn, _ in _TEMPLATES:
        if name == "mistral":
            found = [("user", m.group(1)) for m in turn.finditer(text)]
        else:
            found = [(_ROLES.get(m.group(1), m.group(1)), m.group(2)) for m in turn.finditer(text)]
        if not any(role == "user" for role, _ in found):
            continue
        messages: list[Message] = [
            {"role": role, "content": strip_end_tokens(content).strip()} for role, content in found
        ]
        while messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
            messages.pop()
        if messages and any(m["role"] == "user" and m["content"] for m in messages):
            return messages
    return None


def label_fields(label: Any, *, as_reference: bool = True) -> tuple[str | None, str | list[str] | None]:
    """(reference answer, principles) from an OpenRLHF label.

    A string (or number) label is the reference answer when ``as_reference``; a JSON object may
    carry ``reference`` and ``principles`` (a string or a list of strings). Anything else is ignored.
    """
    if isinstance(label, Mapping):
        reference = label.get("reference")
        if reference is not None and (isinstance(reference, bool) or not isinstance(reference, (str, int, float))):
            raise InputError(f"label 'reference' must be a string or a number, got {type(reference).__name__}")
        return reference_text(reference), as_principles(label.get("principles"))
    if as_reference and isinstance(label, (str, int, float)) and not isinstance(label, bool):
        return reference_text(label), None
    return None, None


def build_request(query: str, prompt: str | None, label: Any = None, *, label_as_reference: bool = True) -> Request:
    """The grm-reward request for one OpenRLHF sample."""
    split = split_query(query, prompt)
    if isinstance(split.prompt, str) and not split.prompt.strip():
        raise InputError("cannot tell the prompt from the response: send 'prompts' (OpenRLHF always does)")
    reference, principles = label_fields(label, as_reference=label_as_reference)
    return Request(prompt=split.prompt, responses=[split.response], principles=principles, reference=reference)


def openrlhf_response(
    results: Sequence[RewardResult], *, score_range: tuple[int, int], failure_reward: float
) -> dict[str, Any]:
    """``{"rewards", "scores", "extra_logs"}`` for single-response results, one number per query.

    ``rewards`` uses the configured normalisation; ``scores`` is always the [0, 1] value (for
    OpenRLHF's dynamic filtering). A result with no readable sample gets ``failure_reward``
    (unless the config's own ``failure_reward`` already gave a number) and ``grm_failed = 1``.
    """
    lo, hi = score_range
    rewards: list[float] = []
    scores: list[float] = []
    logs: dict[str, list[float]] = {key: [] for key in EXTRA_LOG_KEYS}
    for result in results:
        if len(result.rewards) != 1:
            raise ValueError("openrlhf_response takes single-response results")
        reward = result.rewards[0]
        failed = result.all_invalid
        fallback = float(failure_reward if reward is None else reward)
        rewards.append(fallback)
        scores.append(fallback if failed else (result.votes[0] / result.num_voted - lo) / (hi - lo))
        stats = result_stats(result) | defence_flags(result)
        for key in EXTRA_LOG_KEYS:
            logs[key].append(stats[key.removeprefix("grm_")])
    return {"rewards": rewards, "scores": scores, "extra_logs": logs}


class RewardFunction:
    """OpenRLHF's file form, in-process: ``reward_func(queries, prompts, labels, **kwargs)``.

    OpenRLHF calls it from many threads at once (``asyncio.to_thread``), one query per call; the
    calls meet in one :class:`~grm_reward.batching.MicroBatcher` on a private event loop, so the
    judge sees batches. With ``url`` it forwards to a running ``grm-reward serve`` instead,
    through the one HTTP layer (:mod:`grm_reward._http`) with the ``openai`` section's retry
    policy, breaker and budget, errors mapped onto :mod:`grm_reward.errors`.
    """

    def __init__(self, config: GRMConfig | None = None, *, url: str | None = None, rm: Any = None) -> None:
        self.url = url
        self.config = config if config is not None else (rm.config if rm is not None else GRMConfig())
        self._rm = rm
        self._lock = threading.Lock()
        self._batcher: Any = None
        self._loop: Any = None
        self._http: Any = None

    @classmethod
    def from_env(cls) -> RewardFunction:
        """``$GRM_REWARD_URL`` (a running server's /get_reward) or ``$GRM_REWARD_CONFIG`` (a YAML/JSON file)."""
        url = os.environ.get("GRM_REWARD_URL")
        if url:
            return cls(url=url)
        path = os.environ.get("GRM_REWARD_CONFIG")
        return cls(GRMConfig.from_file(path) if path else GRMConfig())

    def __call__(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
        if not (len(queries) == len(prompts) == len(labels)):
            raise InputError(f"queries, prompts and labels differ in length ({len(queries)}, {len(prompts)}, {len(labels)})")
        if self.url:
            return self._post(list(queries), list(prompts), list(labels))
        server = self.config.server
        requests = [
            build_request(q, p, label, label_as_reference=server.label_as_reference)
            for q, p, label in zip(queries, prompts, labels)
        ]
        loop, batcher = self._started()
        results = loop.run(batcher.submit_many(requests))
        return openrlhf_response(results, score_range=self.config.score_range, failure_reward=server.failure_reward)

    def close(self) -> None:
        with self._lock:
            loop, batcher, rm, http = self._loop, self._batcher, self._rm, self._http
            self._loop = self._batcher = self._http = None
        if loop is not None:
            if batcher is not None:
                loop.run(batcher.aclose())
                if rm is not None:
                    loop.run(rm.aclose())
            if http is not None:
                loop.run(http.aclose())
            loop.close()

    def _started(self) -> tuple[Any, Any]:
        with self._lock:
            if self._batcher is None:
                from grm_reward._sync import LoopThread
                from grm_reward.batching import MicroBatcher
                from grm_reward.model import GenerativeRewardModel

                if self._rm is None:
                    self._rm = GenerativeRewardModel(self.config)
                self._loop = LoopThread(name="grm-reward-openrlhf")
                self._batcher = MicroBatcher.from_options(self._rm, self.config.server)
            return self._loop, self._batcher

    def _post(self, queries: list[str], prompts: list[str], labels: list[Any]) -> dict[str, Any]:
        """Forward to the reward server: retried and mapped by the HTTP layer, answer checked."""
        loop, http = self._forwarder()
        count = len(queries)

        def malformed(body: dict[str, Any]) -> str | None:
            rewards = body.get("rewards")
            if not isinstance(rewards, list) or len(rewards) != count:
                return f"expected {count} rewards, got {str(rewards)[:80]}"
            return None

        payload = {"query": queries, "prompts": prompts, "labels": labels}
        data: dict[str, Any] = loop.run(http.post_json("", payload, validate=malformed))
        return data

    def _forwarder(self) -> tuple[Any, Any]:
        with self._lock:
            if self._http is None:
                from grm_reward._http import HTTPEndpoint, HTTPPolicy
                from grm_reward._sync import LoopThread

                token = os.environ.get("GRM_REWARD_SERVER_API_KEY")
                # The server answers within request_timeout_s (504 beyond): wait a little longer than that.
                timeout = self.config.server.request_timeout_s + 10.0
                self._http = HTTPEndpoint(
                    str(self.url),
                    HTTPPolicy.from_options(self.config.openai, timeout_s=timeout),
                    headers={"Authorization": f"Bearer {token}"} if token else {},
                    label="reward server",
                    auth_hint="; set $GRM_REWARD_SERVER_API_KEY to the server's api_key",
                )
                self._loop = self._loop or LoopThread(name="grm-reward-openrlhf")
            return self._loop, self._http


def _after_truncated_prompt(query: str, prompt: str) -> int | None:
    """Where the response starts when ``query`` begins with a tail of ``prompt`` (left truncation).

    The first characters of a truncated query may be a partial character the tokenizer could not
    decode, so the match is tried a few characters in. The longest tail wins. Linear in the input:
    a few candidate tails found by a 64-character anchor are checked directly (the usual case), and
    a repetitive prompt with many candidates falls back to a prefix-function pass (once per query).
    """
    searched = False
    for skip in (0, 1, 2, 4, 8, 16):
        anchor = query[skip : skip + 64]
        if len(anchor) < 8:
            return None
        position = prompt.find(anchor)
        for _ in range(_DIRECT_CANDIDATES):
            if position < 0:
                break
            if query.startswith(prompt[position:], skip):
                return skip + len(prompt) - position
            position = prompt.find(anchor, position + 1)
        else:
            head = query[skip : skip + len(prompt)]
            if position >= 0 and not searched and prompt[-len(anchor) :] in head:  # a tail ends as prompt does
                searched = True
                length = _longest_tail_starting(prompt, head)
                if length >= len(anchor):
                    return skip + length
    return None


_DIRECT_CANDIDATES = 16


def _longest_tail_starting(text: str, head: str) -> int:
    """Length of the longest suffix of ``text`` that is a prefix of ``head`` (KMP prefix function, linear).

    >>> _longest_tail_starting("xxabcab", "abcabq")
    5
    """
    border = [0] * len(head)  # border[i]: longest proper border of head[: i + 1]
    k = 0
    for i in range(1, len(head)):
        char = head[i]
        while k and head[k] != char:
            k = border[k - 1]
        if head[k] == char:
            k += 1
        border[i] = k
    k = 0  # length of the current match of a prefix of head ending at text[j]
    for char in text:
        while k and (k == len(head) or head[k] != char):
            k = border[k - 1]
        if k < len(head) and head[k] == char:
            k += 1
    return k


def _last_assistant_header_end(query: str) -> int | None:
    best: int | None = None
    for _, _, header in _TEMPLATES:
        for match in header.finditer(query):
            best = match.end() if best is None else max(best, match.end())
    return best


def _clean_text(text: str) -> str:
    return strip_end_tokens(_LEADING_SPECIAL.sub("", text)).strip()
