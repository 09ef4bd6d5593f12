"""GRMReward at its seams: what TRL passes in, what the judge sees, what comes back and is logged.

TRL itself is driven in tests/integration/test_trl_grpo.py; here the judge is scripted and the
call is made the way TRL 1.16 makes it (keyword arguments only, columns as aligned lists).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from collections import defaultdict

import pytest

from grm_reward import ConfigError, GenerativeRewardModel, GRMConfig, GRMReward, InputError
from grm_reward.adapters.trl import completion_text
from grm_reward.backends import ScriptedBackend
from grm_reward.backends.scripted import shown_responses
from tests.helpers import judge_text, quality_judge

QUALITY = {"a": 2, "b": 9, "c": 5, "d": 7, "e": 4, "f": 10}


def reward_for(quality: dict[str, int] = QUALITY, **settings) -> tuple[GRMReward, ScriptedBackend]:
    backend = ScriptedBackend(quality_judge(quality))
    config = {key: settings.pop(key) for key in list(settings) if key in GRMConfig.model_fields and key != "batching"}
    rm = GenerativeRewardModel(backend=backend, **{"k": 2, **config})
    return GRMReward(rm, **settings), backend


class Logs:
    """Stands in for TRL's `log_extra` / `log_metric` (GRPOTrainer._log_completion_extra / _log_metric)."""

    def __init__(self) -> None:
        self.extra: dict[str, list] = defaultdict(list)
        self.metrics: dict[str, list[float]] = defaultdict(list)

    def log_extra(self, column: str, values: list) -> None:
        self.extra[column].extend(values)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name].append(value)


def judged_sets(backend: ScriptedBackend) -> list[set[str]]:
    """The distinct sets of responses the judge was shown together (a request's k samples may use several orders)."""
    sets = {frozenset(shown_responses(r.messages[-1]["content"])) for r in backend.requests}
    return sorted((set(s) for s in sets), key=lambda s: (len(s), sorted(s)))


def call(reward, prompts, completions, **columns):
    return asyncio.run(reward(prompts=prompts, completions=completions, completion_ids=None, **columns))


def unit(score: int) -> float:
    return (score - 1) / 9


def test_rewards_land_on_their_completion_whatever_the_order() -> None:
    reward, backend = reward_for(batching={"max_group_size": 8})
    # Two GRPO groups, interleaved as no trainer would pass them, to prove the mapping.
    prompts = ["p1", "p2", "p1", "p2", "p1", "p2"]
    completions = ["a", "d", "b", "e", "c", "f"]
    rewards = call(reward, prompts, completions)
    assert rewards == [pytest.approx(unit(QUALITY[c])) for c in completions]
    # One listwise judge request per group, each showing its three completions.
    assert judged_sets(backend) == [{"a", "b", "c"}, {"d", "e", "f"}]


def test_groups_are_chunked_by_max_group_size() -> None:
    reward, backend = reward_for(batching={"max_group_size": 2})
    rewards = call(reward, ["p"] * 5, list("abcde"))
    assert rewards == [pytest.approx(unit(QUALITY[c])) for c in "abcde"]
    assert [len(s) for s in judged_sets(backend)] == [1, 2, 2]


def test_pointwise_mode_judges_each_completion_alone() -> None:
    reward, backend = reward_for(batching={"group_by_prompt": False})
    rewards = call(reward, ["p"] * 3, list("abc"))
    assert rewards == [pytest.approx(unit(QUALITY[c])) for c in "abc"]
    assert judged_sets(backend) == [{"a"}, {"b"}, {"c"}]


def test_one_backend_call_per_trl_call() -> None:
    reward, backend = reward_for()
    call(reward, ["p1", "p1", "p2", "p2"], list("abcd"))
    assert backend.stats.calls == 1


