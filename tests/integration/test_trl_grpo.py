"""GRMReward inside TRL's real GRPOTrainer: a few CPU steps with a tiny random policy.

The policy is a 1-layer Llama with the embedded model's tokenizer (built here; no hub). The
judge is scripted (scores depend only on the completion text, so each logged reward can be
checked against its own completion) except in the last test, which uses the embedded judge.
"""

from __future__ import annotations

import math

import pytest

from tests.conftest import is_available, requires_embedded, requires_torch
from tests.helpers import checksum_score

pytestmark = [
    pytest.mark.slow,
    requires_torch,
    requires_embedded,
    pytest.mark.skipif(not is_available("trl"), reason="needs grm-reward[trl]"),
]

CHECKSUM = "tests.helpers:checksum_backend"


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> str:
    """A tiny random causal LM (about 0.8M parameters) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("policy")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def train(policy, reward_funcs, rows, out, *, steps=2):
    """Run GRPO for `steps` steps (2 prompts x 2 completions each) and return the trainer."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=steps,
        logging_steps=1,
        log_completions=True,
        report_to="none",
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,  # no accelerator: torch warns otherwise
        seed=0,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    return trainer


def completions_table(out):
    """Every row of TRL's logged completions tables (one parquet file per logging step)."""
    import pandas as pd

    files = sorted((out / "completions").glob("completions_*.parquet"))
    assert files, "TRL wrote no completions table"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def step_logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h]


def expected_reward(completion: str) -> float:
    return (checksum_score(completion) - 1) / 9


def other_fn(completions, **kwargs):
    return [0.25] * len(completions)


def test_trl_sees_an_async_callable_with_a_stable_name() -> None:
    from trl.trainer.utils import get_callable_name, is_async_callable

    from grm_reward import GRMReward

    reward = GRMReward(backend=CHECKSUM)
    assert is_async_callable(reward) and get_callable_name(reward) == "grm"
    assert not is_async_callable(reward.as_sync()) and get_callable_name(reward.as_sync()) == "grm"


def test_grpo_with_grm_beside_another_reward(policy, tmp_path) -> None:
    from grm_reward import GRMReward

    rows = [{"prompt": p} for p in ("The sky is", "Hello", "Two plus two is", "Name a color:")]
    trainer = train(policy, [GRMReward(backend=CHECKSUM, k=2), other_fn], rows, tmp_path)

    logs = step_logs(trainer)
    assert len(logs) == 2
    for log in logs:
        assert log["rewards/other_fn/mean"] == 0.25
        assert 0.0 <= log["rewards/grm/mean"] <= 1.0
        assert log["reward"] == pytest.approx(log["rewards/grm/mean"] + 0.25)
        assert log["grm/invalid_share"] == 0.0 and log["grm/failed_share"] == 0.0
        assert log["grm/forced_share"] == 0.0 and log["grm/vote_spread"] == 0.0

    table = completions_table(tmp_path)
    assert {"grm", "other_fn", "grm_critique", "grm_votes"} <= set(table.columns)
    assert len(table) == 8  # 2 steps x 4 completions
    for completion, reward, votes, critique in zip(table.completion, table.grm, table.grm_votes, table.grm_critique):
        # Each reward is its own completion's score: nothing was shifted between completions.
        assert reward == pytest.approx(expected_reward(completion))
        assert list(votes) == [checksum_score(completion)] * 2
        assert critique.startswith("Checked 2")  # judged listwise with the other completion of its prompt


def test_grpo_conversational_with_reference_column(policy, tmp_path) -> None:
    from grm_reward import GRMReward

    reward = GRMReward(backend=CHECKSUM, batching={"group_by_prompt": False})
    rows = [
        {"prompt": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}], "reference": str(2 * i)}
        for i in range(4)
    ]
    train(policy, reward, rows, tmp_path)

    table = completions_table(tmp_path)
    for completion, value in zip(table.completion, table.grm):
        assert completion[0]["role"] == "assistant"
        assert value == pytest.approx(expected_reward(completion[0]["content"]))
    judge_prompts = [r.messages[-1]["content"] for r in reward.rm.backend.requests]
    assert len(judge_prompts) == 8  # pointwise: one judge request per completion
    for i in range(4):
        hits = [p for p in judge_prompts if f"Question {i}: what is {i} + {i}?" in p]
        assert len(hits) == 2 and all(f"#### Reference Answer ####\n{2 * i}\n" in p for p in hits)


def test_grpo_skips_unjudgeable_completions_through_the_sync_fallback(policy, tmp_path) -> None:
    from grm_reward import GRMReward

    rows = [{"prompt": p} for p in ("UNJUDGEABLE prompt", "Hello", "UNJUDGEABLE again", "Name a color:")]
    trainer = train(policy, GRMReward(backend=CHECKSUM).as_sync(), rows, tmp_path)

    table = completions_table(tmp_path)
    for prompt, completion, value, advantage in zip(table.prompt, table.completion, table.grm, table.advantage):
        if "UNJUDGEABLE" in prompt:
            assert math.isnan(value) and advantage == 0.0  # TRL turned None into NaN and skipped it
        else:
            assert value == pytest.approx(expected_reward(completion))
    for log in step_logs(trainer):
        assert log["grm/failed_share"] == 0.5 and log["grm/invalid_share"] == 0.5
        assert not math.isnan(log["rewards/grm/mean"])  # NaN-aware mean over the judged half


