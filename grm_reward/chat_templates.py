"""Chat-template text <-> messages: split a templated query into conversation and response.

:func:`split_query` splits prompt + response (exact prefix, a left-truncated prompt, the last
assistant header of a known template, else the whole text); :func:`parse_chat_prompt` rebuilds
messages for ChatML, Llama 3, Gemma, Mistral, DeepSeek and Phi-3/Zephyr. Used by the OpenRLHF
adapter, the reward server and the SPCT reward functions; see docs/openrlhf.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grm_reward.types import Message

__all__ = ["END_TOKENS", "SplitQuery", "parse_chat_prompt", "split_query", "strip_end_tokens"]

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
        prompt=messages if messages is not None else _clean_text(conversation),
        response=strip_end_tokens(response).strip(),
        method=method,
    )


def parse_chat_prompt(text: str) -> list[Message] | None:
    """Chat messages from a templated prompt (the open assistant turn at the end dropped); None if unknown,
    ``[]`` if the text is a known template's turns with no text in any of them (only its markers).

    A conversation without a user turn (the task in the system prompt) is returned as it is, once no
    template finds a user turn: judged as text, its markers became part of the judge's question.

    >>> parse_chat_prompt("<|im_start|>system\\nTranslate: good morning<|im_end|>\\n<|im_start|>assistant\\n")
    [{'role': 'system', 'content': 'Translate: good morning'}]
    """
    markers_only = False
    without_user: list[Message] | None = None
    for name, turn, _ in _TEMPLATES:
        if name == "mistral":
            found = [("user", m.group(1)) for m in turn.finditer(text)]
        else:
            found = [(_ROLES.get(m.group(1), m.group(1)), m.group(2)) for m in turn.finditer(text)]
        messages: list[Message] = [
            {"role": role, "content": strip_end_tokens(content).strip()} for role, content in found
        ]
        while messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
            messages.pop()
        if found and not any(m["content"] for m in messages):
            markers_only = True  # was judged as it stood: the markers became the judge's question
        elif any(m["role"] == "user" and m["content"] for m in messages):
            return messages
        elif without_user is None and any(m["content"] for m in messages):
            without_user = [m for m in messages if m["content"]]
    if without_user is not None:
        return without_user
    return [] if markers_only else None


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
