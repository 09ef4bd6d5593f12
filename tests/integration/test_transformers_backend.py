"""The transformers backend on the real embedded SmolLM2-135M judge, on CPU."""

from __future__ import annotations

import pytest

from grm_reward import GRMConfig, PromptTooLongError
from grm_reward.backends import GenerationRequest, ScoreFillRequest
from tests.conftest import requires_embedded, requires_torch

pytestmark = [pytest.mark.slow, requires_torch, requires_embedded]

MESSAGES = ({"role": "user", "content": "Name one colour of the rainbow."},)
OTHER = ({"role": "user", "content": "Write a long sentence about the history of the city of Rome and its emperors."},)


@pytest.fixture(scope="module")
def backend():
    from grm_reward.backends.transformers import TransformersBackend

    return TransformersBackend.from_config(GRMConfig(transformers={"device": "cpu", "batch_size": 8}))


def request(messages=MESSAGES, n=1, seeds=(1,), max_tokens=12, temperature=0.0):
    assert list(seeds) == list(range(seeds[0], seeds[0] + n)), "sample i is seeded seed + i"
    return GenerationRequest(messages=messages, n=n, seed=seeds[0], max_tokens=max_tokens, temperature=temperature)


def test_greedy_matches_transformers_generate_with_left_padding(backend) -> None:
    import torch

    tok, model = backend.tokenizer, backend.model
    ours = backend.generate_sync([request(MESSAGES, max_tokens=10), request(OTHER, max_tokens=10)])
    for messages, output in zip((MESSAGES, OTHER), ours):
        ids = torch.tensor([backend.encode(messages)])
        with torch.inference_mode():
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10)
        expected = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert output.samples[0].text == expected


def test_prefill_is_shared_by_the_samples_of_a_prompt(backend) -> None:
    prompt_len = len(backend.encode(MESSAGES))
    before = backend.stats.prefill_tokens
    out = backend.generate_sync([request(n=4, seeds=(1, 2, 3, 4), temperature=1.0, max_tokens=4)])
    assert out[0].prompt_tokens == prompt_len
    assert backend.stats.prefill_tokens - before == (prompt_len - 1) + 4  # once, plus each row's last token


def test_seeded_samples_are_reproducible_and_batch_independent(backend) -> None:
    seeds = (11, 12, 13)
    alone = backend.generate_sync([request(n=3, seeds=seeds, temperature=1.0, max_tokens=8)])[0]
    again = backend.generate_sync([request(n=3, seeds=seeds, temperature=1.0, max_tokens=8)])[0]
    mixed = backend.generate_sync(
        [request(OTHER, n=2, seeds=(5, 6), temperature=1.0, max_tokens=8),
         request(n=3, seeds=seeds, temperature=1.0, max_tokens=8)]
    )[1]
    texts = [s.text for s in alone.samples]
    assert texts == [s.text for s in again.samples] == [s.text for s in mixed.samples]
    assert len(set(texts)) > 1, "different seeds should give different samples at temperature 1"


def test_finish_reasons_and_token_counts(backend) -> None:
    out = backend.generate_sync([request(max_tokens=3)])[0].samples[0]
    assert out.finish_reason == "length" and out.completion_tokens == 3
    out = backend.generate_sync([request(({"role": "user", "content": "Say only: yes"},), max_tokens=40)])[0].samples[0]
    assert out.finish_reason == "stop" and out.completion_tokens < 40


def test_fill_scores_is_exact_under_the_constraint(backend) -> None:
    """The trie computation equals brute-force renormalised token probabilities, "10" included."""
    import torch

    prefix = "Analysis: Response 1 is correct, Response 2 is not.\nScores: \\boxed{"
    fill = backend.fill_scores_sync(
        [ScoreFillRequest(messages=MESSAGES, assistant_prefix=prefix, num_scores=2, score_range=(1, 10), expectation=True)]
    )[0]
    assert len(fill.values) == 2 and all(1 <= v <= 10 for v in fill.values)
    assert all(1.0 <= e <= 10.0 for e in fill.expected)

    # Brute force for the first position: P(v) = prod over steps of p(token)/p(allowed tokens).
    ids = backend.encode(MESSAGES, prefix)
    spell = {v: backend._token_ids(str(v), anchor="\\boxed{") for v in range(1, 11)}
    sep = backend._token_ids(", ", anchor="\\boxed{1")[0]

    def next_probs(seq):
        with torch.inference_mode():
            return torch.softmax(backend.model(torch.tensor([seq])).logits[0, -1].float(), -1)

    def allowed_after(path):
        children = {s[len(path)] for s in spell.values() if len(s) > len(path) and s[: len(path)] == path}
        if any(s == path for s in spell.values()):
            children.add(sep)
        return sorted(children)

    brute = {}
    for v, tokens in spell.items():
        p, path = 1.0, []
        for token in [*tokens, sep]:
            allowed = allowed_after(path)
            probs = next_probs(ids + path)
            p *= (probs[token] / probs[allowed].sum()).item() if len(allowed) > 1 else 1.0
            path = [*path, token]
        brute[v] = p
    total = sum(brute.values())
    assert total == pytest.approx(1.0, abs=1e-4)
    assert fill.expected[0] == pytest.approx(sum(v * p for v, p in brute.items()) / total, abs=1e-3)
    assert fill.values[0] == max(brute, key=brute.get)


