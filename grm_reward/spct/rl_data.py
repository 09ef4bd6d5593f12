"""Online-RL data for the judge: judge prompts with what the rule reward needs (paper §3.2, Eq. 11).

One row per item, its responses in a seeded random order (a different order per item, so the
policy cannot learn a position)::

    {"prompt": [{"role": "user", "content": <judge prompt>}], "num_responses": 2,
     "best": 1, "label": null, "id": "item-7", "score_range": [1, 10]}

``best`` is the 0-based position the best response is **shown** at (the judge's scores are in
shown order), null for a single response; ``label`` is the single response's 0/1 label, null
otherwise; ``score_range`` is the range the prompt asks for. That is exactly what
:func:`~grm_reward.spct.rewards.rule_reward` takes::

    rule_reward(completion, row["num_responses"], best=row["best"], label=row["label"],
                score_range=tuple(row["score_range"]))

A system prompt in the config comes first in ``prompt``.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from grm_reward.config import GRMConfig
from grm_reward.errors import GRMError, InputError
from grm_reward.prompts import render_judge_prompt, select_template
from grm_reward.spct.items import PreferenceItem
from grm_reward.types import Message

__all__ = ["rl_order", "rl_row"]


def rl_order(item: PreferenceItem, seed: int) -> list[int]:
    """The seeded order an item's responses are shown in (``order[p]`` = index shown at position p)."""
    order = list(range(item.n))
    key = hashlib.blake2b(f"{seed}|{item.id}|{item.responses!r}".encode(), digest_size=8).hexdigest()
    random.Random(f"grm-reward-rl|{key}").shuffle(order)
    return order


def rl_row(item: PreferenceItem, config: GRMConfig, seed: int = 0) -> dict[str, Any]:
    """The RL row of ``item`` (see the module docstring); raises :class:`InputError` if it cannot be rendered."""
    if item.n > config.max_responses:
        raise InputError(f"{item.n} responses exceed max_responses={config.max_responses}")
    order = rl_order(item, seed)
    try:
        template = select_template(config.template, num_responses=item.n, has_principles=False)
        text = render_judge_prompt(item.request, order, template, config.score_range)
    except GRMError as exc:
        raise InputError(str(exc)) from exc
    prompt: list[Message] = []
    if config.system_prompt:
        prompt.append({"role": "system", "content": config.system_prompt})
    prompt.append({"role": "user", "content": text})
    return {
        "prompt": [dict(m) for m in prompt],
        "num_responses": item.n,
        "best": None if item.best is None else order.index(item.best),
        "label": item.label if item.n == 1 else None,
        "id": item.id,
        "score_range": list(config.score_range),
    }
