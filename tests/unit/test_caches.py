"""Reuse (issue 12): deduplication, the result cache and shared principles, against a scripted judge."""

from __future__ import annotations

import asyncio

import pytest

from grm_reward import ConfigError, GenerativeRewardModel, GRMConfig, InputError, Request
from grm_reward.backends import ScriptedBackend
from grm_reward.backends.scripted import JudgeCall
from grm_reward.batching import MicroBatcher
from grm_reward.caches import LRUStore, config_identity, dedup_batch, expand_result, principle_key, result_key
from grm_reward.planning import fingerprint
from grm_reward.prompts import principles_template_text
from tests.helpers import judge_text

PRINCIPLES_MARK = "set the judging criteria"  # a phrase of templates/principles.txt


def noisy_judge(call: JudgeCall) -> str:
    """Seeded per-sample noise on a per-response base score, so seeds and orders matter."""
    if PRINCIPLES_MARK in call.prompt:
        return principles_for(call.prompt)
    rng = call.rng
    return judge_text([max(1, min(10, len(r) % 7 + rng.randint(1, 4))) for r in call.responses])


def principles_for(prompt: str) -> str:
    query = prompt.split("#### Conversation Context ####\n", 1)[1].split("\n####", 1)[0]
    return f"Specific Criteria: 1. Answers {query!r} (Weight: 70%) 2. Brief (Weight: 30%)"


def make(judge=noisy_judge, **config):
    backend = ScriptedBackend(judge)
    return GenerativeRewardModel(backend=backend, **config), backend


def shown(backend: ScriptedBackend) -> list[int]:
    """Responses shown per judge prompt (principle prompts show none)."""
    return [r.messages[-1]["content"].count("[The Begin of Response") for r in backend.requests]


def principle_calls(backend: ScriptedBackend) -> list[str]:
    return [r.messages[-1]["content"] for r in backend.requests if PRINCIPLES_MARK in r.messages[-1]["content"]]


# --- stores and keys ---------------------------------------------------------------------------------
def test_lru_store_is_bounded_and_keeps_the_recently_used() -> None:
    store: LRUStore[int] = LRUStore(2)
    store.put("a", 1)
    store.put("b", 2)
    assert store.get("a") == 1  # "a" is now the most recent: "b" goes first
    store.put("c", 3)
    assert len(store) == 2 and "b" not in store and store.get("a") == 1 and store.get("c") == 3
    assert store.get("b") is None and (store.hits, store.misses) == (3, 1)
    with pytest.raises(ValueError):
        LRUStore(0)


def test_a_principle_key_names_judge_template_and_prompt() -> None:
    config = GRMConfig(k=4)
    template = principles_template_text()
    key = principle_key("vllm", config, template, "What is 2+2?")
    assert key == principle_key("vllm", GRMConfig(k=8, shuffle="none"), template, "What is 2+2?")  # sampling is not in it
    others = [
        principle_key("openai", config, template, "What is 2+2?"),  # another engine
        principle_key("vllm", config.updated(model="other/judge"), template, "What is 2+2?"),  # another model
        principle_key("vllm", config.updated(system_prompt="Be terse."), template, "What is 2+2?"),
        principle_key("vllm", config, template + " ", "What is 2+2?"),  # another template
        principle_key("vllm", config, template, "What is 2+3?"),  # another prompt
    ]
    assert len({key, *others}) == 6


def test_a_result_key_names_config_and_request() -> None:
    request = Request("q", ["a", "b"])
    identity = config_identity(GRMConfig(k=4), "scripted")
    key = result_key(identity, fingerprint(request))
    assert key == result_key(config_identity(GRMConfig(k=4, server={"port": 1}), "scripted"), fingerprint(request))
    assert key != result_key(config_identity(GRMConfig(k=4, seed=1), "scripted"), fingerprint(request))
    assert key != result_key(config_identity(GRMConfig(k=4), "openai"), fingerprint(request))
    for other in (Request("q", ["b", "a"]), Request("q", ["a", "b"], reference="a"), Request("q", ["a", "b"], principles="x")):
        assert key != result_key(identity, fingerprint(other))


def test_dedup_batch_and_expand_result_map_back() -> None:
    batch = dedup_batch([Request("q", ["a", "b", "a"]), Request("q", ["a", "b"]), Request("p", ["a"])], responses=True)
    assert [list(r.responses) for r in batch.unique] == [["a", "b"], ["a"]]
    assert batch.slots == [0, 0, 1] and batch.maps == [[0, 1, 0], [0, 1], [0]] and batch.first_input == [0, 2]
    requests_only = dedup_batch([Request("q", ["a", "a"]), Request("q", ["a", "a"])], responses=False)
    assert [list(r.responses) for r in requests_only.unique] == [["a", "a"]] and requests_only.maps == [[0, 1]] * 2


