"""The SPCT rule reward in each framework's form: TRL kwargs, verl ground truth, OpenRLHF queries."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from grm_reward.errors import InputError
from grm_reward.spct.reward_funcs import (
    compute_score,
    encode_ground_truth,
    judge_rule_reward,
    openrlhf_reward_func,
    parse_ground_truth,
    split_judge_output,
)

# Real judge-output shapes: the paper's format, its figure's [[...]] form, ties, junk, quoted boxes.
CASES = [
    ("Specific Criteria: accuracy (50%).\nAnalysis: B is right.\nScores: \\boxed{3, 8}", 2, 1, None, 1.0),
    ("Analysis: A is right.\nScores: \\boxed{8, 3}", 2, 1, None, -1.0),
    ("Scores: \\boxed{8, 8}", 2, 1, None, -1.0),  # tie at the top
    ("Scores: \\boxed{2, 9, 9}", 3, 1, None, -1.0),  # tie between best and another
    ("Scores: \\boxed{2, 9, 8}", 3, 1, None, 1.0),
    ("Final Scores: [[4, 8]]", 2, 1, None, 1.0),
    ("Scores: \\boxed{2, 9}", 3, 1, None, -1.0),  # wrong count
    ("Scores: \\boxed{11, 3}", 2, 0, None, -1.0),  # out of range
    ("I like both of them.", 2, 0, None, -1.0),  # unreadable
    ("", 2, 0, None, -1.0),
    # single responses, 0/1 labels, 1-10 scale: threshold 5
    ("Scores: \\boxed{7}", 1, None, 1, 1.0),
    ("Scores: \\boxed{5}", 1, None, 1, -1.0),
    ("Scores: \\boxed{5}", 1, None, 0, 1.0),
    ("Scores: \\boxed{9}", 1, None, 0, -1.0),
    ("Scores: \\boxed{0}", 1, None, 0, -1.0),  # out of the 1-10 range
]


def log_sink():
    logged: dict[str, object] = {}
    return logged, lambda name, value: logged.__setitem__(name, value)


# --- TRL ----------------------------------------------------------------------------------------
def test_trl_reward_on_strings_and_conversational_completions() -> None:
    texts = [c[0] for c in CASES]
    kwargs = {"num_responses": [c[1] for c in CASES], "best": [c[2] for c in CASES], "label": [c[3] for c in CASES]}
    expected = [c[4] for c in CASES]
    assert judge_rule_reward(prompts=["p"] * len(CASES), completions=texts, **kwargs) == expected
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    assert judge_rule_reward(prompts=[[{"role": "user", "content": "p"}]] * len(CASES),
                             completions=conversational, **kwargs) == expected


def test_trl_reward_logs_unreadable_and_tie_shares_and_takes_extra_columns() -> None:
    metrics, log_metric = log_sink()
    columns, log_extra = log_sink()
    rewards = judge_rule_reward(
        prompts=["p"] * 4,
        completions=["Scores: \\boxed{3, 8}", "Scores: \\boxed{8, 8}", "no idea", "Scores: \\boxed{9}"],
        num_responses=[2, 2, 2, 1],
        best=[1, 1, 0, None],
        label=[None, None, None, 0],
        id=["a", "b", "c", "d"],  # any other dataset column arrives too
        completion_ids=[[1], [2], [3], [4]],
        trainer_state=object(),
        log_metric=log_metric,
        log_extra=log_extra,
    )
    assert rewards == [1.0, -1.0, -1.0, -1.0]
    assert metrics == {"judge_rule_reward/unreadable_share": 0.25, "judge_rule_reward/tie_share": 0.25}
    assert columns == {"judge_rule_reward_valid": [True, True, False, True]}


def test_trl_reward_reads_dataset_value_types() -> None:
    np = pytest.importorskip("numpy")
    # Arrow/pandas give numpy ints, integral floats and NaN for missing ints.
    rewards = judge_rule_reward(
        completions=["Scores: \\boxed{3, 8}", "Scores: \\boxed{1}", "Scores: \\boxed{1}"],
        num_responses=[np.int64(2), 1.0, 1],
        best=[np.int64(1), math.nan, None],
        label=[None, np.int64(1), 1],
        score_range=[None, np.array([0, 1]), [1, 10]],  # rl-data rows carry their prompt's range
    )
    assert rewards == [1.0, 1.0, -1.0]  # 1 is "correct" on the 0/1 scale, the worst score on 1-10


def test_trl_reward_has_a_stable_name_and_clear_errors() -> None:
    assert judge_rule_reward.__name__ == "judge_rule_reward"
    with pytest.raises(InputError, match="num_responses column"):
        judge_rule_reward(completions=["x"])
    with pytest.raises(InputError, match="one value per completion"):
        judge_rule_reward(completions=["x", "y"], num_responses=[2], best=[0, 1])
    with pytest.raises(InputError, match="completion 0: a judge prompt with 2 responses needs 'best'"):
        judge_rule_reward(completions=["x"], num_responses=[2], best=[None], label=[None])
    with pytest.raises(InputError, match="completion 0: a single-response"):
        judge_rule_reward(completions=["x"], num_responses=[1], best=[None], label=[None])
    with pytest.raises(InputError, match="best=2 is not a 0-based index"):
        judge_rule_reward(completions=["x"], num_responses=[2], best=[2])
    with pytest.raises(InputError, match="must be an integer"):
        judge_rule_reward(completions=["x"], num_responses=[2], best=[0.5])


# --- verl ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "n", "best", "label", "expected"), CASES)
def test_verl_compute_score(text, n, best, label, expected) -> None:
    out = compute_score("grm_spct", text, encode_ground_truth(n, best, label), {"index": 0})
    assert out["score"] == expected
    assert set(out) == {"score", "valid", "correct", "tie"}  # verl needs the same keys every time
    assert out["correct"] == (1.0 if expected == 1.0 else 0.0)


def test_verl_ground_truth_as_a_mapping_and_with_a_score_range() -> None:
    truth = {"num_responses": 1, "best": None, "label": 1, "score_range": [0, 1]}
    assert compute_score("s", "Scores: \\boxed{1}", truth)["score"] == 1.0  # the paper's S_1 = r_1
    out = compute_score("s", "Scores: \\boxed{7}", truth)
    assert out == {"score": -1.0, "valid": 0.0, "correct": 0.0, "tie": 0.0}  # out of the 0/1 range
    assert parse_ground_truth(encode_ground_truth(2, best=0, score_range=(1, 5))).score_range == (1, 5)
    # An explicit threshold moves the single-response cut.
    strict = encode_ground_truth(1, label=1, threshold=8)
    assert compute_score("s", "Scores: \\boxed{8}", strict)["score"] == -1.0
    assert compute_score("s", "Scores: \\boxed{9}", strict)["score"] == 1.0


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        ("4", "must be a JSON object"),
        ("not json", "must be a JSON object"),
        (None, "must be a JSON object"),
        ('{"best": 1}', "lacks num_responses"),
        ('{"num_responses": 2, "best": 1, "answer": 3}', "unknown keys \\['answer'\\]"),
        ('{"num_responses": 2, "best": null, "label": null}', "needs 'best'"),
        ('{"num_responses": 2, "best": 5}', "best=5 is not a 0-based index of 2 responses"),
        ('{"num_responses": 1, "label": null}', "needs its label"),
        ('{"num_responses": 1, "label": 7}', "label must be 0 \\(incorrect\\) or 1"),
        ('{"num_responses": 0, "label": 1}', "num_responses must be >= 1"),
        ('{"num_responses": "2", "best": 1}', "num_responses must be an integer"),
        ('{"num_responses": true, "best": 1}', "num_responses must be an integer"),
        ('{"num_responses": 2, "best": 1, "score_range": [5]}', "score_range must be \\[lo, hi\\]"),
        ('{"num_responses": 2, "best": 1, "score_range": [5, 1]}', "lo < hi"),
    ],
)
def test_verl_ground_truth_errors_are_clear(ground_truth, message) -> None:
    with pytest.raises(InputError, match=message):
        compute_score("grm_spct", "Scores: \\boxed{1, 2}", ground_truth)


def test_encode_validates_before_writing() -> None:
    assert json.loads(encode_ground_truth(3, best=2)) == {
        "num_responses": 3, "best": 2, "label": None, "score_range": [1, 10]
    }
    with pytest.raises(InputError, match="needs 'best'"):
        encode_ground_truth(2)


# --- OpenRLHF -----------------------------------------------------------------------------------
CHATML_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n"
    "<|im_start|>user\nYou are a skilled little expert at scoring responses. [The Begin of Response 1]\n"
    "Paris\n[The End of Response 1]\n... e.g., \\boxed{x, x} if there exists 2 responeses><|im_end|>\n"
    "<|im_start|>assistant\n"
)
GT = encode_ground_truth(2, best=0)


@pytest.mark.parametrize(
    ("query", "prompt", "expected"),
    [
        # exact prefix, trailing end-of-turn token (decoded with skip_special_tokens=False)
        (CHATML_PROMPT + "Analysis: ok.\nScores: \\boxed{9, 2}<|im_end|>", CHATML_PROMPT, "Analysis: ok.\nScores: \\boxed{9, 2}"),
        # several trailing special tokens and whitespace
        (CHATML_PROMPT + "Scores: \\boxed{9, 2}<|im_end|>\n<|endoftext|><pad><pad>", CHATML_PROMPT, "Scores: \\boxed{9, 2}"),
        # the prompt was left-truncated before generation: the query starts inside it
        (CHATML_PROMPT[40:] + "Scores: \\boxed{9, 2}<|im_end|>", CHATML_PROMPT, "Scores: \\boxed{9, 2}"),
        # ... and the first decoded character is garbled
        ("\ufffd" + CHATML_PROMPT[41:] + "Scores: \\boxed{9, 2}<|im_end|>", CHATML_PROMPT, "Scores: \\boxed{9, 2}"),
        # the prompt string differs from the decoded query (re-tokenisation): the last assistant header
        (CHATML_PROMPT.replace("SmolLM", "Smol LM") + "Scores: \\boxed{9, 2}", CHATML_PROMPT, "Scores: \\boxed{9, 2}"),
        # Llama 3 and Gemma headers
        ("<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
         "Scores: \\boxed{9, 2}<|eot_id|>", "", "Scores: \\boxed{9, 2}"),
        ("<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\nScores: \\boxed{9, 2}<end_of_turn>", None,
         "Scores: \\boxed{9, 2}"),
        # an empty judge output
        (CHATML_PROMPT + "<|im_end|>", CHATML_PROMPT, ""),
    ],
)
def test_split_judge_output(query, prompt, expected) -> None:
    assert split_judge_output(query, prompt) == expected


def test_split_fails_rather_than_reading_the_prompt() -> None:
    # No prompt match and no known header: the quoted "\boxed{x, x}" must not be read as the judge's.
    assert split_judge_output("plain text judge prompt \\boxed{9, 2} and more", "something else entirely!!") is None


def test_openrlhf_reward_func_shapes_and_values() -> None:
    queries = [
        CHATML_PROMPT + "Scores: \\boxed{9, 2}<|im_end|>",  # correct
        CHATML_PROMPT + "Scores: \\boxed{5, 5}<|im_end|>",  # tie
        CHATML_PROMPT + "They are both good.<|im_end|>",  # unreadable
        "garbled \\boxed{9, 2}",  # cannot split: strict -1
    ]
    out = openrlhf_reward_func(queries, [CHATML_PROMPT] * 3 + ["unrelated prompt text here"], [GT] * 4)
    assert out["rewards"] == [1.0, -1.0, -1.0, -1.0]
    assert out["scores"] == [1.0, 0.0, 0.0, 0.0]
    assert out["extra_logs"] == {
        "judge_valid": [1.0, 1.0, 0.0, 0.0],
        "judge_tie": [0.0, 1.0, 0.0, 0.0],
        "judge_split_failed": [0.0, 0.0, 0.0, 1.0],
    }
    # labels may also arrive as mappings (a JSON object in the label column)
    assert openrlhf_reward_func([queries[0]], [CHATML_PROMPT], [json.loads(GT)])["rewards"] == [1.0]
    assert openrlhf_reward_func([], [], []) == {
        "rewards": [], "scores": [], "extra_logs": {"judge_valid": [], "judge_tie": [], "judge_split_failed": []}
    }
    with pytest.raises(InputError, match="differ in length"):
        openrlhf_reward_func(queries, [CHATML_PROMPT], [GT])


def test_importing_the_reward_funcs_loads_no_framework() -> None:
    code = (
        "import sys, grm_reward, grm_reward.spct.reward_funcs;"
        "print(sorted(m for m in ('torch', 'trl', 'verl', 'openrlhf', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
