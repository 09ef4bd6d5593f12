"""Shared-prefix prefill plans (pure): the levels spell every prompt, and shared prefixes run once."""

from __future__ import annotations

import random

import pytest

from grm_reward.backends._prefix import (
    MIN_SHARED_TOKENS,
    PrefillLevel,
    cheapest_plan,
    padded_cost,
    plan_cost,
    prefill_levels,
)


def spelled(levels: list[PrefillLevel]) -> list[list[int]]:
    """Each last-level row's tokens, following the parents back through the levels."""
    rows: list[list[int]] = [[]]
    for level in levels:
        rows = [rows[parent] + segment for parent, segment in zip(level.parents, level.segments)]
    return rows


def real_tokens(levels: list[PrefillLevel]) -> int:
    return sum(len(s) for level in levels for s in level.segments)


def test_a_listwise_request_runs_its_head_once_and_each_order_s_tail() -> None:
    rng = random.Random(0)
    head = [rng.randrange(1000) for _ in range(300)]
    responses = [[1000 + 10 * i + t for t in range(40)] for i in range(8)]
    orders = [rng.sample(range(8), 8) for _ in range(4)]
    while len({o[0] for o in orders}) < 4:  # distinct first responses: nothing shared after the head
        orders = [rng.sample(range(8), 8) for _ in range(4)]
    tail = [7] * 25  # order-independent text after the responses is per order
    prompts = [head + [t for i in order for t in responses[i]] + tail for order in orders]
    levels = prefill_levels(prompts)
    assert spelled(levels) == prompts
    assert len(levels) == 2 and levels[0].segments == [head]
    assert real_tokens(levels) == len(head) + 4 * (8 * 40 + 25)
    assert padded_cost(levels) < padded_cost([PrefillLevel([0] * 4, prompts)])


def test_a_batch_of_requests_shares_the_template_head_and_each_request_its_query() -> None:
    template, queries = list(range(200)), [[500 + q] * 30 for q in range(3)]
    prompts = [template + query + [901 + o, 900 + q] * 10 for q, query in enumerate(queries) for o in range(4)]
    levels = prefill_levels(prompts)
    assert spelled(levels) == prompts
    assert [len(level.segments) for level in levels] == [1, 3, 12]
    assert real_tokens(levels) == 200 + 3 * 30 + 12 * 20


def test_prefixes_shorter_than_the_threshold_are_run_per_branch() -> None:
    short = [1] * (MIN_SHARED_TOKENS - 1)
    prompts = [[*short, 2, 3], [*short, 4, 5]]
    levels = prefill_levels(prompts)
    assert len(levels) == 1 and spelled(levels) == prompts
    assert prefill_levels(prompts, min_shared=1)[0].segments == [short]


def test_a_prompt_that_is_a_prefix_of_another_and_empty_prompts() -> None:
    base = list(range(40))
    prompts = [base, base + [99] * 20, [], base[:10]]
    levels = prefill_levels(prompts)
    assert spelled(levels) == prompts
    assert real_tokens(levels) == 40 + 20 + 10
    assert prefill_levels([]) == []
    assert spelled(prefill_levels([[5, 6]])) == [[5, 6]]


def test_random_batches_are_spelled_exactly_and_no_token_runs_twice_where_shared() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        stems = [[rng.randrange(50) for _ in range(rng.randrange(0, 60))] for _ in range(rng.randrange(1, 4))]
        prompts: list[list[int]] = []
        for _ in range(rng.randrange(1, 12)):
            prompt = rng.choice(stems) + [rng.randrange(50) for _ in range(rng.randrange(0, 30))]
            if prompt not in prompts:
                prompts.append(prompt)
        levels = prefill_levels(prompts)
        assert spelled(levels) == prompts
        assert all(len(level.parents) == len(level.segments) for level in levels)
        assert len(levels[-1].segments) == len(prompts)
        assert real_tokens(levels) <= sum(map(len, prompts))


def test_prompts_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        prefill_levels([[1, 2], [1, 2]])


def plan_of(prompts, *, share=True, window=None, decode=8):
    """The transformers backend's choice of plan, without a model (the choice needs none)."""
    from grm_reward.backends.transformers import TransformersBackend

    backend = TransformersBackend.__new__(TransformersBackend)
    backend.share_prefixes, backend.sliding_window, backend.token_cost = share, window, 3000.0  # the embedded judge's
    return backend._prefill_plan(prompts, decode)


