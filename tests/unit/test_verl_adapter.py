"""The verl reward manager `grm` in process: verl's real config, verl's own loader, DataProto batches.

Plugin discovery in fresh processes, verl's RewardLoopManager across Ray workers and the launch
script are driven in tests/integration/test_verl_reward_loop.py.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import is_available

pytestmark = pytest.mark.skipif(not is_available("verl"), reason="needs grm-reward[verl]")

from grm_reward import ConfigError, GRMConfig  # noqa: E402
from tests.helpers import checksum_score  # noqa: E402

CHECKSUM = "tests.helpers:checksum_backend"


@pytest.fixture(scope="module")
def verl_modules():
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo.reward import load_reward_manager

    from grm_reward.adapters import verl as adapter
    from tests import verl_support

    return adapter, verl_support, get_reward_manager_cls, load_reward_manager


@pytest.fixture(scope="module")
def tokenizer(verl_modules):
    return verl_modules[1].word_tokenizer()


@pytest.fixture(scope="module")
def config(verl_modules):
    """Our overlay composed by Hydra, with the scripted judge and k=2."""
    return verl_modules[1].compose(["reward.grm.judge.backend=" + CHECKSUM, "reward.grm.judge.k=2"])


_MANAGERS: list = []


@pytest.fixture(autouse=True)
def close_manager_loops():
    """verl's RewardManagerBase opens an event loop per manager (a Ray worker keeps it for life); close it."""
    yield
    while _MANAGERS:
        loop = _MANAGERS.pop().loop
        if not loop.is_closed() and not loop.is_running():
            loop.close()


def manager_from(verl_modules, config, tokenizer, **kwargs):
    _, _, _, load_reward_manager = verl_modules
    kwargs.setdefault("reward_router_address", None)
    kwargs.setdefault("reward_model_tokenizer", None)
    manager = load_reward_manager(config, tokenizer, **kwargs)
    _MANAGERS.append(manager)
    return manager


def score_batch(manager, batch):
    """What a RewardLoopWorker does: one concurrent run_single per rollout, on one event loop."""

    async def run():
        return await asyncio.gather(*(manager.run_single(batch[i : i + 1]) for i in range(len(batch))))

    return asyncio.run(run())


ROWS = [
    {"prompt": "user what is two plus two assistant", "response": "four", "ground_truth": "4",
     "raw_prompt": [{"role": "user", "content": "What is two plus two?"}]},
    {"prompt": "user what is two plus two assistant", "response": "it is five the answer", "ground_truth": "4",
     "raw_prompt": [{"role": "user", "content": "What is two plus two?"}]},
    {"prompt": "user name a fruit assistant", "response": "apple", "ground_truth": None,
     "raw_prompt": [{"role": "user", "content": "Name a fruit."}]},
]


def test_overlay_composes_with_verl_and_selects_grm(config) -> None:
    assert config.reward.reward_manager.name == "grm"
    assert config.reward.reward_manager.source == "register"
    assert config.algorithm.adv_estimator == "grpo"
    assert config.reward.custom_reward_function.path == "pkg://grm_reward.adapters.verl"
    assert config.reward.grm.judge.k == 2


def test_overlay_judge_keys_are_grm_config_fields(verl_modules) -> None:
    from omegaconf import OmegaConf

    judge = OmegaConf.to_container(verl_modules[1].compose().reward.grm.judge)
    for key, value in judge.items():
        assert key in GRMConfig.model_fields, key
        if isinstance(value, dict):
            section = GRMConfig.model_fields[key].annotation
            assert set(value) <= set(section.model_fields), (key, set(value) - set(section.model_fields))


def test_verl_loader_builds_the_grm_manager_by_name_and_by_module_path(verl_modules, config, tokenizer) -> None:
    adapter, verl_support, get_reward_manager_cls, _ = verl_modules
    assert get_reward_manager_cls("grm") is adapter.GRMRewardManager
    by_name = manager_from(verl_modules, config, tokenizer)
    by_path = manager_from(
        verl_modules,
        verl_support.compose([
            "reward.grm.judge.backend=" + CHECKSUM,
            "reward.reward_manager.source=importlib",
            "reward.reward_manager.module.path=pkg://grm_reward.adapters.verl",
            "reward.reward_manager.name=GRMRewardManager",
        ]),
        tokenizer,
    )
    assert type(by_name) is type(by_path) is adapter.GRMRewardManager


def test_settings_without_the_overlay_use_plus_keys(verl_modules, tokenizer) -> None:
    config = verl_modules[1].compose(
        ["reward.reward_manager.name=grm", "+reward.grm.judge.backend=" + CHECKSUM, "+reward.grm.judge.batching.max_group_size=2"],
        overlay=False,
    )
    manager = manager_from(verl_modules, config, tokenizer)
    assert manager.batching.max_group_size == 2 and manager.judge_config.backend == CHECKSUM


