"""Shared-prefix prefill on tiny random causal LMs (CPU, fast): the merged plans, the compacted cache and
sliding-window layers give the tokens of unshared generation. The real judge: tests/integration."""

from __future__ import annotations

import random
import types

import pytest

from grm_reward.backends._prefix import prefill_levels
from tests.conftest import requires_torch

pytestmark = requires_torch


def tiny_backend(kind: str, sliding_window: int | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from grm_reward.backends.transformers import TransformersBackend

    torch.manual_seed(0)
    shape = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
    if kind == "mistral":
        model = MistralForCausalLM(MistralConfig(**shape, sliding_window=sliding_window))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    tokenizer = types.SimpleNamespace(
        pad_token_id=0, eos_token_id=1, model_max_length=512, decode=lambda ids, **_: " ".join(map(str, ids))
    )
    return TransformersBackend(model, tokenizer, batch_size=64)


def listwise_prompts() -> list[list[int]]:
    """Two requests of different lengths after a shared head; two orders of the first show the same
    response first (a level the plan merges away: it would pad every other row)."""
    rng = random.Random(3)
    tokens = lambda n: [rng.randrange(3, 96) for _ in range(n)]  # noqa: E731
    head = tokens(40)
    prompts = []
    for query, responses, orders in (
        (tokens(20), [tokens(24) for _ in range(3)], [(0, 1, 2), (0, 2, 1), (1, 2, 0)]),
        (tokens(20), [tokens(17) for _ in range(3)], [(0, 1, 2), (2, 0, 1)]),
    ):
        prompts += [head + query + [t for i in order for t in responses[i]] + [5, 6, 7] for order in orders]
    return prompts


def decode(backend, share: bool, temperature: float) -> list[str]:
    prompts = listwise_prompts()
    rows = [p for p in prompts for _ in range(2)]  # two samples of each prompt
    backend.share_prefixes = share
    generations = backend._locked(backend._decode, rows, list(range(len(rows))), 8, temperature, 1.0)
    return [g.text for g in generations]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize(("kind", "window"), [("llama", None), ("mistral", 512), ("mistral", 64)])
def test_shared_prefix_decoding_gives_the_tokens_of_unshared_decoding(kind, window, temperature) -> None:
    backend = tiny_backend(kind, window)
    prompts = [p[:-1] for p in listwise_prompts()]
    plan = backend._prefill_plan(prompts, 8)
    if window == 64:  # the padded rows would overrun the window: prefilled whole
        assert len(plan) == 1
    else:
        assert 1 < len(plan) < len(prefill_levels(prompts))  # head, queries, then each prompt's rest
    assert decode(backend, True, temperature) == decode(backend, False, temperature)


def test_the_compacted_cache_is_as_wide_as_the_longest_prompt_in_every_layer_kind() -> None:
    import torch

    for kind, window in (("llama", None), ("mistral", 512)):
        backend = tiny_backend(kind, window)
        prompts = [p[:-1] for p in listwise_prompts()]
        rows = torch.tensor([0, 0, 1, 2, 3, 4, 4])
        with torch.inference_mode():
            cache, mask = backend._prefill(prompts, 8, rows)
        width = max(map(len, prompts))
        assert [layer.keys.shape[2] for layer in cache.layers] == [width] * len(cache.layers)
        assert cache.get_seq_length() == mask.shape[1] == width
        assert mask.tolist() == [[0] * (width - len(prompts[r])) + [1] * len(prompts[r]) for r in rows.tolist()]