def test_conversational_prompts_and_completions() -> None:
    reward, backend = reward_for()
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Pick a letter."}]
    completions = [
        [{"role": "assistant", "content": "b", "reasoning_content": "I like b."}],
        [{"role": "assistant", "content": "c"}],
    ]
    assert call(reward, [prompt, prompt], completions) == [pytest.approx(unit(9)), pytest.approx(unit(5))]
    judge_prompt = backend.requests[0].messages[-1]["content"]
    assert "Pick a letter." in judge_prompt
    assert "I like b." not in judge_prompt  # reasoning is not shown by default


def test_reasoning_is_shown_only_when_asked() -> None:
    seen: list[str] = []

    def judge(call):
        seen.extend(call.responses)
        return judge_text([5] * len(call.responses))

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge))
    completion = [{"role": "assistant", "content": "42", "reasoning_content": "6 times 7."}]
    call(GRMReward(rm, include_reasoning=True), ["q"], [completion])
    assert seen == ["<think>\n6 times 7.\n</think>\n\n42"]


def test_completion_text_keeps_assistant_turns_only() -> None:
    completion = [
        {"role": "assistant", "content": "", "tool_calls": [{"name": "calc"}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
    ]
    assert completion_text(completion) == "It is 42."
    assert completion_text({"role": "assistant", "content": [{"type": "text", "text": "hi"}]}) == "hi"
    assert completion_text("plain") == "plain"
    with pytest.raises(InputError):
        completion_text([{"role": "assistant", "content": [{"type": "image"}]}])


def test_a_completion_of_the_wrong_type_is_an_input_error_naming_it() -> None:
    reward, backend = reward_for()
    for bad in (float("nan"), None, b"bytes"):  # a float was a TypeError from list(completion)
        with pytest.raises(InputError, match="completion 1: a completion must be a string or chat messages"):
            call(reward, ["q", "q"], ["a", bad])
    assert backend.requests == []


def test_a_missing_reference_from_pandas_is_no_reference() -> None:
    # a NaN in a reference column (pandas' missing value) reached the judge as the reference answer "nan"
    import numpy as np

    reward, backend = reward_for()
    call(reward, ["q", "q", "q"], ["a", "b", "c"], reference=[float("nan"), np.float32("nan"), "ok"])
    prompts = [r.messages[-1]["content"] for r in backend.requests]
    assert prompts and not any("nan" in p for p in prompts)


def test_reference_and_principles_columns_reach_the_judge() -> None:
    reward, backend = reward_for(batching={"group_by_prompt": False})
    call(
        reward,
        ["q1", "q2"],
        ["a", "b"],
        reference=["The answer is 4.", None],
        principles=[["Correctness matters most."], ""],
        other_column=[1, 2],  # any other dataset column is ignored
    )
    first, second = (r.messages[-1]["content"] for r in backend.requests)
    assert "The answer is 4." in first and "Correctness matters most." in first
    assert "Reference Answer" not in second and "Given Principles" not in second


def test_column_names_are_configurable() -> None:
    reward, backend = reward_for(reference_column="solution", principles_column=None)
    call(reward, ["q"], ["a"], solution=[72], principles=["ignored rubric"])
    prompt = backend.requests[0].messages[-1]["content"]
    assert "72" in prompt and "ignored rubric" not in prompt


def test_same_prompt_different_reference_are_different_groups() -> None:
    reward, backend = reward_for()
    call(reward, ["q", "q"], ["a", "b"], reference=["x", "y"])
    assert judged_sets(backend) == [{"a"}, {"b"}]


def test_unreadable_judge_gives_none_and_is_logged() -> None:
    def judge(call):  # cannot judge "e": no score block at all
        if "e" in call.responses:
            return "I am not sure."
        return quality_judge(QUALITY)(call)

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=2)
    logs = Logs()
    rewards = asyncio.run(
        GRMReward(rm, batching={"group_by_prompt": False}, on_failure="none")(
            prompts=["q"] * 3, completions=["a", "e", "b"], log_extra=logs.log_extra, log_metric=logs.log_metric
        )
    )
    assert rewards == [pytest.approx(unit(2)), None, pytest.approx(unit(9))]
    assert logs.extra["grm_votes"] == [[2, 2], [None, None], [9, 9]]
    assert logs.extra["grm_critique"][1] == ""
    assert logs.metrics["grm/invalid_share"] == [pytest.approx(1 / 3)]
    assert logs.metrics["grm/failed_share"] == [pytest.approx(1 / 3)]


def cannot_judge(*texts: str):
    """The quality judge, except that it writes no score block when shown one of `texts`."""

    def judge(call):
        if any(t in call.responses for t in texts):
            return "I am not sure."
        return quality_judge(QUALITY)(call)

    return judge


def test_a_failed_completion_gets_its_groups_mean_by_default() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(cannot_judge("e")), k=2)
    reward = GRMReward(rm, batching={"group_by_prompt": False})
    # Group p: a, e, b (e fails); group r: e, c (e fails); group s: e alone (nothing to average).
    prompts = ["p", "r", "p", "s", "p", "r"]
    completions = ["a", "e", "e", "e", "b", "c"]
    rewards = call(reward, prompts, completions)
    assert rewards == [
        pytest.approx(unit(2)),
        pytest.approx(unit(5)),  # the mean of its own group only
        pytest.approx((unit(2) + unit(9)) / 2),
        None,
        pytest.approx(unit(9)),
        pytest.approx(unit(5)),
    ]