def test_scores_a_batch_and_rm_scores_sit_at_the_last_valid_token(verl_modules, config, tokenizer) -> None:
    adapter, verl_support, _, _ = verl_modules
    manager = manager_from(verl_modules, config, tokenizer)
    batch = verl_support.rollout_batch(tokenizer, ROWS)
    outputs = score_batch(manager, batch)

    expected = [(checksum_score(r) - 1) / 9 for r in ("four", "it is five the answer", "apple")]
    assert [o["reward_score"] for o in outputs] == pytest.approx(expected)
    assert all(list(o["reward_extra_info"]) == list(adapter.EXTRA_INFO_KEYS) for o in outputs)
    rm_scores = manager.assemble_rm_scores(batch, [o["reward_score"] for o in outputs])
    for row, position in enumerate(verl_support.last_valid_token(batch)):
        assert rm_scores[row, position].item() == pytest.approx(expected[row])
        assert rm_scores[row].abs().sum().item() == pytest.approx(expected[row])  # nowhere else
    assert verl_support.last_valid_token(batch) == [1, 5, 1]  # "four <eos>", 6 words (no room for eos), "apple <eos>"


def test_an_empty_dataproto_is_an_input_error_and_the_manager_still_scores(verl_modules, config, tokenizer) -> None:
    from grm_reward import InputError

    _, verl_support, _, _ = verl_modules
    manager = manager_from(verl_modules, config, tokenizer)
    batch = verl_support.rollout_batch(tokenizer, ROWS)
    with pytest.raises(InputError, match="one trajectory per call: got an empty DataProto"):  # was an IndexError
        asyncio.run(manager.run_single(batch[0:0]))
    assert [o["reward_score"] for o in score_batch(manager, batch[0:1])] == pytest.approx([(checksum_score("four") - 1) / 9])


