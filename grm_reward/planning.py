"""Planning: how one request is sampled, before any backend is asked (pure, no I/O).

A :class:`Plan` holds a request's k shown orders and seeds (the one seed rule, :func:`sample_seeds`)
and one :class:`PromptGroup` per distinct order: the judge's chat messages and the samples that
share them (hence one prefill). The reward path and the SPCT sampler both plan here; see
docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from grm_reward.config import GRMConfig
from grm_reward.errors import GRMError, InputError
from grm_reward.prompts import JudgeTemplate, render_judge_prompt, select_template
from grm_reward.prompts.defences import defend_requests
from grm_reward.types import DefenceRecord, Message, Request

__all__ = [
    "HINT_TEMPLATE",
    "Plan",
    "PromptGroup",
    "derive_seed",
    "fingerprint",
    "group_seed",
    "hint_text",
    "plan_request",
    "plan_requests",
    "sample_seeds",
    "shown_orders",
    "with_hint",
]

#: The segment hinted sampling appends to the judge prompt (paper §3.2), ``{index}`` 1-based as shown.
HINT_TEMPLATE = "The best response is: Response {index}"

#: Group base seeds lie below this, so base + i stays a positive int32 for every k <= 1024.
_GROUP_SEED_SPACE = 2**31 - 2048


class PromptGroup(NamedTuple):
    """The samples of one request shown in one order: they share one prompt (and its prefill)."""

    order: tuple[int, ...]
    samples: list[int]
    messages: tuple[Message, ...]
    #: ``messages`` without the hint (the judge's input at inference); ``messages`` when unhinted.
    unhinted: tuple[Message, ...]


@dataclass
class Plan:
    """How one request is sampled: its k seeds and orders, grouped by order into prompts."""

    request: Request
    template: JudgeTemplate
    fingerprint: str
    seeds: list[int]
    orders: list[tuple[int, ...]]
    groups: list[PromptGroup] = field(default_factory=list)
    #: the index of the best response the prompts hint at (SPCT's hinted sampling), if any
    hint: int | None = None
    #: what the reward-hacking defences did to each response (docs/reward-hacking.md)
    defences: list[DefenceRecord] = field(default_factory=list)

    def group_of(self, order: Sequence[int]) -> PromptGroup:
        """The prompt group of the samples shown in ``order``."""
        key = tuple(order)
        return next(g for g in self.groups if g.order == key)


def hint_text(shown_best: int) -> str:
    """The hint for a best response shown at 0-based position ``shown_best``.

    >>> hint_text(1)
    'The best response is: Response 2'
    """
    return HINT_TEMPLATE.format(index=shown_best + 1)


def with_hint(prompt: str, shown_best: int) -> str:
    """The judge prompt with the hint appended on its own line."""
    return f"{prompt.rstrip()}\n{hint_text(shown_best)}"


def plan_request(
    request: Request, config: GRMConfig, *, index: int | None = None, k: int | None = None,
    hint: int | None = None, purpose: str = "",
) -> Plan:
    """The plan of ``request`` under ``config`` (``k`` samples, the config's by default).

    ``hint`` (an index into the responses) appends :data:`HINT_TEMPLATE` naming its shown
    position; ``purpose`` salts the orders and seeds, so that differently-purposed draws of the
    same request (SPCT's plain and hinted samples) are independent. Raises :class:`InputError`
    (with ``index``) when the request cannot be rendered.
    """
    _check_size(request, config, index)
    (defended,) = _defend((request,), config)
    return _plan(request, config, defended, index=index, k=k, hint=hint, purpose=purpose)


def plan_requests(
    requests: Sequence[Request], config: GRMConfig, *, k: int | None = None,
    hints: Sequence[int | None] | None = None, purpose: str = "",
) -> list[Plan]:
    """:func:`plan_request` for each request of a batch (``hints[i]`` for request i); the batch's
    defences run first, in one loop (:func:`~grm_reward.prompts.defences.defend_requests` says why)."""
    for i, request in enumerate(requests):
        _check_size(request, config, i)
    defended = _defend(requests, config)
    return [
        _plan(request, config, defended[i], index=i, k=k, hint=None if hints is None else hints[i], purpose=purpose)
        for i, request in enumerate(requests)
    ]


def _defend(requests: Sequence[Request], config: GRMConfig) -> list[tuple[Request, list[DefenceRecord]]]:
    """The requests as the judge sees them, with the config's defences (one loop over the batch)."""
    defences = config.defences
    return defend_requests(
        requests, rewrite=defences.neutralise, flag=defences.flag_injections, score_range=config.score_range
    )


def _check_size(request: Request, config: GRMConfig, index: int | None) -> None:
    if request.n > config.max_responses:
        raise InputError(f"{request.n} responses exceed max_responses={config.max_responses}", index=index)


def _plan(
    request: Request, config: GRMConfig, defended: tuple[Request, list[DefenceRecord]], *, index: int | None,
    k: int | None, hint: int | None, purpose: str,
) -> Plan:
    n = request.n
    k = config.k if k is None else k
    if hint is not None and not 0 <= hint < n:
        raise InputError(f"a hint needs a best response among the {n} responses, got {hint}", index=index)
    try:
        template = select_template(config.template, num_responses=n, has_principles=request.principles is not None)
    except GRMError as exc:
        raise InputError(str(exc), index=index) from exc
    print_ = fingerprint(request)
    orders = shown_orders(config.shuffle, n, k, random.Random(derive_seed(config.seed, print_, f"{purpose}order")))
    seeds = sample_seeds(orders, lambda order: group_seed(config.seed, print_, order, purpose=purpose))
    # The judge (and the meta RM) see the defended responses; seeds come from the request as given.
    shown, defences = defended
    notice = config.defences.injection_notice and any(d.any_flagged or d.any_neutralised for d in defences)
    plan = Plan(shown, template, print_, seeds, orders, hint=hint, defences=defences)
    by_order: dict[tuple[int, ...], list[int]] = {}
    for j, order in enumerate(orders):
        by_order.setdefault(order, []).append(j)
    for order, samples in by_order.items():
        try:
            text = render_judge_prompt(shown, order, template, config.score_range, injection_notice=notice)
        except GRMError as exc:
            raise InputError(str(exc), index=index) from exc
        unhinted = _messages(config, text)
        messages = unhinted if hint is None else _messages(config, with_hint(text, order.index(hint)))
        plan.groups.append(PromptGroup(order, samples, messages, unhinted))
    return plan


def _messages(config: GRMConfig, text: str) -> tuple[Message, ...]:
    messages: list[Message] = []
    if config.system_prompt:
        messages.append({"role": "system", "content": config.system_prompt})
    messages.append({"role": "user", "content": text})
    return tuple(messages)


#: Strings at least this long enter a request's fingerprint by their own digest (see fingerprint).
_DIGEST_CHARS = 16_384


def fingerprint(request: Request) -> str:
    """The request's identity, for its seeds. Runs on the event loop: a string of ``_DIGEST_CHARS`` or
    more is hashed directly (5x cheaper than JSON-escaping it, measured on 262K-char prompts);
    shorter ones are JSON-encoded as they always were, so their fingerprints (and seeds) are unchanged."""

    def digest_long(value: Any) -> Any:
        if isinstance(value, str) and len(value) >= _DIGEST_CHARS:  # a dict: no string can collide with it
            raw = value.encode("utf-8", "surrogatepass")
            return {"blake2b": hashlib.blake2b(raw, digest_size=16).hexdigest(), "chars": len(value)}
        if isinstance(value, list):
            return [digest_long(item) for item in value]
        if isinstance(value, dict):
            return {key: digest_long(item) for key, item in value.items()}
        return value

    data = request.to_dict()
    # A string prompt leaves no text uncounted by text_chars: under the limit, nothing needs a digest.
    short = isinstance(request.prompt, str) and request.text_chars < _DIGEST_CHARS
    payload = json.dumps(data if short else digest_long(data), ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def derive_seed(base: int, fingerprint: str, purpose: str) -> int:
    """A seed for one purpose of one request, below 2**31 (fits every engine's seed type)."""
    digest = hashlib.blake2b(f"{base}|{fingerprint}|{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def group_seed(base: int, fingerprint: str, order: Sequence[int], *, purpose: str = "") -> int:
    """The base seed of the samples of one request shown in ``order``."""
    key = purpose + "order:" + ",".join(str(i) for i in order)
    return derive_seed(base, fingerprint, key) % _GROUP_SEED_SPACE


def sample_seeds(orders: Sequence[Sequence[int]], base_of: Callable[[tuple[int, ...]], int]) -> list[int]:
    """The seed rule: sample j's seed is its shown order's base seed + its rank among the samples
    shown in that order so far.

    The samples sharing an order become one generation request ``(n, seed=base)``, and sample i of
    it is seeded ``base + i``, which is what vLLM does with ``n`` (``ParentRequest``), what a
    fan-out of single requests sends, and what :class:`Judgement.seed` records. Sample j's seed
    depends only on ``orders[:j + 1]``, never on k, so fewer samples are a prefix of more.

    >>> sample_seeds([[0, 1], [1, 0], [0, 1], [0, 1]], lambda order: 100 if order == (0, 1) else 500)
    [100, 500, 101, 102]
    """
    ranks: dict[tuple[int, ...], int] = {}
    seeds = []
    for order in orders:
        key = tuple(order)
        rank = ranks.get(key, 0)
        ranks[key] = rank + 1
        seeds.append(base_of(key) + rank)
    return seeds


def shown_orders(shuffle: str, n: int, k: int, rng: random.Random) -> list[tuple[int, ...]]:
    """The order responses are shown in, for each of the k samples (``shuffle`` as in the config)."""
    identity = tuple(range(n))
    if shuffle == "none" or n == 1:
        return [identity] * k
    if shuffle == "balanced":
        base = list(identity)
        rng.shuffle(base)
        return [tuple(base[j % n :] + base[: j % n]) for j in range(k)]
    orders = []
    for _ in range(k):
        order = list(identity)
        rng.shuffle(order)
        orders.append(tuple(order))
    return orders
