"""Sampling judge trajectories for SPCT data, plain or hinted, through the backend protocol.

The RFT and meta-RM builders need what :class:`~grm_reward.GenerativeRewardModel` does not
expose: the judge prompt with a hint appended, and each sample's prompt and shown order. So
this module renders the same prompts the model renders (:func:`~grm_reward.prompts.select_template`,
:func:`~grm_reward.prompts.render_judge_prompt`, the config's system prompt), asks any
:class:`~grm_reward.backends.Backend` for the samples (those sharing an order share one request,
hence one prefill), and reads them strictly (:func:`~grm_reward.parsing.parse_judgement`; never
the format guarantee, since the judge is being taught the format).

Every sample sees the responses in its own seeded random order (paper §4: "responses are
shuffled before sampling"); a hinted sample's prompt ends with :data:`HINT_TEMPLATE`, naming the
best response by the 1-based position it is *shown* at (paper §3.2).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from grm_reward.backends.base import Backend, GenerationRequest
from grm_reward.config import GRMConfig
from grm_reward.errors import GRMError, InputError
from grm_reward.model import sample_seeds
from grm_reward.parsing import parse_judgement
from grm_reward.prompts import render_judge_prompt, select_template
from grm_reward.spct.items import PreferenceItem
from grm_reward.spct.rewards import is_correct
from grm_reward.types import Judgement, Message
from grm_reward.voting import unpermute

__all__ = ["HINT_TEMPLATE", "JudgeSample", "SpctSampler", "hint_text", "with_hint"]

#: The segment hinted sampling appends to the judge prompt (paper §3.2), ``{index}`` 1-based as shown.
HINT_TEMPLATE = "The best response is: Response {index}"


def hint_text(shown_best: int) -> str:
    """The hint for a best response shown at 0-based position ``shown_best``.

    >>> hint_text(1)
    'The best response is: Response 2'
    """
    return HINT_TEMPLATE.format(index=shown_best + 1)


def with_hint(prompt: str, shown_best: int) -> str:
    """The judge prompt with the hint appended on its own line."""
    return f"{prompt.rstrip()}\n{hint_text(shown_best)}"


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
    """Samples plain or hinted judge trajectories for items, with a config's prompts and sampling settings.

    ``temperature`` defaults to the config's; pass it when sampling more than one trajectory
    per item from a k=1 config (whose default is greedy). ``threshold`` is the single-response
    threshold of :func:`~grm_reward.spct.rewards.is_correct`.
    """

    def __init__(
        self,
        backend: Backend,
        config: GRMConfig,
        *,
        temperature: float | None = None,
        threshold: int | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.temperature = config.effective_temperature if temperature is None else temperature
        self.threshold = threshold

    def messages(self, item: PreferenceItem, order: Sequence[int], *, hinted: bool = False) -> tuple[Message, ...]:
        """The judge's chat input for ``item`` shown in ``order`` (raises :class:`InputError` if it cannot be rendered)."""
        cfg = self.config
        if item.n > cfg.max_responses:
            raise InputError(f"{item.n} responses exceed max_responses={cfg.max_responses}")
        try:
            template = select_template(cfg.template, num_responses=item.n, has_principles=False)
            text = render_judge_prompt(item.request, order, template, cfg.score_range)
        except GRMError as exc:
            raise InputError(str(exc)) from exc
        if hinted:
            if item.best is None:
                raise InputError("hinted sampling needs a best response (n >= 2)")
            text = with_hint(text, list(order).index(item.best))
        messages: list[Message] = []
        if cfg.system_prompt:
            messages.append({"role": "system", "content": cfg.system_prompt})
        messages.append({"role": "user", "content": text})
        return tuple(messages)

    def orders(self, item: PreferenceItem, count: int, purpose: str) -> list[tuple[int, ...]]:
        """``count`` seeded shown orders for ``item`` (all the identity when the config says shuffle='none')."""
        identity = tuple(range(item.n))
        if self.config.shuffle == "none" or item.n == 1:
            return [identity] * count
        rng = random.Random(self._seed(item, f"{purpose}:order"))
        orders = []
        for _ in range(count):
            order = list(identity)
            rng.shuffle(order)
            orders.append(tuple(order))
        return orders

    async def sample(
        self, items: Sequence[PreferenceItem], count: int, *, hinted: bool = False
    ) -> list[list[JudgeSample]]:
        """``count`` trajectories per item, in one backend call; one list per item, in order.

        Raises :class:`InputError` naming the item if one cannot be rendered (the caller skips it)
        and the backend's errors as they come.
        """
        if count < 1:
            raise InputError(f"samples must be at least 1, got {count}")
        purpose = "hinted" if hinted else "plain"
        requests: list[GenerationRequest] = []
        plan: list[tuple[int, tuple[int, ...], tuple[Message, ...], list[int]]] = []
        for index, item in enumerate(items):
            orders = self.orders(item, count, purpose)
            seeds = sample_seeds(orders, functools.partial(self._group_seed, item, purpose))
            groups: dict[tuple[int, ...], list[int]] = {}
            for j, order in enumerate(orders):
                groups.setdefault(order, []).append(j)
            for order, members in groups.items():
                try:
                    shown = self.messages(item, order, hinted=hinted)
                except InputError as exc:
                    raise InputError(f"item {item.id}: {exc}") from exc
                requests.append(
                    GenerationRequest(
                        messages=shown,
                        n=len(members),
                        seed=seeds[members[0]],  # the core's seed rule: member i is seeded base + i
                        max_tokens=self.config.max_new_tokens,
                        temperature=self.temperature,
                        top_p=self.config.top_p,
                    )
                )
                plain = self.messages(item, order) if hinted else shown
                plan.append((index, order, plain, members))
        outputs = await self.backend.generate(requests) if requests else []
        if len(outputs) != len(requests):
            raise GRMError(f"backend {self.backend.name!r} returned {len(outputs)} outputs for {len(requests)} requests")
        results: list[list[JudgeSample | None]] = [[None] * count for _ in items]
        for (index, order, plain, members), request, output in zip(plan, requests, outputs):
            if len(output.samples) != len(members):
                raise GRMError(
                    f"backend {self.backend.name!r} returned {len(output.samples)} samples, {len(members)} were asked for"
                )
            for j, seed, generation in zip(members, request.seeds, output.samples):
                results[index][j] = self._read(items[index], order, plain, hinted, seed, generation)
        return [[s for s in row if s is not None] for row in results]

    def _read(
        self, item: PreferenceItem, order: tuple[int, ...], messages: tuple[Message, ...], hinted: bool, seed: int,
        generation: object,
    ) -> JudgeSample:
        text = str(getattr(generation, "text", ""))
        finish_reason = getattr(generation, "finish_reason", None)
        parsed = parse_judgement(text, item.n, self.config.score_range)
        reason = parsed.reason
        if reason is not None and finish_reason == "length" and not reason.startswith("truncated"):
            reason = f"truncated: the sample hit max_new_tokens={self.config.max_new_tokens} ({reason})"
        shown_best = None if item.best is None else order.index(item.best)
        correct = is_correct(
            parsed.scores, best=shown_best, label=item.label, score_range=self.config.score_range,
            threshold=self.threshold,
        )
        return JudgeSample(
            item=item,
            hinted=hinted,
            order=order,
            messages=messages,
            text=text,
            shown_scores=None if parsed.scores is None else tuple(parsed.scores),
            reason=reason,
            correct=correct,
            seed=seed,
            completion_tokens=int(getattr(generation, "completion_tokens", 0)),
            finish_reason=finish_reason,
        )

    def _group_seed(self, item: PreferenceItem, purpose: str, order: tuple[int, ...]) -> int:
        """Base seed of the samples shown in ``order`` (below 2**31 - 2048, as the core's)."""
        return self._seed(item, f"{purpose}:order:{order}") % (2**31 - 2048)

    def _seed(self, item: PreferenceItem, purpose: str) -> int:
        payload = json.dumps([item.id, item.prompt_json(), list(item.responses)], ensure_ascii=False, default=str)
        digest = hashlib.blake2b(f"{self.config.seed}|{payload}|{purpose}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") & 0x7FFFFFFF