def test_the_backend_shares_only_when_it_pays_and_stays_exact() -> None:
    head = list(range(100))
    prompts = [head + [200 + i] * 30 for i in range(4)]
    assert len(plan_of(prompts)) == 2
    assert len(plan_of(prompts, share=False)) == 1
    assert len(plan_of(prompts[:1])) == 1
    # A sliding window that the padded rows plus the generation would overrun: prefill whole.
    assert len(plan_of(prompts, window=135)) == 1 and len(plan_of(prompts, window=140)) == 2
    # Two families whose long parts fall on different levels: every row of a level is as wide as its
    # widest segment, so the plan would run more padded positions than prefilling each prompt whole.
    long_head = [[1] * 1000 + [10 + i] for i in range(4)]
    long_tails = [[2] * 20 + [20 + i] * 1000 for i in range(4)]
    lopsided = long_head + long_tails
    assert len(prefill_levels(lopsided)) == 2 and len(plan_of(lopsided)) == 1


def test_a_tree_as_deep_as_the_batch_falls_back_to_whole_prompts() -> None:
    nested = [[1] * i for i in range(1, 700)]  # each prompt a prefix of the next: depth 699
    with pytest.raises(RecursionError):
        prefill_levels(nested)
    assert plan_of(nested) == [PrefillLevel([0] * len(nested), nested)]


def listwise_batch(rng: random.Random, requests: int = 4, k: int = 4, g: int = 8) -> list[list[int]]:
    """Judge prompts shaped like a backend batch of listwise requests: a template head, the request's
    query, its G responses in k shown orders (two of them with the same first response), then the
    order-independent rest of the template."""
    head, tail = [rng.randrange(1000) for _ in range(300)], [7] * 25
    prompts = []
    for q in range(requests):
        query = [2000 + 40 * q + t for t in range(30)]
        responses = [[3000 + 200 * q + 20 * i + t for t in range(rng.randrange(20, 30))] for i in range(g)]
        firsts = rng.sample(range(g), min(g, k - 1))
        firsts = [firsts[0], *firsts][:k]  # orders 0 and 1 show the same response first, the others not
        orders = [[first, *rng.sample([i for i in range(g) if i != first], g - 1)] for first in firsts]
        for order in orders:
            prompt = head + query + [t for i in order for t in responses[i]] + tail
            if prompt not in prompts:  # the backend runs each distinct prompt once
                prompts.append(prompt)
    return prompts


def test_four_listwise_requests_run_head_queries_then_whole_rests_without_padding() -> None:
    prompts = listwise_batch(random.Random(7))
    tree = prefill_levels(prompts)
    assert [len(level.segments) for level in tree] == [1, 4, 12, 16]  # the pairs' first response shared too
    plan = plan_of(prompts)
    # Sharing the first response of a pair would pad the rest of the batch to it: merged away. The plan
    # pads no more than the whole prompts do (the prompts of a request are equally long).
    assert [len(level.segments) for level in plan] == [1, 4, 16] and spelled(plan) == prompts
    whole = [PrefillLevel([0] * len(prompts), prompts)]
    assert padded_cost(plan) - real_tokens(plan) == padded_cost(whole) - real_tokens(whole)
    assert padded_cost(plan) < padded_cost(tree)
    assert sum(max(map(len, level.segments)) for level in plan) == max(map(len, prompts))  # the cache width
    assert plan_cost(plan, token_cost=3000.0) < plan_cost(tree, token_cost=3000.0)


def test_the_cheapest_plan_spells_every_prompt_and_costs_no_more_than_the_tree_or_whole_prompts() -> None:
    rng = random.Random(99)
    for trial in range(200):
        if trial % 4 == 0:
            prompts = listwise_batch(rng, requests=rng.randrange(1, 4), k=rng.randrange(2, 5), g=rng.randrange(2, 6))
        else:
            stems = [[rng.randrange(50) for _ in range(rng.randrange(0, 80))] for _ in range(rng.randrange(1, 4))]
            prompts = []
            for _ in range(rng.randrange(1, 12)):
                prompt = rng.choice(stems) + [rng.randrange(50) for _ in range(rng.randrange(0, 60))]
                if prompt not in prompts:
                    prompts.append(prompt)
        token_cost = rng.choice([1.0, 300.0, 3000.0, 40000.0])
        plan = cheapest_plan(prompts, token_cost=token_cost)
        assert spelled(plan) == prompts
        assert len(plan[-1].segments) == len(prompts)
        cost = plan_cost(plan, token_cost=token_cost)
        assert cost <= plan_cost(prefill_levels(prompts), token_cost=token_cost)
        assert cost <= plan_cost([PrefillLevel([0] * len(prompts), prompts)], token_cost=token_cost)
