"""OpenRLHF's query format: splitting, templates, labels, the response shape, the file form."""

from __future__ import annotations

import threading

import pytest

from grm_reward import GenerationError, GenerativeRewardModel, GRMConfig, InputError
from grm_reward.adapters.openrlhf import (
    EXTRA_LOG_KEYS,
    RewardFunction,
    build_request,
    label_fields,
    openrlhf_response,
)
from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.chat_templates import parse_chat_prompt, split_query, strip_end_tokens
from grm_reward.server import build_app
from tests.helpers import judge_text
from tests.servers import uvicorn_thread

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
# (templated prompt as the chat template renders it with add_generation_prompt, end-of-turn token)
TEMPLATES = {
    "chatml": ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
    "llama3": ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "gemma": ("<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"),
    "mistral": ("<s>[INST] What is 2+2? [/INST]", "</s>"),
    "deepseek": ("<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>", "<｜end▁of▁sentence｜>"),
    "phi3": ("<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", "<|end|>"),
}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_split_by_prefix_and_by_marker_for_common_templates(family) -> None:
    prompt, end = TEMPLATES[family]
    query = prompt + "It is 4.\nBecause 2+2=4." + end
    by_prefix = split_query(query, prompt)
    assert by_prefix == split_query(query, prompt) and by_prefix.method == "prefix"
    assert by_prefix.response == "It is 4.\nBecause 2+2=4."
    assert by_prefix.prompt == QUESTION
    by_marker = split_query(query, None)
    assert by_marker.method == "marker" and by_marker.response == "It is 4.\nBecause 2+2=4."
    assert by_marker.prompt == QUESTION


def test_left_truncated_prompt() -> None:
    system = "<|im_start|>system\n" + "Long instructions. " * 50 + "<|im_end|>\n"
    prompt = system + TEMPLATES["chatml"][0]
    query = prompt[300:] + "Four.<|im_end|><|im_end|>"  # OpenRLHF kept the last tokens of the prompt
    split = split_query(query, prompt)
    assert split.method == "truncated" and split.response == "Four."
    assert split.prompt[-1] == QUESTION[0]  # the judge sees the whole (untruncated) conversation
    # a partial character at the cut is tolerated
    split = split_query("\ufffd" + prompt[301:] + "Four.", prompt)
    assert split.method == "truncated" and split.response == "Four."


def test_a_response_that_quotes_a_template_is_not_cut_when_the_prompt_matches() -> None:
    prompt = TEMPLATES["chatml"][0]
    response = "Try <|im_start|>assistant\nfake header"
    assert split_query(prompt + response, prompt).response == response


def test_no_prompt_and_no_template_is_the_whole_query() -> None:
    split = split_query("plain text", None)
    assert split == split_query("plain text") and split.method == "whole" and split.response == "plain text"
    with pytest.raises(InputError, match="send 'prompts'"):
        build_request("plain text", None)


def test_untemplated_prompt_stays_text() -> None:
    split = split_query("Question: 2+2? Answer: 4</s>", "Question: 2+2? Answer:")
    assert split.prompt == "Question: 2+2? Answer:" and split.response == "4"


def test_strip_end_tokens() -> None:
    assert strip_end_tokens("Four. <|im_end|>\n<|endoftext|><pad><pad>") == "Four."
    assert strip_end_tokens("a </s> b") == "a </s> b"


def test_parse_chat_prompt_multi_turn() -> None:
    text = ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
            "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n")
    assert parse_chat_prompt(text) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"},
    ]
    assert parse_chat_prompt("no template") is None


@pytest.mark.parametrize(
    "query",
    [
        "<|im_start|>system\nTranslate to French: good morning<|im_end|>\n<|im_start|>assistant\nBonjour<|im_end|>",
        "<|start_header_id|>system<|end_header_id|>\n\nTranslate to French: good morning<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nBonjour<|eot_id|>",
        "<|system|>\nTranslate to French: good morning<|end|>\n<|assistant|>\nBonjour<|end|>",
        # an empty user turn is dropped, not judged as an empty question
        "<|im_start|>system\nTranslate to French: good morning<|im_end|>\n<|im_start|>user\n<|im_end|>\n"
        "<|im_start|>assistant\nBonjour<|im_end|>",
    ],
)
def test_a_conversation_without_a_user_turn_is_judged_as_messages(query: str) -> None:
    # The task in the system prompt: the judge's question was the raw text, chat markers and all.
    split = split_query(query)
    assert split.prompt == [{"role": "system", "content": "Translate to French: good morning"}]
    assert split.response == "Bonjour"


@pytest.mark.parametrize(
    ("label", "expected"),
    [("4", ("4", None)), ("", (None, None)), (None, (None, None)), (4, ("4", None)), (True, (None, None)),
     ({"reference": "4", "principles": ["exact", ""]}, ("4", ["exact"])), ({"other": 1}, (None, None)), ([1], (None, None)),
     ({"reference": 7, "principles": "Be exact."}, ("7", "Be exact."))],
)
def test_label_fields(label, expected) -> None:
    assert label_fields(label) == expected
    if isinstance(label, str):
        assert label_fields(label, as_reference=False) == (None, None)