# --- deduplication -----------------------------------------------------------------------------------
def test_a_deduplicated_reward_equals_judging_the_request_without_its_duplicates() -> None:
    """The invariant: [a, b, a, c, b] is judged as [a, b, c] and every copy gets its original's reward."""
    plain, _ = make(k=4, seed=3)
    dedup, backend = make(k=4, seed=3, reuse={"dedup": True})
    responses = ["alpha", "beta!!", "alpha", "gamma gamma", "beta!!"]
    got = dedup.score("Which is best?", responses)
    want = plain.score("Which is best?", ["alpha", "beta!!", "gamma gamma"])
    mapping = [0, 1, 0, 2, 1]
    assert got.rewards == [want.rewards[u] for u in mapping]
    assert got.votes == [want.votes[u] for u in mapping]
    assert [s.scores for s in got.samples] == [[s.scores[u] for u in mapping] for s in want.samples]  # type: ignore[index]
    first = [0, 1, 3]  # the first copy of each distinct response
    assert [s.order for s in got.samples] == [[first[u] for u in s.order] for s in want.samples]
    assert got.best == (None if want.best is None else first[want.best]) and got.usage == want.usage
    assert set(shown(backend)) == {3}, "the judge was shown each distinct response once"


def test_identical_requests_of_a_batch_are_judged_once_and_counted_once() -> None:
    plain, plain_backend = make(k=2)
    dedup, backend = make(k=2, reuse={"dedup": True})
    batch = [("q", ["a one"]), ("q", ["b two"]), ("q", ["a one"]), ("p", ["a one"])]
    got, want = dedup.score_batch(batch), plain.score_batch(batch)
    assert [r.rewards for r in got] == [r.rewards for r in want]
    assert sum(r.n for r in backend.requests) == 3 * 2 and sum(r.n for r in plain_backend.requests) == 4 * 2
    assert [r.cached for r in got] == [False, False, True, False] and got[2].usage.completion_tokens == 0
    assert sum(r.usage.completion_tokens for r in got) == backend.stats.completion_tokens
    got[2].rewards[0] = -1.0  # a copy: changing one answer leaves its twin alone
    assert got[0].rewards[0] == want[0].rewards[0]


def test_group_members_with_one_completion_are_judged_once_through_the_batcher() -> None:
    rm, backend = make(k=2, reuse={"dedup": True})

    async def run() -> list[float | None]:
        batcher = MicroBatcher(rm, max_wait_s=0.05, group_by_prompt=True, max_group_size=8)
        results = await asyncio.gather(*(batcher.submit(Request("q", [c])) for c in ["same", "other", "same"]))
        await batcher.aclose()
        return [r.rewards[0] for r in results]

    rewards = asyncio.run(run())
    assert rewards[0] == rewards[2]
    assert set(shown(backend)) == {2}, "the listwise group [same, other, same] was shown as [same, other]"


def test_dedup_errors_name_the_input_request() -> None:
    rm, _ = make(k=1, template="single", reuse={"dedup": True})
    with pytest.raises(InputError) as err:
        rm.score_batch([("q", ["a"]), ("q", ["a"]), ("q", ["a", "b"])])
    assert err.value.index == 2 and str(err.value).startswith("request 2: ")
    small, _ = make(k=1, max_responses=2, reuse={"dedup": True})
    with pytest.raises(InputError, match="3 responses exceed max_responses=2"):
        small.score("q", ["a", "a", "a"])  # duplicates do not hide an oversized request


# --- result cache ------------------------------------------------------------------------------------
def test_a_repeated_request_is_answered_from_the_result_cache() -> None:
    rm, backend = make(k=4, reuse={"result_cache": 2})
    first = rm.score("q", ["a", "bb"])
    calls = len(backend.requests)
    again = rm.score("q", ["a", "bb"])
    assert len(backend.requests) == calls, "no judge call for a repeat"
    assert again.rewards == first.rewards and [s.text for s in again.samples] == [s.text for s in first.samples]
    assert again.cached and not first.cached and again.usage.completion_tokens == 0 < first.usage.completion_tokens
    want = list(first.rewards)
    first.rewards[0], again.samples[0].scores = -1.0, None  # the callers' copies; the cache keeps its own
    third = rm.score("q", ["a", "bb"])
    assert third.rewards == want and third.samples[0].scores is not None
    rm.score("q", ["bb", "a"])  # another request: a miss
    rm.score("q", ["a", "bb", "c"])  # a third: the least recent ("q", ["a", "bb"]) goes
    calls = len(backend.requests)
    assert not rm.score("q", ["a", "bb"]).cached and len(backend.requests) > calls


