"""A scripted judge for tests and demos: your function writes the judge's text.

It fakes the engine at the one seam the core uses (``Backend.generate``), so every other part
of the pipeline (templates, shuffling, parsing, un-permuting, voting, the adapters and the
server) runs for real. The function sees what a real judge would see — the rendered prompt and
the responses in the order this sample shows them — plus the sample's seed.

>>> import asyncio
>>> from grm_reward import GenerativeRewardModel
>>> def judge(call):   # longer is better, whatever the position
...     return "Scores: \\\\boxed{" + ", ".join(str(min(10, len(r))) for r in call.responses) + "}"
>>> rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=4)
>>> rm.score("Say hi", ["hi", "hello there"]).votes
[8.0, 40.0]
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grm_reward.backends.base import (
    Backend,
    Generation,
    GenerationOutput,
    GenerationRequest,
    ScoreFill,
    ScoreFillRequest,
)
from grm_reward.types import Message, message_text

__all__ = ["FillCall", "JudgeCall", "ScriptedBackend", "shown_responses"]

_RESPONSE_BLOCK = re.compile(
    r"\[The Begin of Response(?: (\d+))?\]\n(.*?)\n\[The End of Response(?: \1)?\]", re.DOTALL
)


def shown_responses(prompt: str) -> list[str]:
    """The responses in a rendered judge prompt, in the order it shows them."""
    return [m.group(2) for m in _RESPONSE_BLOCK.finditer(prompt)]


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """What a scripted judge sees for one sample."""

    prompt: str
    messages: tuple[Message, ...]
    responses: list[str]
    seed: int
    sample_index: int
    assistant_prefix: str | None

    @property
    def rng(self) -> random.Random:
        """A random generator seeded by this sample's seed."""
        return random.Random(self.seed)


@dataclass(frozen=True, slots=True)
class FillCall:
    """What a scripted judge sees when asked to fill scores under the format guarantee."""

    prompt: str
    assistant_prefix: str
    responses: list[str]
    num_scores: int
    score_range: tuple[int, int]


JudgeFn = Callable[[JudgeCall], str]
FillFn = Callable[[FillCall], "list[int] | tuple[list[int], list[float]]"]


class ScriptedBackend(Backend):
    """A backend whose judge is a Python function (or a fixed list of texts, used in turn).

    ``fill`` (optional) answers forced score filling: it returns the integers, or
    ``(integers, expectations)`` to also serve token-probability scoring. ``delay`` makes each
    ``generate`` call sleep, to stand in for a slow engine. Token counts are whitespace words.
    Every request is kept in ``requests`` for tests to inspect; ``record=False`` keeps none (long
    runs such as benchmarks would otherwise grow without bound).
    """

    name = "scripted"
    #: The judge function's exceptions are the test's own: they pass unchanged.
    foreign_errors = ()

    def __init__(
        self,
        judge: JudgeFn | Sequence[str],
        *,
        fill: FillFn | None = None,
        delay: float = 0.0,
        record: bool = True,
    ) -> None:
        super().__init__()
        if callable(judge):
            self._judge: JudgeFn = judge
        else:
            texts = list(judge)
            if not texts:
                raise ValueError("ScriptedBackend needs a judge function or at least one text")
            counter = iter(range(1 << 62))
            self._judge = lambda call: texts[next(counter) % len(texts)]
        self._fill = fill
        self.delay = delay
        if fill is not None:
            self.capabilities = frozenset({"score_fill", "token_prob"})
        self.record = record
        self.requests: list[GenerationRequest] = []

    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        if self.delay:
            await asyncio.sleep(self.delay)
        outputs = []
        for request in requests:
            if self.record:
                self.requests.append(request)
            prompt = _last_user_text(request.messages)
            responses = shown_responses(prompt)
            prompt_tokens = sum(len(message_text(m).split()) for m in request.messages)
            samples = []
            for j, seed in enumerate(request.seeds):
                call = JudgeCall(prompt, request.messages, responses, seed, j, request.assistant_prefix)
                text = self._judge(call)
                samples.append(Generation(text=text, completion_tokens=len(text.split())))
            self.stats.prefill_tokens += prompt_tokens
            outputs.append(GenerationOutput(samples=samples, prompt_tokens=prompt_tokens))
        return outputs

    async def _fill_scores(self, requests: list[ScoreFillRequest]) -> list[ScoreFill]:
        if self._fill is None:
            return await super()._fill_scores(requests)
        results = []
        for request in requests:
            prompt = _last_user_text(request.messages)
            call = FillCall(
                prompt,
                request.assistant_prefix,
                shown_responses(prompt),
                request.num_scores,
                request.score_range,
            )
            answer = self._fill(call)
            if isinstance(answer, tuple):
                values, expected = list(answer[0]), [float(x) for x in answer[1]]
            else:
                values, expected = list(answer), None
            if request.expectation and expected is None:
                expected = [float(v) for v in values]
            results.append(ScoreFill(values=values, expected=expected if request.expectation else None))
        return results


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""
