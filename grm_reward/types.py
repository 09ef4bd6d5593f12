"""Plain data: what goes into the reward model and what comes out.

`Request` is one query with 1..n responses; `Judgement` is one sampled judge output, already
mapped back to the original response order; `RewardResult` is the vote over the samples.
Everything here is pure data with `to_dict()` for JSON; no I/O, no engines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from grm_reward.errors import InputError

__all__ = [
    "DefenceRecord",
    "Judgement",
    "Message",
    "Principle",
    "Request",
    "RequestLike",
    "RewardResult",
    "Usage",
    "completion_text",
    "find_lone_surrogate",
    "is_text",
]

#: A chat message: ``{"role": "user" | "assistant" | "system" | ..., "content": str}``.
Message = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Principle:
    """One judging criterion, as the judge wrote it or the user supplied it.

    ``weight`` is the number written beside it: "(Weight: 30%)" becomes 0.3 and a bare
    "(4)" stays 4.0; None when no weight was given.
    """

    text: str
    weight: float | None = None


@dataclass(slots=True)
class Judgement:
    """One judge sample.

    ``scores`` are in the **original** response order (the order of ``Request.responses``),
    whatever order the sample was shown; ``order[p]`` is the original index of the response
    shown at position ``p``. ``scores`` is None when the sample is invalid, and ``reason`` says
    why. ``forced`` marks scores filled in under the format guarantee.
    """

    text: str
    scores: list[int] | None
    order: list[int]
    principles: list[Principle] = field(default_factory=list)
    critique: str = ""
    reason: str | None = None
    forced: bool = False
    token_scores: list[float] | None = None
    meta_score: float | None = None
    seed: int | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.scores is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["valid"] = self.valid
        return data


@dataclass(frozen=True, slots=True)
class DefenceRecord:
    """What the reward-hacking defences did to one response (docs/reward-hacking.md).

    ``neutralised`` counts the verdict look-alikes and template delimiters rewritten before the
    judge saw the response, by kind; ``flagged`` counts instruction-like injections (left as
    written), by kind; ``chars`` is the response's length as given (for the length monitor).
    """

    neutralised: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    chars: int = 0

    @property
    def any_neutralised(self) -> bool:
        return bool(self.neutralised)

    @property
    def any_flagged(self) -> bool:
        return bool(self.flagged)

    def to_dict(self) -> dict[str, Any]:
        return {"neutralised": dict(self.neutralised), "flagged": dict(self.flagged), "chars": self.chars}


@dataclass(slots=True)
class Usage:
    """Token counts of a call: prompt tokens sent, and completion tokens generated."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass(slots=True)
class RewardResult:
    """The reward for each response of one request.

    ``rewards[i]`` is the normalised reward of response ``i`` (see ``GRMConfig.normalize``), or
    ``GRMConfig.failure_reward`` (None by default) when no sample could be read. ``votes[i]`` is
    the paper's raw vote: the sum of response ``i``'s scores over the samples that voted.
    ``best`` is the index of the top-voted response (None on an unbroken tie or a failure).
    ``defences[i]`` records what the reward-hacking defences found in response ``i`` (empty when
    the result was not built by the model). ``cached`` marks a result answered from the result
    cache (``GRMConfig.reuse``): its ``usage`` is zero, as no tokens were spent for it.
    """

    rewards: list[float | None]
    votes: list[float]
    samples: list[Judgement]
    num_voted: int
    best: int | None
    tie: bool
    usage: Usage = field(default_factory=Usage)
    defences: list[DefenceRecord] = field(default_factory=list)
    cached: bool = False

    @property
    def num_valid(self) -> int:
        return sum(1 for s in self.samples if s.valid)

    @property
    def num_forced(self) -> int:
        return sum(1 for s in self.samples if s.forced and s.valid)

    @property
    def all_invalid(self) -> bool:
        return self.num_voted == 0

    @property
    def samples_drawn(self) -> int:
        """Judge samples drawn for this request: k, or fewer under adaptive k (docs/scoring.md)."""
        return len(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rewards": list(self.rewards),
            "votes": list(self.votes),
            "best": self.best,
            "tie": self.tie,
            "num_valid": self.num_valid,
            "num_forced": self.num_forced,
            "num_voted": self.num_voted,
            "samples_drawn": self.samples_drawn,
            "usage": asdict(self.usage),
            "samples": [s.to_dict() for s in self.samples],
            "defences": [d.to_dict() for d in self.defences],
            "cached": self.cached,
        }