def test_prompt_too_long_is_a_clear_error(backend) -> None:
    long = ({"role": "user", "content": "word " * 9000},)
    with pytest.raises(PromptTooLongError, match="exceeds the judge's context"):
        backend.generate_sync([request(long)])


# --- shared prefixes (issue 12 item 4) --------------------------------------------------------------------
HEAD = "You judge answers. Read the question and the answers, then score each answer from 1 to 10.\nQuestion: 2 + 2?\n"
ANSWERS = ["Four.", "It is 4 because two plus two makes four.", "5", "2 + 2 = 4, a basic fact of arithmetic."]


def shown(order):
    """A listwise-shaped prompt: the same head, then the answers in ``order`` (distinct first answers)."""
    text = HEAD + "".join(f"[Answer {p + 1}] {ANSWERS[i]}\n" for p, i in enumerate(order)) + "Scores:"
    return ({"role": "user", "content": text},)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefix_generation_gives_the_tokens_of_unshared_generation(backend, temperature) -> None:
    from grm_reward.backends._prefix import prefill_levels

    orders = [(0, 1, 2, 3), (2, 0, 3, 1), (1, 3, 0, 2)]
    requests = [
        GenerationRequest(messages=shown(o), n=2, seed=10 + 2 * j, max_tokens=6, temperature=temperature)
        for j, o in enumerate(orders)
    ]
    prompts = [backend.encode(shown(o)) for o in orders]
    texts, prefilled = {}, {}
    default = backend.share_prefixes
    try:
        for share in (False, True):
            backend.share_prefixes = share
            before = backend.stats.prefill_tokens
            texts[share] = [[s.text for s in out.samples] for out in backend.generate_sync(requests)]
            prefilled[share] = backend.stats.prefill_tokens - before
    finally:
        backend.share_prefixes = default
    assert texts[True] == texts[False]
    rows = 2 * len(orders)  # each sample row runs its prompt's last token itself
    assert prefilled[False] == sum(len(p) - 1 for p in prompts) + rows
    levels = prefill_levels([p[:-1] for p in prompts])
    shared = sum(len(s) for level in levels for s in level.segments)
    assert len(levels) == 2 and prefilled[True] == shared + rows
    head = len(levels[0].segments[0])
    assert shared == head + sum(len(p) - 1 - head for p in prompts) < prefilled[False] - rows



JUDGE = "You judge answers. Read the question and the answers, then score each answer from 1 to 10.\n"
QUESTIONS = [
    "Question: which city is the capital of France, and on which river does it stand?\n",
    "Question: what is the boiling point of water at sea level, in degrees Celsius?\n",
]
LONG_ANSWERS = [
    ["Paris is the capital of France, and it stands on the river Seine.", "Lyon, on the Rhone and the Saone, is the capital.",
     "The capital is Paris; the Loire flows through it on its way to the sea."],
    ["Water boils at 100 degrees Celsius at sea level.", "It boils at 90 degrees Celsius, a little less than body heat.",
     "At sea level water boils at one hundred degrees Celsius, or 212 Fahrenheit."],
]


def judged(question, order):
    answers = LONG_ANSWERS[question]
    text = JUDGE + QUESTIONS[question] + "".join(f"[Answer {p + 1}] {answers[i]}\n" for p, i in enumerate(order))
    return ({"role": "user", "content": text + "Scores:"},)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_batch_of_requests_gives_the_tokens_of_unshared_generation_with_a_merged_plan(backend, temperature) -> None:
    """Two requests of different lengths in one batch, two orders of the first with the same first
    answer: the plan merges a level of the tree away (that answer would pad the other rows), and the
    cache is compacted to the longest prompt before decoding."""
    import torch

    from grm_reward.backends._prefix import prefill_levels

    messages = [judged(0, o) for o in [(0, 1, 2), (0, 2, 1), (1, 2, 0)]] + [judged(1, o) for o in [(0, 1, 2), (2, 0, 1)]]
    requests = [
        GenerationRequest(messages=m, n=2, seed=30 + 2 * j, max_tokens=6, temperature=temperature)
        for j, m in enumerate(messages)
    ]
    prompts = [backend.encode(m)[:-1] for m in messages]
    default = backend.share_prefixes
    texts = {}
    try:
        backend.share_prefixes = True
        plan = backend._prefill_plan(prompts, 6)
        rows = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
        with torch.inference_mode():
            cache, mask = backend._prefill(prompts, 6, rows)
        for share in (False, True):
            backend.share_prefixes = share
            texts[share] = [[s.text for s in out.samples] for out in backend.generate_sync(requests)]
    finally:
        backend.share_prefixes = default
    assert texts[True] == texts[False]
    assert [len(level.segments) for level in prefill_levels(prompts)] == [1, 2, 4, 5]
    assert [len(level.segments) for level in plan] == [1, 2, 5]  # the shared first answer merged away
    width = max(map(len, prompts))  # as wide as the longest prompt, as a whole prefill leaves it
    assert mask.shape[1] == cache.get_seq_length() == width
    lengths = [len(prompts[r]) for r in rows.tolist()]
    assert mask.tolist() == [[0] * (width - n) + [1] * n for n in lengths]
