"""Sampling judge trajectories for SPCT data, plain or hinted, through the model's judging step.

:class:`SpctSampler` asks :meth:`GenerativeRewardModel.ajudge_batch` (the core's planning:
seeded shown orders, one prompt per order, the seed rule) and reads each sample strictly
(never the format guarantee: the judge is being taught the format). A hinted prompt ends with
:data:`~grm_reward.planning.HINT_TEMPLATE` (paper §3.2). See docs/spct.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grm_reward.errors import InputError
from grm_reward.planning import HINT_TEMPLATE, hint_text, plan_request, with_hint
from grm_reward.spct.items import PreferenceItem
from grm_reward.spct.rewards import is_correct
from grm_reward.types import Judgement, Message
from grm_reward.voting import unpermute

if TYPE_CHECKING:
    from grm_reward.model import GenerativeRewardModel, Judging

__all__ = ["HINT_TEMPLATE", "JudgeSample", "SpctSampler", "hint_text", "with_hint"]


@dataclass(frozen=True, slots=True)
class JudgeSample:
    """One judge trajectory for an item.

    ``order[p]`` is the index (into ``item.responses``) of the response shown as Response p+1;
    ``shown_scores`` are the scores as the judge wrote them (in shown order; None if unreadable,
    ``reason`` says why). ``messages`` is the judge input **without** the hint, as the judge sees
    it at inference. ``correct`` is Eq. 10 read strictly.
    """

    item: PreferenceItem
    hinted: bool
    order: tuple[int, ...]
    messages: tuple[Message, ...]
    text: str
    shown_scores: tuple[int, ...] | None
    reason: str | None
    correct: bool
    seed: int
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def shown_best(self) -> int | None:
        """The 0-based position the best response was shown at (None for a single response)."""
        return None if self.item.best is None else self.order.index(self.item.best)

    def judgement(self) -> Judgement:
        """The sample as the core's :class:`~grm_reward.types.Judgement` (scores in the item's order)."""
        scores = None if self.shown_scores is None else [int(s) for s in unpermute(self.shown_scores, self.order)]
        return Judgement(text=self.text, scores=scores, order=list(self.order), reason=self.reason, seed=self.seed)


class SpctSampler:
    """Samples plain or hinted judge trajectories for items with a model's judge, prompts and settings.

    ``temperature`` defaults to the config's; pass it when sampling more than one trajectory
    per item from a k=1 config (whose default is greedy). ``threshold`` is the single-response
    threshold of :func:`~grm_reward.spct.rewards.is_correct`.
    """

    def __init__(
        self, rm: GenerativeRewardModel, *, temperature: float | None = None, threshold: int | None = None
    ) -> None:
        self.rm = rm
        self.config = rm.config
        self.temperature = self.config.effective_temperature if temperature is None else temperature
        self.threshold = threshold

    def check(self, item: PreferenceItem) -> None:
        """Raise :class:`InputError` if ``item``'s judge prompt cannot be built."""
        plan_request(item.request, self.config, k=1)

    def sample(self, items: Sequence[PreferenceItem], count: int, *, hinted: bool = False) -> list[list[JudgeSample]]:
        """``count`` trajectories per item (blocking), in one backend call: see :meth:`asample`."""
        hints = self._hints(items, count, hinted)
        judged = self.rm.judge_batch(
            [item.request for item in items], hints=hints, k=count, temperature=self.temperature,
            purpose=_purpose(hinted),
        )
        return self._read(items, judged, hinted)

    async def asample(
        self, items: Sequence[PreferenceItem], count: int, *, hinted: bool = False
    ) -> list[list[JudgeSample]]:
        """``count`` trajectories per item, in one backend call; one list per item, in order.

        Raises :class:`InputError` naming the item if one cannot be rendered (the caller skips it)
        and the backend's errors as they come.
        """
        hints = self._hints(items, count, hinted)
        judged = await self.rm.ajudge_batch(
            [item.request for item in items], hints=hints, k=count, temperature=self.temperature,
            purpose=_purpose(hinted),
        )
        return self._read(items, judged, hinted)

    def _hints(self, items: Sequence[PreferenceItem], count: int, hinted: bool) -> list[int | None]:
        """The hint per item, after checking every item can be rendered (an error names the item)."""
        if count < 1:
            raise InputError(f"samples must be at least 1, got {count}")
        hints: list[int | None] = []
        for item in items:
            if hinted and item.best is None:
                raise InputError(f"item {item.id}: hinted sampling needs a best response (n >= 2)")
            hint = item.best if hinted else None
            try:
                plan_request(item.request, self.config, k=1, hint=hint)
            except InputError as exc:
                raise InputError(f"item {item.id}: {exc}") from exc
            hints.append(hint)
        return hints

    def _read(self, items: Sequence[PreferenceItem], judged: list[Judging], hinted: bool) -> list[list[JudgeSample]]:
        return [
            [self._sample(item, judging, judgement, hinted) for judgement in judging.judgements]
            for item, judging in zip(items, judged, strict=True)
        ]

    def _sample(self, item: PreferenceItem, judging: Judging, judgement: Judgement, hinted: bool) -> JudgeSample:
        order = tuple(judgement.order)
        shown = None if judgement.scores is None else tuple(judgement.scores[i] for i in order)
        shown_best = None if item.best is None else order.index(item.best)
        correct = is_correct(
            None if shown is None else list(shown), best=shown_best, label=item.label,
            score_range=self.config.score_range, threshold=self.threshold,
        )
        return JudgeSample(
            item=item,
            hinted=hinted,
            order=order,
            messages=judging.plan.group_of(order).unhinted,
            text=judgement.text,
            shown_scores=shown,
            reason=judgement.reason,
            correct=correct,
            seed=judgement.seed if judgement.seed is not None else 0,
            completion_tokens=judgement.completion_tokens,
            finish_reason=judgement.finish_reason,
        )


def _purpose(hinted: bool) -> str:
    """Plain and hinted draws of one item get independent orders and seeds."""
    return "hinted:" if hinted else "plain:"