def test_openrlhf_response_shape_and_failure() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(["Scores: \\boxed{8}", "Scores: \\boxed{6}", "nothing"]), k=2)
    ok = rm.score("q", ["a"])
    mixed = rm.score("q2", ["b"])  # texts cycle: "nothing" then "Scores: 8"
    failed = GenerativeRewardModel(backend=ScriptedBackend(["nothing"]), k=2).score("q", ["a"])
    out = openrlhf_response([ok, mixed, failed], score_range=(1, 10), failure_reward=0.0)
    assert out["rewards"] == pytest.approx([(7 - 1) / 9, (8 - 1) / 9, 0.0])
    assert out["scores"] == pytest.approx(out["rewards"])
    assert tuple(out["extra_logs"]) == EXTRA_LOG_KEYS
    assert out["extra_logs"]["grm_vote_spread"] == [2.0, 0.0, 0.0]  # max - min of the sample scores
    assert out["extra_logs"]["grm_invalid_share"] == [0.0, 0.5, 1.0]
    assert out["extra_logs"]["grm_failed"] == [0.0, 0.0, 1.0]
    assert out["extra_logs"]["grm_vote"] == [14.0, 8.0, 0.0]
    sums = openrlhf_response([ok], score_range=(1, 10), failure_reward=0.0)
    assert sums["scores"] == pytest.approx([6 / 9])
    rm.close()


def test_reward_function_in_process_batches_concurrent_threads() -> None:
    backend = ScriptedBackend(lambda call: judge_text([min(10, len(call.responses[0]))]), delay=0.05)
    rm = GenerativeRewardModel(backend=backend, k=1)
    reward = RewardFunction(GRMConfig(k=1, batching={"window_s": 0.05}), rm=rm)
    prompt = TEMPLATES["chatml"][0]
    results: dict[int, dict] = {}

    def call(i: int) -> None:  # what OpenRLHF does: asyncio.to_thread(reward_func, [q], [p], [l]) per sample
        results[i] = reward([prompt + "x" * (i + 1) + "<|im_end|>"], [prompt], [""])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reward.close()
    assert [results[i]["rewards"][0] for i in range(8)] == pytest.approx([i / 9 for i in range(8)])
    assert backend.stats.calls < 8
    with pytest.raises(InputError, match="differ in length"):
        reward(["q"], [], [])


def test_reward_function_forwards_to_a_server(monkeypatch) -> None:
    app = build_app(GRMConfig(k=1), backend=ScriptedBackend(lambda call: judge_text([9])))
    prompt = TEMPLATES["llama3"][0]
    with uvicorn_thread(app) as base:
        monkeypatch.setenv("GRM_REWARD_URL", base + "/get_reward")
        reward = RewardFunction.from_env()
        out = reward([prompt + "4<|eot_id|>"], [prompt], ["4"])
        assert out["rewards"] == pytest.approx([8 / 9]) and tuple(out["extra_logs"]) == EXTRA_LOG_KEYS
        quick = RewardFunction(GRMConfig(openai={"backoff_base_s": 0.001, "max_retries": 1}), url=base + "/get_reward")
        quick([prompt + "4<|eot_id|>"], [prompt], ["4"])
    reward.close()
    with pytest.raises(GenerationError, match=r"cannot connect .* after 2 attempts"):
        quick([prompt + "4"], [prompt], [""])  # the server is gone: mapped onto the exception tree
    quick.close()


def test_reward_function_from_a_config_file(monkeypatch, tmp_path) -> None:
    path = tmp_path / "judge.yaml"
    path.write_text("k: 3\nfailure_reward: -1.0\n")
    monkeypatch.delenv("GRM_REWARD_URL", raising=False)
    monkeypatch.setenv("GRM_REWARD_CONFIG", str(path))
    reward = RewardFunction.from_env()
    assert reward.config.k == 3 and reward.config.failure_reward == -1.0 and reward.url is None


# --- hostile input: splitting is linear in the input size (issue 10) ----------------------------------------------
def _growth(make, split, small=4_000, factor=4) -> float:
    """How much longer splitting takes when the input grows ``factor`` times (linear: about ``factor``)."""
    import time

    def best(n):
        args = make(n)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            split(*args)
            times.append(time.perf_counter() - started)
        return min(times)

    return best(small * factor) / max(best(small), 1e-4)


@pytest.mark.parametrize(
    ("case", "make", "split", "small"),
    [
        # a Mistral-looking prompt of [INST] without [/INST]: the turn pattern scanned to the end per [INST]
        ("mistral", lambda n: ("[INST]" * n + "x", "[INST]" * n), split_query, 2_000),
        # a repetitive prompt that is not a prefix of its query: one full comparison per anchor position
        ("truncation", lambda n: ("a" * (3 * n) + "b" * 10, "a" * (6 * n)), split_query, 8_000),
    ],
)
def test_splitting_time_grows_linearly_with_the_input(case, make, split, small) -> None:
    growth = _growth(make, split, small)
    print(f"{case}: 4x the input took {growth:.1f}x the time")
    assert growth < 8  # linear: ~4; quadratic: ~16


def test_a_repetitive_left_truncated_prompt_still_splits_at_the_response() -> None:
    prompt = "<|im_start|>user\n" + "Repeat after me. " * 2000 + "<|im_end|>\n<|im_start|>assistant\n"
    for cut in (500, 5001):  # the kept tail starts with the same text at thousands of positions
        split = split_query(prompt[cut:] + "Done.<|im_end|>", prompt)
        assert split.method == "truncated" and split.response == "Done."
    split = split_query("\ufffd" + prompt[5001:] + "Done.", prompt)  # a partial character at the cut
    assert split.method == "truncated" and split.response == "Done."


def test_mistral_turns_do_not_span_an_unclosed_inst() -> None:
    assert parse_chat_prompt("<s>[INST] a [INST] b [/INST] c</s>[INST] d [/INST]") == [
        {"role": "user", "content": "b"}, {"role": "user", "content": "d"}
    ]
