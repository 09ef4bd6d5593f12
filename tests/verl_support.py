"""What the verl tests share: verl's real config, a tiny tokenizer, and rollout batches as verl builds them.

Imports verl and torch: only test modules that already skip without verl import this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OVERLAY_DIR = ROOT / "integrations" / "verl" / "config"

WORDS = [
    *("what", "is", "two", "plus", "four", "five", "the", "answer", "sky", "blue", "green", "it", "colour", "of"),
    *("name", "a", "fruit", "apple", "pear", "yes", "no", "maybe", "system", "you", "are", "helpful", "user"),
    "assistant",
]


def compose(overrides: Sequence[str] = (), *, overlay: bool = True) -> Any:
    """verl's config as `main_ppo` composes it: our overlay (or verl's bare ppo_trainer) plus overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if overlay:
        config_dir, name = str(OVERLAY_DIR), "grm_grpo"
    else:
        import verl.trainer.config

        config_dir, name = str(Path(verl.trainer.config.__file__).parent), "ppo_trainer"
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(name, overrides=list(overrides))


def word_tokenizer() -> Any:
    """A word-level tokenizer (no files, no hub) with pad/eos special tokens, as a transformers tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "[UNK]": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="[UNK]")


def rollout_batch(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    prompt_length: int = 8,
    response_length: int = 6,
    pad_id: int | None = None,
) -> Any:
    """A `DataProto` laid out as verl's trainer hands it to the reward loop.

    Each row has ``prompt`` (the chat-templated prompt text), ``response`` and optionally
    ``raw_prompt`` (messages), ``ground_truth``, ``extra_info``, ``uid``. Prompts are left-padded,
    responses right-padded and followed by an EOS token when they fit, as rollouts end. ``pad_id``
    (default: the pad token) fills the padding: verl's agent loop pads with id 0, which is an
    ordinary token ("!") in Llama 3 and Qwen vocabularies, so only the attention mask tells.
    """
    import torch
    from tensordict import TensorDict
    from verl import DataProto

    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    prompts, responses, masks = [], [], []
    for row in rows:
        p = tokenizer.encode(row["prompt"], add_special_tokens=False)
        r = tokenizer.encode(row["response"], add_special_tokens=False)
        if len(r) < response_length:
            r = [*r, tokenizer.eos_token_id]
        assert len(p) <= prompt_length and len(r) <= response_length, row
        prompts.append([pad] * (prompt_length - len(p)) + p)
        responses.append(r + [pad] * (response_length - len(r)))
        masks.append([0] * (prompt_length - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (response_length - len(r)))
    prompts_t, responses_t = torch.tensor(prompts), torch.tensor(responses)
    attention_mask = torch.tensor(masks)
    batch = TensorDict(
        {
            "prompts": prompts_t,
            "responses": responses_t,
            "input_ids": torch.cat([prompts_t, responses_t], dim=1),
            "attention_mask": attention_mask,
            "position_ids": torch.clamp(attention_mask.cumsum(dim=1) - 1, min=0),
        },
        batch_size=len(rows),
    )
    fields = {
        "data_source": [row.get("data_source", "test") for row in rows],
        "reward_model": [{"style": "model", "ground_truth": row.get("ground_truth")} for row in rows],
        "extra_info": [row.get("extra_info", {"index": i}) for i, row in enumerate(rows)],
        "uid": [row.get("uid", str(i)) for i, row in enumerate(rows)],
    }
    if all("raw_prompt" in row for row in rows):
        fields["raw_prompt"] = [row["raw_prompt"] for row in rows]
    non_tensor = {key: np.fromiter(values, dtype=object, count=len(rows)) for key, values in fields.items()}
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


def last_valid_token(batch: Any) -> list[int]:
    """Index of each row's last response token (where verl puts the sequence reward)."""
    prompt_length = batch.batch["prompts"].shape[1]
    return [int(n) - 1 for n in batch.batch["attention_mask"][:, prompt_length:].sum(dim=1)]
