"""The backend protocol: prompts in, n samples per prompt out, with token counts.

The core never asks which backend it holds. :meth:`Backend.generate` and :meth:`Backend.fill_scores`
are written once, here: they validate, time, count :class:`BackendStats` and map the engine's own
(foreign) errors onto ours once. A backend implements the hooks ``_generate`` (required) and, when
it can read logits or constrain decoding, ``_fill_scores`` (the format guarantee and
token-probability scores), declared in ``capabilities`` so a config that needs it fails at start-up.

One :class:`GenerationRequest` asks for ``n`` samples of one prompt: engines that can share the
prompt's prefill between its samples (vLLM ``SamplingParams(n=...)``, OpenAI ``n``, our
transformers backend) should. ``seed`` is the base seed: sample ``i`` uses ``seed + i`` (what vLLM
does with ``n``), so a sample's text depends on its own seed, not on the batch or the transport.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from grm_reward.errors import BackendCapabilityError, BackendProtocolError, GenerationError, GRMError
from grm_reward.types import Message

__all__ = [
    "FORCED_SCORES_PREFIX",
    "Backend",
    "BackendStats",
    "Generation",
    "GenerationOutput",
    "GenerationRequest",
    "ScoreFill",
    "ScoreFillRequest",
    "score_block_regex",
    "score_number_strings",
]

#: What the format guarantee appends to a sample before the judge fills in its scores.
FORCED_SCORES_PREFIX = "Scores: \\boxed{"

Capability = Literal["score_fill", "token_prob"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """``n`` samples of one judge prompt; sample ``i`` is seeded ``seed + i``.

    One base seed, not a list, so that no backend can send seeds that disagree: an engine given
    ``n`` and ``seed`` (vLLM, a server honouring ``n``) and a fan-out of single requests with
    ``seed + i`` draw the same samples. ``assistant_prefix``, when set, is the start of the judge's
    answer: generation continues it (``continue_final_message``), and the returned text excludes it.
    """

    messages: tuple[Message, ...]
    n: int
    seed: int
    max_tokens: int
    temperature: float
    top_p: float = 1.0
    assistant_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.seed < 0:
            raise ValueError(f"GenerationRequest needs n >= 1 and a seed >= 0 (n={self.n}, seed={self.seed})")

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each sample: ``seed + i``."""
        return tuple(self.seed + i for i in range(self.n))


@dataclass(slots=True)
class Generation:
    """One sample: its text, how many tokens it took, and why it stopped ("stop" or "length")."""

    text: str
    completion_tokens: int
    finish_reason: str = "stop"


@dataclass(slots=True)
class GenerationOutput:
    """The samples of one request; ``prompt_tokens`` counts the prompt once."""

    samples: list[Generation]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class ScoreFillRequest:
    """Fill ``num_scores`` integers in ``score_range`` after ``assistant_prefix``.

    The prefix ends with :data:`FORCED_SCORES_PREFIX`; the backend must produce exactly
    ``v1, v2, ..., vn}`` (the language of :func:`score_block_regex`). With ``expectation``,
    it also returns the expected value over the range at each position (token probabilities).
    """

    messages: tuple[Message, ...]
    assistant_prefix: str
    num_scores: int
    score_range: tuple[int, int]
    expectation: bool = False


@dataclass(slots=True)
class ScoreFill:
    """The filled scores (most likely value at each position) and, if asked, their expectations.

    ``values`` is None when the backend could not produce valid scores (an unconstrained server
    continued the forced prefix with something unreadable, or no in-range number was among the
    alternatives it returned); ``reason`` then says why, and the sample stays invalid.
    """

    values: list[int] | None
    expected: list[float] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str | None = None