def test_group_mean_respects_the_reference() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(cannot_judge("e")), k=2)
    rewards = call(GRMReward(rm, batching={"group_by_prompt": False}), ["q"] * 3, ["a", "e", "b"], reference=["x", "x", "y"])
    assert rewards == [pytest.approx(unit(2))] * 2 + [pytest.approx(unit(9))]


def test_group_mean_replaces_the_configs_failure_reward_too() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(cannot_judge("e")), k=2, failure_reward=0.0)
    assert call(GRMReward(rm, batching={"group_by_prompt": False}), ["q"] * 2, ["b", "e"]) == [pytest.approx(unit(9))] * 2
    assert call(GRMReward(rm, batching={"group_by_prompt": False}), ["q"], ["e"]) == [0.0]  # nothing to average: the config's value


def test_none_is_warned_about_once_when_group_mates_were_judged(caplog) -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(cannot_judge("e")), k=2)
    reward = GRMReward(rm, batching={"group_by_prompt": False}, on_failure="none")
    with caplog.at_level(logging.WARNING, logger="grm_reward.adapters.trl"):
        assert call(reward, ["p", "p"], ["e", "e"]) == [None, None]  # a wholly failed group: neutral, no warning
        assert not caplog.records
        for _ in range(2):
            assert call(reward, ["q", "q"], ["a", "e"]) == [pytest.approx(unit(2)), None]
    (record,) = caplog.records
    assert "on_failure='group_mean'" in record.getMessage() and "worst reward" in record.getMessage()


def test_on_failure_is_validated_and_pickled() -> None:
    with pytest.raises(ConfigError, match="on_failure"):
        reward_for(on_failure="zero")
    reward = GRMReward(backend="tests.helpers:length_backend", on_failure="none")
    assert pickle.loads(pickle.dumps(reward)).on_failure == "none"


def test_failure_reward_from_the_config_replaces_none() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(["no scores"]), failure_reward=0.0)
    assert call(GRMReward(rm), ["q"], ["a"]) == [0.0]


