"""A real transformers sequence classifier as the meta RM (tiny, randomly initialised, on CPU)."""

from __future__ import annotations

import math

import pytest

from grm_reward import ConfigError, GenerativeRewardModel, GRMConfig
from grm_reward.backends import ScriptedBackend
from tests.conftest import requires_embedded, requires_torch
from tests.helpers import judge_text

pytestmark = [pytest.mark.slow, requires_torch, requires_embedded]


def tiny_classifier(folder, num_labels=1):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_meta_rm_rates_samples_and_filters_the_vote(tmp_path) -> None:
    path = tiny_classifier(tmp_path / "meta")
    judge = ScriptedBackend(lambda call: judge_text([call.seed % 10 + 1, 5], analysis=f"take {call.seed}"))
    rm = GenerativeRewardModel(GRMConfig(k=6, meta_rm=path, k_meta=2, shuffle="none", meta={"max_length": 64}),
                               backend=judge)
    first = rm.score("Which is better?", ["a", "b"])
    again = rm.score("Which is better?", ["a", "b"])
    ratings = [s.meta_score for s in first.samples]
    assert all(r is not None and math.isfinite(r) for r in ratings)
    assert ratings == [s.meta_score for s in again.samples]
    top = sorted(range(6), key=lambda i: -ratings[i])[:2]
    assert first.num_voted == 2
    assert first.votes[0] == sum(first.samples[i].scores[0] for i in top)
    rm.close()


def test_meta_rm_must_have_one_logit(tmp_path) -> None:
    path = tiny_classifier(tmp_path / "two", num_labels=2)
    rm = GenerativeRewardModel(GRMConfig(k=2, meta_rm=path), backend=ScriptedBackend([judge_text([3])]))
    with pytest.raises(ConfigError, match="one logit"):
        rm.score("q", ["a"])
