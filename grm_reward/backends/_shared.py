"""Helpers the engine backends share: chat rendering and score filling.

Score filling (the format guarantee and token-probability scores) over an engine that can only
continue text is done in one of three ways, best first:

- **probing** (:func:`probe_fill`): ask for the next token's top-k alternatives with their
  log-probabilities, keep the ones that spell an in-range number (or its prefix: ``1`` of
  ``10``), renormalise over them, take the most likely number, and continue after it. This is
  the constraint the transformers backend applies, read from the alternatives the engine
  returns; the expectation over the numbers is the paper's TokenProb score. It is exact up to
  the top-k cut: allowed tokens outside the top k count as probability 0.
- **guided decoding**: one constrained request with :func:`score_block_regex` (vLLM
  structured outputs, SGLang ``regex``); the text is still read back with the parser.
- **free continuation**: the engine continues the forced prefix without a constraint and
  :func:`read_fill` reads what it wrote; when that is not a valid score block the fill fails
  with a reason and the sample stays invalid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grm_reward.backends.base import score_number_strings
from grm_reward.parsing import read_scores
from grm_reward.types import Message

__all__ = [
    "NextTokens",
    "ProbedFill",
    "fill_budget",
    "probe_fill",
    "read_fill",
    "render_chat_prompt",
    "torch_placement",
]

#: ``await next_tokens(extra)``: the top alternatives ``(token text, logprob)`` for the token that
#: follows the forced prefix plus ``extra``.
NextTokens = Callable[[str], Awaitable[Sequence[tuple[str, float]]]]

# Markers tokenizers use for whitespace inside token strings (SentencePiece, byte-level BPE).
_WHITESPACE_MARKERS = str.maketrans({"▁": " ", "Ġ": " ", "Ċ": "\n", "ĉ": "\t"})
_DIGITS = re.compile(r"\d+")
# Paths explored per score position (whitespace step, ambiguous prefixes): a guard, never reached
# for ranges up to 1000.
_MAX_PROBES_PER_POSITION = 16
_NEGLIGIBLE = 1e-6


def render_chat_prompt(tokenizer: Any, messages: Sequence[Message], assistant_prefix: str | None = None) -> str:
    """The judge prompt as text, through the tokenizer's chat template.

    With ``assistant_prefix`` the judge's answer is opened with it and left open
    (``continue_final_message``), so generation continues the prefix.
    """
    conversation = [dict(m) for m in messages]
    if assistant_prefix is not None:
        conversation.append({"role": "assistant", "content": assistant_prefix})
        return str(tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True))
    return str(tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))


def fill_budget(num_scores: int) -> int:
    """Tokens enough for ``v1, ..., vn}`` with numbers of up to three tokens."""
    return 5 * num_scores + 4


def read_fill(text: str, num_scores: int, score_range: tuple[int, int]) -> tuple[list[int] | None, str | None]:
    """Read what an engine wrote after the forced ``\\boxed{``: (values, None) or (None, reason)."""
    close = text.find("}")
    if close < 0:
        return None, f"the continuation never closed the score block: {text[:60]!r}"
    values, reason = read_scores(text[:close], num_scores, score_range)
    return values, reason


@dataclass(frozen=True, slots=True)
class ProbedFill:
    """What :func:`probe_fill` found: values and expectations, or the reason it could not."""

    values: list[int] | None
    expected: list[float] | None
    probes: int
    reason: str | None = None


async def probe_fill(next_tokens: NextTokens, num_scores: int, score_range: tuple[int, int]) -> ProbedFill:
    """Fill ``num_scores`` numbers, reading each from the next-token alternatives.

    >>> import asyncio, math
    >>> async def engine(extra):   # "8" is likely, "3" less so; then "," / "}"
    ...     if extra.endswith("{") or extra == "" or extra.endswith(","):
    ...         return [("8", math.log(0.6)), (" 3", math.log(0.2)), ("Hello", math.log(0.2))]
    ...     return [(",", 0.0)]
    >>> fill = asyncio.run(probe_fill(engine, 2, (1, 10)))
    >>> fill.values, [round(e, 2) for e in fill.expected]
    ([8, 8], [6.75, 6.75])
    """
    spellings = frozenset(score_number_strings(score_range))
    extra = ""
    values: list[int] = []
    expected: list[float] = []
    probes = 0
    for position in range(num_scores):
        end = "}" if position == num_scores - 1 else ","
        distribution, spelled, used = await _number_distribution(next_tokens, extra, spellings, end)
        probes += used
        if not distribution:
            return ProbedFill(
                None, None, probes, f"no in-range number among the top next tokens at score {position + 1}"
            )
        total = sum(distribution.values())
        value = max(distribution, key=lambda v: (distribution[v], -v))
        values.append(value)
        expected.append(sum(v * p for v, p in distribution.items()) / total)
        extra += spelled[value] + end
    return ProbedFill(values, expected, probes)


async def _number_distribution(
    next_tokens: NextTokens, extra: str, spellings: frozenset[str], end: str
) -> tuple[dict[int, float], dict[int, str], int]:
    """P(number) at one score position under the constraint, its most likely spelling, probes used.

    Allowed at the start: optional whitespace, then digits that begin a valid number. After a
    complete number that is also the prefix of a longer one (``1`` of ``10``): more digits, or
    ``end``. Each node's allowed alternatives are renormalised, as a constrained decoder would.
    """
    probs: dict[int, float] = {}
    best_spelling: dict[int, tuple[float, str]] = {}
    # (text appended at this position, digits read, probability mass, whitespace still allowed)
    frontier: list[tuple[str, str, float, bool]] = [("", "", 1.0, True)]
    probes = 0
    while frontier and probes < _MAX_PROBES_PER_POSITION:
        written, digits, mass, whitespace_ok = frontier.pop()
        alternatives = await next_tokens(extra + written)
        probes += 1
        allowed: list[tuple[str, str, str, float]] = []  # (kind, text, number, p)
        for raw, logprob in alternatives:
            token = str(raw).translate(_WHITESPACE_MARKERS)
            p = math.exp(logprob) if logprob is not None and logprob > -math.inf else 0.0
            if p <= 0.0 or not token:
                continue
            if not digits and whitespace_ok and not token.strip():
                allowed.append(("space", token, "", p))
                continue
            body = token.lstrip() if not digits and whitespace_ok else token
            match = _DIGITS.match(body)
            head = match.group() if match else ""
            rest = body[len(head) :]
            number = digits + head
            if not head:
                if digits in spellings and token.startswith(end):
                    allowed.append(("done", "", digits, p))
                continue
            if rest:  # digits and more in one token ("8," or "8}")
                if number in spellings and rest.startswith(end):
                    allowed.append(("done", token[: len(token) - len(rest)], number, p))
                continue
            if not any(s.startswith(number) for s in spellings):
                continue
            longer = any(len(s) > len(number) and s.startswith(number) for s in spellings)
            kind = "more" if longer else "done"
            allowed.append((kind, token, number, p))
        total = sum(p for *_, p in allowed)
        if total <= 0.0:
            continue
        for kind, text, number, p in allowed:
            share = mass * p / total
            if share < _NEGLIGIBLE:
                continue
            if kind == "space":
                frontier.append((written + text, "", share, False))
            elif kind == "more":
                frontier.append((written + text, number, share, False))
            else:
                value = int(number)
                probs[value] = probs.get(value, 0.0) + share
                spelling = written + text
                if share > best_spelling.get(value, (-1.0, ""))[0]:
                    best_spelling[value] = (share, spelling)
    return probs, {v: s for v, (_, s) in best_spelling.items()}, probes


def torch_placement(torch: Any, device: str, dtype: str) -> tuple[str, Any]:
    """The device and torch dtype for a model: "auto" is CUDA when present, else the CPU; bf16 on
    CUDA, fp32 on the CPU (the transformers judge and the meta RM both load this way)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    return device, getattr(torch, dtype)