def test_logged_columns_and_metrics() -> None:
    def judge(call):  # the two samples disagree by 2 points
        shift = call.sample_index * 2
        return judge_text([QUALITY[r] - shift for r in call.responses], analysis="Checked each letter.")

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=2, shuffle="none")
    logs = Logs()
    asyncio.run(
        GRMReward(rm, name="helpful")(
            prompts=["q"] * 3, completions=list("bcd"), log_extra=logs.log_extra, log_metric=logs.log_metric
        )
    )
    assert set(logs.extra) == {"helpful_critique", "helpful_votes", "helpful_defences"}
    assert all(len(values) == 3 for values in logs.extra.values())
    assert logs.extra["helpful_critique"] == ["Checked each letter."] * 3
    assert logs.extra["helpful_votes"] == [[9, 7], [5, 3], [7, 5]]
    assert {k: v[0] for k, v in logs.metrics.items()} == {
        "helpful/invalid_share": 0.0,
        "helpful/forced_share": 0.0,
        "helpful/failed_share": 0.0,
        "helpful/vote_spread": 2.0,
        "helpful/samples_drawn": 2.0,
        "helpful/hacking/neutralised_share": 0.0,
        "helpful/hacking/injection_share": 0.0,
        "helpful/hacking/length_reward_corr": 0.0,  # all three completions are one character long
        "helpful/hacking/flagged_best_share": 0.0,
    }


def test_name_is_stable_and_overridable() -> None:
    assert GRMReward.__dict__["__name__"] == "grm"
    reward, _ = reward_for()
    assert reward.__name__ == "grm"
    assert reward_for(name="judge_b")[0].__name__ == "judge_b"
    with pytest.raises(ConfigError):
        reward_for(name="not a name")


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        reward_for(batching={"max_group_size": 0})
    rm = GenerativeRewardModel(backend=ScriptedBackend(["x"]))
    with pytest.raises(ConfigError, match="k"):
        GRMReward(rm, k=4)
    with pytest.raises(InputError, match="column 'reference'"):
        call(GRMReward(rm), ["q", "q"], ["a", "b"], reference=["only one"])
    with pytest.raises(InputError):
        call(GRMReward(rm), ["q"], ["a", "b"])


def test_builds_from_config_file_and_keywords(tmp_path) -> None:
    path = tmp_path / "grm.yaml"
    path.write_text("k: 3\nbackend: tests.helpers:length_backend\n")
    reward = GRMReward(str(path), seed=7)
    assert (reward.rm.config.k, reward.rm.config.seed) == (3, 7)
    assert GRMReward(GRMConfig(k=2), seed=1).rm.config.seed == 1
    assert GRMReward(k=5).rm.config.k == 5


def test_picklable_and_works_after_unpickling() -> None:
    reward = GRMReward(backend="tests.helpers:length_backend", k=2, name="grm_len", batching={"max_group_size": 2})
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "grm_len" and clone.batching.max_group_size == 2
    assert clone.rm.config == reward.rm.config
    assert call(clone, ["q", "q"], ["hi", "a much longer answer"]) == call(reward, ["q", "q"], ["hi", "a much longer answer"])


def test_sync_view_blocks_and_keeps_the_name() -> None:
    reward, _ = reward_for()
    sync = reward.as_sync()
    assert sync.__name__ == "grm"
    result: list = []
    thread = threading.Thread(target=lambda: result.append(sync(prompts=["q", "q"], completions=["b", "c"])))
    thread.start()
    thread.join()
    assert result == [[pytest.approx(unit(9)), pytest.approx(unit(5))]]
    assert pickle.loads(pickle.dumps(GRMReward(backend="tests.helpers:length_backend").as_sync())).__name__ == "grm"


def test_empty_batch() -> None:
    reward, backend = reward_for()
    assert call(reward, [], []) == []
    assert backend.stats.calls == 0


def test_old_grouping_keywords_name_the_batching_section() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(["x"]))
    for old in ({"group_by_prompt": False}, {"max_group_size": 2}):
        with pytest.raises(ConfigError, match=r"batching section.*GRMReward\(batching="):
            GRMReward(rm, **old)
    assert GRMReward(rm, batching={"max_group_size": 2}).batching.max_group_size == 2
    assert GRMReward(rm).batching.max_group_size == 4 and rm.config.batching.max_group_size is None