def test_concurrent_calls_share_one_batcher_and_groups_are_listwise(verl_modules, config, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    manager = manager_from(verl_modules, config, tokenizer)
    outputs = score_batch(manager, verl_support.rollout_batch(tokenizer, ROWS))
    backend = manager.rm.backend
    assert backend.stats.calls == 1  # three concurrent run_single calls, one backend batch
    _, batcher = manager._batcher
    assert batcher.stats.submitted == 3 and batcher.stats.grouped_requests == 2  # the two rollouts of the first prompt, judged together
    assert [o["reward_extra_info"]["grm_critique"] for o in outputs] == ["Checked 2.", "Checked 2.", "Checked 1."]


def test_what_the_judge_sees(verl_modules, config, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    manager = manager_from(verl_modules, config, tokenizer)
    batch = verl_support.rollout_batch(tokenizer, ROWS)
    request = manager.request(batch[1:2])
    assert request.prompt == [{"role": "user", "content": "What is two plus two?"}]  # raw_prompt, not tokens
    assert request.responses == ["it is five the answer"]  # padding and EOS stripped
    assert request.reference == "4" and request.principles is None
    assert manager.request(batch[2:3]).reference is None

    no_raw = verl_support.rollout_batch(tokenizer, [{k: v for k, v in ROWS[0].items() if k != "raw_prompt"}])
    assert manager.request(no_raw).prompt == "user what is two plus two assistant"  # decoded prompt tokens

    # Padding made of an ordinary token: only the attention mask says where prompt and response end.
    filler = tokenizer.convert_tokens_to_ids("maybe")
    padded = verl_support.rollout_batch(tokenizer, [ROWS[2] | {"raw_prompt": None}], pad_id=filler)
    assert manager.request(padded).prompt == "user name a fruit assistant"
    assert manager.request(padded).responses == ["apple"]


def test_colocated_batches_carry_only_the_raw_prompt(verl_modules, config, tokenizer) -> None:
    """verl 0.9's V1 trainer sends a colocated judge only prompts, responses, mask and raw_prompt."""
    _, verl_support, _, _ = verl_modules
    manager = manager_from(verl_modules, config, tokenizer)
    batch = verl_support.rollout_batch(tokenizer, ROWS)
    batch.non_tensor_batch = {"raw_prompt": batch.non_tensor_batch["raw_prompt"]}
    request = manager.request(batch[0:1])
    assert request.reference is None and request.principles is None and request.responses == ["four"]
    assert score_batch(manager, batch)[0]["reward_score"] == pytest.approx((checksum_score("four") - 1) / 9)


def test_extra_info_reference_and_principles(verl_modules, config, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    manager = manager_from(verl_modules, config, tokenizer)
    row = dict(ROWS[0], extra_info={"reference": "Four.", "principles": ["Correct arithmetic.", "Brevity."]})
    request = manager.request(verl_support.rollout_batch(tokenizer, [row]))
    assert request.reference == "Four." and request.principles == ["Correct arithmetic.", "Brevity."]

    plain = manager_from(
        verl_modules, verl_support.compose(["reward.grm.judge.backend=" + CHECKSUM,
                                            "reward.grm.ground_truth_as_reference=false",
                                            "reward.grm.principles_key=null"]), tokenizer
    )
    request = plain.request(verl_support.rollout_batch(tokenizer, [dict(ROWS[0], extra_info={"principles": "x"})]))
    assert request.reference is None and request.principles is None


def test_failures_keep_the_same_keys_and_get_the_failure_reward(verl_modules, tokenizer) -> None:
    adapter, verl_support, _, _ = verl_modules
    config = verl_support.compose(["reward.grm.judge.backend=" + CHECKSUM, "reward.grm.judge.failure_reward=-1.0"])
    manager = manager_from(verl_modules, config, tokenizer)
    rows = [dict(ROWS[0], raw_prompt=[{"role": "user", "content": "UNJUDGEABLE"}]), ROWS[2]]
    failed, ok = score_batch(manager, verl_support.rollout_batch(tokenizer, rows))
    assert list(failed["reward_extra_info"]) == list(ok["reward_extra_info"]) == list(adapter.EXTRA_INFO_KEYS)
    assert failed["reward_score"] == -1.0
    assert failed["reward_extra_info"] == {
        "grm_invalid_share": 1.0, "grm_forced_share": 0.0, "grm_failed": 1.0,
        "grm_vote_spread": 0.0, "grm_vote": 0.0, "grm_critique": "",
        "grm_neutralised": 0.0, "grm_injection": 0.0, "grm_response_chars": float(len(ROWS[0]["response"])),
        "grm_samples_drawn": 1.0,
    }
    assert ok["reward_extra_info"]["grm_failed"] == 0.0 and ok["reward_score"] >= 0.0


def refuses_five(config: object):
    """The checksum judge, except that it cannot read a judgement of a response mentioning "five"."""
    from grm_reward.backends import ScriptedBackend
    from tests.helpers import checksum_judge

    return ScriptedBackend(lambda call: "Not sure." if any("five" in r for r in call.responses) else checksum_judge(call))


def test_verl_grpo_reads_a_failed_rollout_as_the_worst_answer(verl_modules, tokenizer) -> None:
    """What verl 0.9 does with the manager's answer for a failed judgement (docs/verl.md, 'When the judge fails')."""
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    _, verl_support, _, _ = verl_modules
    config = verl_support.compose(
        ["reward.grm.judge.backend=tests.unit.test_verl_adapter:refuses_five", "reward.grm.judge.batching.group_by_prompt=false"]
    )
    manager = manager_from(verl_modules, config, tokenizer)
    rows = [ROWS[0], ROWS[1], dict(ROWS[0], response="it is four")]  # one GRPO group; ROWS[1] cannot be judged
    batch = verl_support.rollout_batch(tokenizer, rows)
    outputs = score_batch(manager, batch)
    assert [o["reward_extra_info"]["grm_failed"] for o in outputs] == [0.0, 1.0, 0.0]
    assert outputs[1]["reward_score"] == 0.0  # failure_reward unset: 0.0, the bottom of the unit scale
    # verl's own path from the scores to the advantages: rm_scores, then the GRPO estimator by uid.
    rm_scores = type(manager).assemble_rm_scores(batch, [o["reward_score"] for o in outputs])
    response_mask = batch.batch["attention_mask"][:, batch.batch["prompts"].size(1) :]
    advantages, _ = compute_grpo_outcome_advantage(rm_scores, response_mask, index=["g"] * 3)
    per_rollout = advantages.sum(-1) / response_mask.sum(-1)
    assert per_rollout[1] < 0 and per_rollout[1] == per_rollout.min()  # no mask: it is pushed down
    # A NaN instead would poison the whole group, so the settings refuse one.
    nan_scores = type(manager).assemble_rm_scores(batch, [float("nan") if o["reward_extra_info"]["grm_failed"] else o["reward_score"] for o in outputs])
    assert torch.isnan(compute_grpo_outcome_advantage(nan_scores, response_mask, index=["g"] * 3)[0]).all()
    with pytest.raises(ConfigError, match="failure_reward"):
        manager_from(verl_modules, verl_support.compose(["reward.grm.judge.failure_reward=nan"]), tokenizer)


def test_router_address_builds_the_openai_judge_config(verl_modules, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    config = verl_support.compose([
        "reward.reward_model.enable=True",
        "reward.reward_model.model_path=/models/DeepSeek-GRM-16B",
        "reward.grm.judge.k=4",
        "reward.grm.judge.max_new_tokens=512",
        "reward.grm.judge.openai.timeout_s=30",
    ])
    manager = manager_from(verl_modules, config, tokenizer, reward_router_address="10.1.2.3:30000")
    expected = GRMConfig(
        backend="openai",
        model="/models/DeepSeek-GRM-16B",
        k=4,
        max_new_tokens=512,
        openai={"base_url": "http://10.1.2.3:30000/v1", "timeout_s": 30},
    )
    assert manager.judge_config == expected
    assert manager.rm.config == expected


def test_router_wins_over_a_configured_backend(verl_modules, caplog) -> None:
    adapter = verl_modules[0]
    settings = adapter.GRMVerlSettings(judge={"backend": "transformers", "openai": {"base_url": None}})
    with caplog.at_level("WARNING"):
        config = adapter.judge_config(settings, reward_router_address="[::1]:8000", reward_model_path="m")
    assert (config.backend, config.model, config.openai.base_url) == ("openai", "m", "http://[::1]:8000/v1")
    assert "replaced by its router" in caplog.text
    local = adapter.judge_config(settings)
    assert local.backend == "transformers" and local == GRMConfig(backend="transformers")


def test_config_file_under_judge_settings(verl_modules, tmp_path) -> None:
    adapter = verl_modules[0]
    path = tmp_path / "judge.yaml"
    path.write_text("k: 8\nmodel: BBQGOD/DeepSeek-GRM-27B\nopenai:\n  max_retries: 9\n")
    settings = adapter.GRMVerlSettings(config_file=str(path), judge={"k": 2, "seed": None, "openai": {"mode": "completions"}})
    config = adapter.judge_config(settings)
    assert (config.k, config.model, config.seed) == (2, "BBQGOD/DeepSeek-GRM-27B", 0)
    assert (config.openai.max_retries, config.openai.mode) == (9, "completions")


def test_bad_settings_fail_at_start(verl_modules, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    with pytest.raises(ConfigError, match=r"reward\.grm"):
        manager_from(verl_modules, verl_support.compose(["+reward.grm.max_groupsize=3"]), tokenizer)
    with pytest.raises(ConfigError, match="k"):
        manager_from(verl_modules, verl_support.compose(["reward.grm.judge.k=0"]), tokenizer)
    with pytest.raises(ConfigError, match="max_responses=3"):
        manager_from(
            verl_modules, verl_support.compose(["reward.grm.judge.batching.max_group_size=4", "+reward.grm.judge.max_responses=3"]), tokenizer
        )


def test_verl_hosted_judge_needs_the_custom_reward_function_path(verl_modules, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    config = verl_support.compose(["reward.reward_model.enable=True", "reward.custom_reward_function.path=null"])
    with pytest.raises(ConfigError, match=r"custom_reward_function\.path"):
        manager_from(verl_modules, config, tokenizer, reward_router_address="127.0.0.1:1")


def test_compute_score_hook_is_not_a_scorer(verl_modules) -> None:
    with pytest.raises(ConfigError, match=r"reward_manager\.name=grm"):
        verl_modules[0].compute_score(data_source="x", solution_str="y", ground_truth="z", extra_info={})



def test_old_batching_and_failure_keys_name_their_new_place(verl_modules, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    for old, new in [("max_wait_s=0.1", "judge.batching.window_s"), ("group_by_prompt=false", "judge.batching.group_by_prompt"),
                     ("max_group_size=2", "judge.batching.max_group_size"), ("failure_score=-1.0", "judge.failure_reward")]:
        with pytest.raises(ConfigError, match=rf"reward\.grm\.{old.split('=')[0]} is now reward\.grm\.{new}"):
            manager_from(verl_modules, verl_support.compose(["+reward.grm." + old]), tokenizer)


def test_a_grpo_group_is_rollout_n_unless_set(verl_modules, tokenizer) -> None:
    _, verl_support, _, _ = verl_modules
    base = ["reward.grm.judge.backend=" + CHECKSUM]
    assert manager_from(verl_modules, verl_support.compose(base), tokenizer).batching.group_size == 8  # rollout.n
    chosen = verl_support.compose([*base, "reward.grm.judge.batching.group_size=4"])
    assert manager_from(verl_modules, chosen, tokenizer).batching.group_size == 4
    single = verl_support.compose([*base, "actor_rollout_ref.rollout.n=1"])
    assert manager_from(verl_modules, single, tokenizer).batching.group_size is None