def test_a_failed_reward_is_not_cached() -> None:
    rm, backend = make(["I cannot decide."], k=2, reuse={"result_cache": 8})
    assert rm.score("q", ["a", "b"]).all_invalid
    calls = len(backend.requests)
    assert not rm.score("q", ["a", "b"]).cached and len(backend.requests) > calls


# --- shared principles -------------------------------------------------------------------------------
def test_shared_principles_are_written_once_per_prompt_and_used_by_every_critique() -> None:
    rm, backend = make(k=4, principles={"shared": True})
    group = [("Name a prime.", [c]) for c in ["2", "9", "7", "2"]]
    results = rm.score_batch(group)
    assert len(principle_calls(backend)) == 1, "one principle call for the whole group"
    critiques = [r.messages[-1]["content"] for r in backend.requests if PRINCIPLES_MARK not in r.messages[-1]["content"]]
    assert critiques and all("#### Given Principles ####\n1. Answers 'Name a prime.' (Weight: 70%)" in c for c in critiques)
    assert all(s.principles[0].text == "Answers 'Name a prime.' (Weight: 70%)" for r in results for s in r.samples)
    assert sum(r.usage.completion_tokens for r in results) == backend.stats.completion_tokens  # charged once
    rm.score("Name a prime.", ["11"])  # a later step repeating the prompt
    assert len(principle_calls(backend)) == 1


def test_a_cached_principle_is_used_only_for_its_own_prompt() -> None:
    rm, backend = make(k=2, principles={"shared": True})
    rm.score("First question?", ["a"])
    rm.score("Second question?", ["a"])
    assert len(principle_calls(backend)) == 2
    last = backend.requests[-1].messages[-1]["content"]
    assert "Answers 'Second question?'" in last and "First question?" not in last


def test_shared_principles_leave_given_principles_and_fall_back_when_none_are_written() -> None:
    rm, backend = make(k=2, principles={"shared": True})
    result = rm.score("q", ["a"], principles=["Be exact."])
    assert not principle_calls(backend) and [p.text for p in result.samples[0].principles] == ["Be exact."]

    def mute(call: JudgeCall) -> str:  # writes no principles: the judge-written path, asked once
        return "Nothing to add." if PRINCIPLES_MARK in call.prompt else judge_text([5] * len(call.responses))

    rm, backend = make(mute, k=2, principles={"shared": True})
    assert rm.score("q", ["a", "b"]).votes == [10.0, 10.0]
    rm.score("q", ["c", "d"])
    assert len(principle_calls(backend)) == 1
    assert "[General Evaluation Criteria]" in backend.requests[-1].messages[-1]["content"]  # the paper's template


def test_concurrent_batches_share_one_principle_call() -> None:
    rm, backend = make(k=2, principles={"shared": True})

    async def run() -> None:
        await asyncio.gather(*(rm.ascore_batch([("Same prompt", [c])]) for c in ["a", "b", "c"]))

    asyncio.run(run())
    assert len(principle_calls(backend)) == 1


def test_shared_principles_need_a_template_that_shows_them() -> None:
    with pytest.raises(ConfigError, match=r"principles\.shared"):
        GRMConfig(template="default", principles={"shared": True})
    assert GRMConfig(template="rubric", principles={"shared": True}).principles.shared


def test_expand_result_keeps_an_unchanged_result() -> None:
    rm, _ = make(k=1)
    result = rm.score("q", ["a", "b"])
    assert expand_result(result, [0, 1]) is result


def test_dedup_of_a_batch_with_more_text_than_is_planned_inline_maps_back() -> None:
    big = "x" * 40_000  # two copies: more text than the model plans on the event loop
    dedup, backend = make(k=2, reuse={"dedup": True})
    plain, _ = make(k=2)
    got = dedup.score("q", [big, "short", big])
    want = plain.score("q", [big, "short"])
    assert got.rewards == [want.rewards[0], want.rewards[1], want.rewards[0]] and set(shown(backend)) == {2}