@dataclass(frozen=True, slots=True)
class Request:
    """One query and the 1..n responses to score together.

    ``prompt`` is the user's query as a string, or a conversation as chat messages whose last
    user turn is the query. ``principles`` (a rubric) replaces the principles the judge would
    write; ``reference`` is a reference answer shown to the judge.
    """

    prompt: str | Sequence[Message]
    responses: Sequence[str]
    principles: str | Sequence[str] | None = None
    reference: str | None = None

    def __post_init__(self) -> None:
        validate_request(self)

    @property
    def n(self) -> int:
        return len(self.responses)

    @property
    def text_chars(self) -> int:
        """Characters of text in the request (prompt contents, responses, principles, reference)."""
        prompt = self.prompt
        size = len(prompt) if isinstance(prompt, str) else sum(len(str(m.get("content") or "")) for m in prompt)
        principles = self.principles
        size += len(principles) if isinstance(principles, str) else sum(len(p) for p in principles or ())
        return size + sum(len(r) for r in self.responses) + len(self.reference or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt if isinstance(self.prompt, str) else [dict(m) for m in self.prompt],
            "responses": list(self.responses),
            "principles": self.principles if isinstance(self.principles, (str, type(None))) else list(self.principles),
            "reference": self.reference,
        }

    @classmethod
    def coerce(cls, item: RequestLike, *, index: int | None = None) -> Request:
        """Accept a Request, a mapping with the same keys, or a ``(prompt, responses)`` pair."""
        if isinstance(item, Request):
            return item
        try:
            if isinstance(item, Mapping):
                unknown = set(item) - {"prompt", "responses", "principles", "reference"}
                if unknown:
                    raise InputError(f"unknown request keys {sorted(unknown)}")
                if "prompt" not in item or "responses" not in item:
                    raise InputError("a request needs 'prompt' and 'responses'")
                return cls(**item)
            if isinstance(item, tuple) and len(item) == 2:
                return cls(prompt=item[0], responses=item[1])
        except InputError as exc:
            raise InputError(str(exc), index=index) from None
        raise InputError(
            f"expected a Request, a mapping or a (prompt, responses) pair, got {type(item).__name__}", index=index
        )


RequestLike = Union[Request, Mapping[str, Any], tuple[Any, Any]]  # noqa: UP007 (a runtime alias on Python 3.10)


def validate_request(req: Request) -> None:
    """Raise :class:`InputError` with a precise message if ``req`` cannot be scored."""
    prompt = req.prompt
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError("prompt is empty")
    elif isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        if len(prompt) == 0:
            raise InputError("prompt is an empty list of messages")
        has_text = False
        for j, message in enumerate(prompt):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise InputError(f"prompt message {j} must be a mapping with 'role' and 'content'")
            if not isinstance(message["role"], str):
                raise InputError(f"prompt message {j}: 'role' must be a string")
            has_text = bool(message_text(message, where=f"prompt message {j}").strip()) or has_text
        if not has_text:  # as for an empty string: the judge would score the responses against nothing
            raise InputError("prompt is empty: no message has any text")
    else:
        raise InputError(f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}")

    responses = req.responses
    if isinstance(responses, (str, bytes)) or not isinstance(responses, Sequence):
        raise InputError(f"responses must be a list of strings, got {type(responses).__name__}")
    if len(responses) == 0:
        raise InputError("responses is empty: give at least one response to score")
    for i, response in enumerate(responses):
        if not isinstance(response, str):
            raise InputError(f"response {i} must be a string, got {type(response).__name__}")

    principles = req.principles
    if principles is not None:
        if isinstance(principles, str):
            if not principles.strip():
                raise InputError("principles is an empty string (use None for judge-written principles)")
        elif isinstance(principles, Sequence) and all(isinstance(p, str) for p in principles):
            if not any(p.strip() for p in principles):
                raise InputError("principles is empty (use None for judge-written principles)")
        else:
            raise InputError("principles must be a string or a list of strings")
    if req.reference is not None and not isinstance(req.reference, str):
        raise InputError(f"reference must be a string, got {type(req.reference).__name__}")
    where = find_lone_surrogate(
        {"prompt": req.prompt, "responses": req.responses, "principles": req.principles, "reference": req.reference}
    )
    if where is not None:  # no tokenizer or JSON encoder downstream accepts one
        raise InputError(f"{where} contains a lone surrogate (such as \\ud800), which is not text")