def test_grpo_with_the_embedded_judge(policy, tmp_path) -> None:
    from grm_reward import GRMReward

    reward = GRMReward(k=2, max_new_tokens=24, format_guarantee=True, transformers={"device": "cpu"})
    judged = []  # the results behind the logged metrics, to check the metrics against
    log_results = reward.log

    def spy(results, *args, **kwargs):
        judged.extend(results)
        return log_results(results, *args, **kwargs)

    reward.log = spy
    rows = [{"prompt": "Say hello."}, {"prompt": "Name a fruit."}]
    trainer = train(policy, reward, rows, tmp_path, steps=1)

    table = completions_table(tmp_path)
    assert len(table) == 4
    assert all(0.0 <= value <= 1.0 for value in table.grm)  # the format guarantee gives every completion a score
    assert all(len(votes) == 2 and all(v is not None for v in votes) for votes in table.grm_votes)
    assert all(isinstance(text, str) for text in table.grm_critique)
    (log,) = step_logs(trainer)
    assert log["grm/failed_share"] == 0.0
    assert log["grm/invalid_share"] == 0.0
    # the logged share is the share of forced samples in the judgements behind it, and the guarantee
    # did work: a 135M model does not write the score block itself in 24 tokens (design notes)
    assert len(judged) == 4 and all(len(r.samples) == 2 and all(s.valid for s in r.samples) for r in judged)
    forced = sum(r.num_forced for r in judged) / 8
    assert log["grm/forced_share"] == pytest.approx(forced) and forced > 0.5


# --- When the judge fails: TRL's own reward and advantage code on fixed completions ---------------
FAILING = {"alpha": 1, "bravo": 10, "charlie": 5}  # "delta" is never judged: the judge cannot read it


def failing_judge(config: object):
    from grm_reward.backends import ScriptedBackend
    from tests.helpers import judge_text

    def judge(call):
        if "delta" in call.responses:
            return "I am not sure."
        return judge_text([FAILING[r] for r in call.responses])

    return ScriptedBackend(judge)


def advantages(policy, tmp_path, monkeypatch, reward_funcs, *, aggregation="sum_then_normalize"):
    """TRL's advantages for one GRPO group of fixed completions (alpha, bravo, charlie, delta).

    A rollout function hands TRL the completions, so that the real `_generate_and_score_completions`
    runs TRL's reward calls, NaN handling and group normalisation on known text.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    texts = ["alpha", "bravo", "charlie", "delta"]

    def rollout(prompts, trainer):
        return {
            "prompt_ids": [tokenizer(p)["input_ids"] for p in prompts],
            "completion_ids": [tokenizer(t)["input_ids"] for t in texts],
            "logprobs": None,
        }

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        report_to="none",
        bf16=False,
        dataloader_pin_memory=False,
        multi_objective_aggregation=aggregation,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "Say a word:"}]),
        rollout_func=rollout,
    )
    trainer.model.train()
    output = trainer._generate_and_score_completions([{"prompt": "Say a word:"}] * 4)
    assert list(trainer._logs["completion"])[-4:] == texts  # TRL decoded the completions given
    return dict(zip(texts, output["advantages"].tolist()))


def constant_fn(completions, **kwargs):
    return [1.0] * len(completions)


FAILING_JUDGE = "tests.integration.test_trl_grpo:failing_judge"


def test_trl_a_none_beside_another_reward_reads_as_the_worst_answer(policy, tmp_path, monkeypatch) -> None:
    from grm_reward import GRMReward

    grm = GRMReward(backend=FAILING_JUDGE, batching={"group_by_prompt": False}, on_failure="none")
    alone = advantages(policy, tmp_path, monkeypatch, [grm])
    assert alone["delta"] == 0.0  # every reward function returned None: TRL masks it

    beside = advantages(policy, tmp_path, monkeypatch, [grm, constant_fn])
    # NaN is summed as 0: the unjudged completion gets the advantage of the 1/10 answer.
    assert beside["delta"] == pytest.approx(beside["alpha"], abs=1e-4)
    assert beside["delta"] < -0.5

    normalized = advantages(policy, tmp_path, monkeypatch, [grm, constant_fn], aggregation="normalize_then_sum")
    assert abs(normalized["delta"]) < 0.01  # per-function normalisation leaves the NaN out


def test_trl_group_mean_keeps_a_failure_neutral(policy, tmp_path, monkeypatch) -> None:
    from grm_reward import GRMReward

    grm = GRMReward(backend=FAILING_JUDGE, batching={"group_by_prompt": False})  # on_failure="group_mean", the default
    for funcs in ([grm], [grm, constant_fn]):
        adv = advantages(policy, tmp_path, monkeypatch, funcs)
        assert abs(adv["delta"]) < 0.01
        assert adv["alpha"] < -0.5 < 0.5 < adv["bravo"]  # the judged completions keep their signal