@dataclass(slots=True)
class BackendStats:
    """Counters a backend keeps over its lifetime (benchmarks and /metrics read them).

    ``prefill_tokens`` counts prompt tokens actually run through the model; with prefill sharing
    it is smaller than ``prompt_tokens`` times the number of samples.
    """

    calls: int = 0
    prompts: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    prefill_tokens: int = 0
    completion_tokens: int = 0
    generate_seconds: float = 0.0
    fill_calls: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Backend(abc.ABC):
    """A generation engine for the judge: implement ``_generate`` (and ``_fill_scores``)."""

    #: Short name used in logs and metrics.
    name: str = "backend"
    #: Optional abilities beyond ``generate``.
    capabilities: frozenset[Capability] = frozenset()
    #: The engine's own exceptions that :meth:`generate` / :meth:`fill_scores` map with :meth:`_map_error`;
    #: anything else that is not a :class:`GRMError` (a bug, a test's own exception) passes unchanged.
    foreign_errors: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    def __init__(self) -> None:
        self.stats = BackendStats()

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Sample ``request.n`` texts for every request; one output per request, in order.

        Counts the call, its time, prompts, samples and tokens; ``prefill_tokens`` is the hook's to
        count, as only the engine knows what it actually ran.
        """
        requests = list(requests)
        for request in requests:
            if not isinstance(request, GenerationRequest):
                raise TypeError(f"generate takes GenerationRequest objects, got {type(request).__name__}")
        if not requests:
            return []
        stats = self.stats
        stats.calls += 1
        started = time.perf_counter()
        try:
            outputs = await self._generate(requests)
        except GRMError:
            raise
        except self.foreign_errors as exc:
            raise self._map_error(exc) from exc
        finally:
            stats.generate_seconds += time.perf_counter() - started
        if len(outputs) != len(requests):
            raise BackendProtocolError(
                f"backend {self.name!r} returned {len(outputs)} outputs for {len(requests)} requests"
            )
        for i, (request, output) in enumerate(zip(requests, outputs)):
            if len(output.samples) != request.n:
                raise BackendProtocolError(
                    f"backend {self.name!r} returned {len(output.samples)} samples, {request.n} were asked for "
                    f"(generation request {i})"
                )
        stats.prompts += len(requests)
        stats.samples += sum(r.n for r in requests)
        for output in outputs:
            stats.prompt_tokens += output.prompt_tokens
            stats.completion_tokens += sum(s.completion_tokens for s in output.samples)
        return outputs

    async def fill_scores(self, requests: Sequence[ScoreFillRequest]) -> list[ScoreFill]:
        """Constrained score filling (format guarantee / token probabilities), where supported."""
        if "score_fill" not in self.capabilities:
            raise BackendCapabilityError(f"the {self.name!r} backend cannot fill scores under a constraint")
        requests = list(requests)
        self.stats.fill_calls += 1
        try:
            fills = await self._fill_scores(requests)
        except GRMError:
            raise
        except self.foreign_errors as exc:
            raise self._map_error(exc) from exc
        if len(fills) != len(requests):
            raise BackendProtocolError(f"backend {self.name!r} returned {len(fills)} fills for {len(requests)} requests")
        for fill in fills:
            self.stats.prompt_tokens += fill.prompt_tokens
            self.stats.completion_tokens += fill.completion_tokens
        return fills

    @abc.abstractmethod
    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        """The engine's sampling: one output per request (never empty), ``request.n`` samples each."""

    async def _fill_scores(self, requests: list[ScoreFillRequest]) -> list[ScoreFill]:
        """The engine's score filling; only called when ``"score_fill"`` is among ``capabilities``."""
        raise BackendCapabilityError(f"the {self.name!r} backend cannot fill scores under a constraint")

    def _map_error(self, exc: Exception) -> GRMError:
        """One of :attr:`foreign_errors` as a grm-reward error (most specific first in overrides)."""
        return GenerationError(f"{self.name} generation failed: {type(exc).__name__}: {exc}")

    async def probe(self) -> str | None:
        """Whether the engine can judge now: None when ready, else the reason it cannot.

        Cheap and bounded in time (readiness checks call it); an in-process engine that loaded
        is ready. Backends behind a network check their server (and their circuit state).
        """
        return None

    async def aclose(self) -> None:
        """Release engines, connections and memory."""


def score_number_strings(score_range: tuple[int, int]) -> list[str]:
    """The decimal spellings of every valid score, e.g. ['1', ..., '10']."""
    lo, hi = score_range
    return [str(v) for v in range(lo, hi + 1)]


def score_block_regex(num_scores: int, score_range: tuple[int, int]) -> str:
    """A regex for what follows ``\\boxed{``: exactly ``num_scores`` in-range integers and ``}``.

    Usable as a vLLM / SGLang guided-decoding pattern.

    >>> score_block_regex(2, (1, 10))
    '(10|9|8|7|6|5|4|3|2|1), (10|9|8|7|6|5|4|3|2|1)\\\\}'
    """
    # Longest spellings first, so a regex engine prefers "10" over "1".
    numbers = sorted(score_number_strings(score_range), key=lambda s: (-len(s), -int(s)))
    one = "(" + "|".join(re.escape(s) for s in numbers) + ")"
    return ", ".join([one] * num_scores) + r"\}"