def find_lone_surrogate(data: Any) -> str | None:
    """Where the first lone surrogate in decoded JSON-like data is (``"labels.2.reference"``), or None.

    JSON allows ``"\\ud800"``, which no encoder downstream accepts; every string is checked, keys
    and nested values included, without recursion (so any depth is fine).

    >>> find_lone_surrogate({"query": ["ok", {"a": ["\\ud800"]}]})
    'query.1.a.0'
    """
    # A path is (parent path, key) or None, spelled out only when a surrogate is found (every request
    # passes here: building a dotted string per value cost more than the check itself).
    stack: list[tuple[Any, Any]] = [(None, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not is_text(value):
                return _dotted(path) or "body"
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and not is_text(key):
                    where = _dotted(path)
                    return f"{where}.<key>" if where else "<key>"
                stack.append(((path, key), item))
        elif isinstance(value, (list, tuple)):
            stack.extend(((path, i), item) for i, item in reversed(list(enumerate(value))))
    return None


def _dotted(path: Any) -> str:
    keys: list[str] = []
    while path is not None:
        path, key = path
        keys.append(str(key))
    return ".".join(reversed(keys))


def is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (holds no lone surrogate)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_text(message: Message, *, where: str = "message") -> str:
    """The text of a chat message; OpenAI-style content parts are joined, non-text parts rejected."""
    content = message["content"]
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, Mapping) and part.get("type") == "text":
                raise InputError(f"{where}: a 'text' part needs a string 'text', got {type(part.get('text')).__name__}")
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise InputError(f"{where}: only text content can be judged, found a {kind!r} part")
        return "\n".join(texts)
    raise InputError(f"{where}: 'content' must be a string or a list of text parts")


def completion_text(completion: str | Sequence[Message] | Message, *, include_reasoning: bool = False) -> str:
    """The text of a completion as the judge sees it.

    A string is itself. A conversational completion (a message or a list of them) is the text of
    its assistant messages, joined by blank lines; with ``include_reasoning``, a message's
    ``reasoning_content`` (or ``thinking``) comes first, in a ``<think>`` block.

    >>> completion_text([{"role": "assistant", "content": "4", "reasoning_content": "2+2=4"}])
    '4'
    >>> completion_text([{"role": "assistant", "content": "4", "reasoning_content": "2+2=4"}], include_reasoning=True)
    '<think>\\n2+2=4\\n</think>\\n\\n4'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (bytes, bytearray)) or not isinstance(completion, (Mapping, Sequence)):
        raise InputError(f"a completion must be a string or chat messages, got {type(completion).__name__}")
    messages = [completion] if isinstance(completion, Mapping) else list(completion)
    parts = []
    for j, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"completion message {j} must be a mapping, got {type(message).__name__}")
        if message.get("role", "assistant") != "assistant":
            continue
        text = message_text(message, where=f"completion message {j}") if "content" in message else ""
        reasoning = message.get("reasoning_content") or message.get("thinking")
        if include_reasoning and isinstance(reasoning, str) and reasoning.strip():
            text = f"<think>\n{reasoning.strip()}\n</think>\n\n{text}"
        if text:
            parts.append(text)
    return "\n\n".join(parts)
