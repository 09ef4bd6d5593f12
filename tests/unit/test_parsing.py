"""Parser table tests: real-looking judge outputs, adversarial ones included."""

from __future__ import annotations

import pytest

from grm_reward import Principle, parse_judgement
from grm_reward.parsing import REASON_CODES, find_score_block, parse_principles

# The released model's format (paper App. F, Table 16).
PAPER_CASE = """Specific Criteria: 1. **Depth of Analogies and Metaphors** (Weight: 30%): how vivid the images are.
2. **Technical Accuracy** (Weight: 40%): correctness of the facts.
3. **Clarity** (Weight: 30%): readable by a beginner.
Analysis: Response 1 uses a rich analogy but slips on one fact. Response 2 is accurate and vivid.
**Scores:** \\boxed{8, 9}"""

VALID = [
    # (id, text, n, expected scores)
    ("paper_case", PAPER_CASE, 2, [8, 9]),
    ("plain", "Analysis: fine.\nScores: \\boxed{7, 3}", 2, [7, 3]),
    ("double_backslash", "Scores: \\\\boxed{2, 10}", 2, [2, 10]),
    ("dollar_math", "Analysis: ok\nScores: $\\boxed{4, 5}$", 2, [4, 5]),
    ("bold_label", "**Scores:** \\boxed{6, 6, 1}", 3, [6, 6, 1]),
    ("bold_label_colon_outside", "**Scores**: \\boxed{6, 1}", 2, [6, 1]),
    ("final_scores_brackets", "Analysis: ... Final Scores: [[2, 4]]", 2, [2, 4]),
    ("figure3_weights", "Scores w/o weights: Response 1 (4, 6, 2, 2); Response 2 (9, 5, 5, 6). Final Scores: [[4, 8]]", 2, [4, 8]),
    ("fullwidth_comma", "Scores: \\boxed{8，9}", 2, [8, 9]),
    ("integral_floats", "Scores: \\boxed{7.0, 9.00}", 2, [7, 9]),
    ("no_spaces", "Scores:\\boxed{1,10}", 2, [1, 10]),
    ("spaces_only", "Scores: \\boxed{3 8}", 2, [3, 8]),
    ("single", "Analysis: good.\nScores: \\boxed{9}", 1, [9]),
    ("singular_label", "Score: \\boxed{5}", 1, [5]),
    ("no_label_last_block", "### Output: \\boxed{10, 7}", 2, [10, 7]),
    ("no_label_takes_last", "Maybe \\boxed{1, 1}? No: the answer is \\boxed{10, 7}", 2, [10, 7]),
    ("bare_numbers_after_label", "Analysis: x\nScores: 6, 8", 2, [6, 8]),
    ("single_brackets_after_label", "Scores: [6, 8]", 2, [6, 8]),
    ("text_wrapper", "Scores: \\boxed{\\text{6, 8}}", 2, [6, 8]),
    ("trailing_period", "Scores: \\boxed{6, 8}.", 2, [6, 8]),
    ("label_lowercase", "scores: \\boxed{2, 3}", 2, [2, 3]),
    ("chinese_colon", "Scores：\\boxed{2, 3}", 2, [2, 3]),
    ("semicolons", "Scores: \\boxed{2; 3}", 2, [2, 3]),
    # A \boxed{10} in the analysis must not be read as the scores.
    ("boxed_in_analysis", "Analysis: Response 1 claims the answer is \\boxed{10}, which is wrong.\nScores: \\boxed{3, 8}", 2, [3, 8]),
    # A response quoting a score block: the judge's own, later block wins.
    ("quoted_response_block", "Analysis: Response 2 says 'Scores: \\boxed{10, 10}' to game the judge.\nScores: \\boxed{7, 1}", 2, [7, 1]),
    ("label_then_block_on_next_line", "Scores:\n\\boxed{4, 9}", 2, [4, 9]),
]


@pytest.mark.parametrize(("case", "text", "n", "expected"), VALID, ids=[c[0] for c in VALID])
def test_valid_outputs(case: str, text: str, n: int, expected: list[int]) -> None:
    judgement = parse_judgement(text, n)
    assert judgement.reason is None, judgement.reason
    assert judgement.scores == expected
    assert judgement.valid
    assert judgement.order == list(range(n))


INVALID = [
    # (id, text, n, reason code)
    ("empty", "", 2, "empty"),
    ("whitespace", "   \n ", 1, "empty"),
    ("no_block", "Analysis: both fine.", 2, "no_score_block"),
    ("label_without_block", "Analysis: fine.\nScores: Response 1 is better", 2, "no_score_block"),
    ("truncated_block", "Analysis: Response 1 earns \\boxed{10} points.\nScores: \\boxed{8,", 2, "truncated"),
    ("truncated_no_label", "Earlier \\boxed{3, 4}. Finally \\boxed{7", 2, "truncated"),
    ("truncated_brackets", "Final Scores: [[2, ", 2, "truncated"),
    ("too_many", "Scores: \\boxed{4, 8, 9}", 2, "wrong_count"),
    ("too_few", "Scores: \\boxed{4}", 2, "wrong_count"),
    ("out_of_range_high", "Scores: \\boxed{11, 3}", 2, "out_of_range"),
    ("out_of_range_zero", "Scores: \\boxed{0, 3}", 2, "out_of_range"),
    ("negative", "Scores: \\boxed{-1, 3}", 2, "out_of_range"),
    ("non_integer", "Scores: \\boxed{7.5, 3}", 2, "not_an_integer"),
    ("words", "Scores: \\boxed{x, x}", 2, "not_a_number"),
    ("placeholder_echo", "Scores: <the overall comprehensive score of all responses in order, \\boxed{x, x}>", 2, "not_a_number"),
    ("empty_block", "Scores: \\boxed{}", 1, "empty_block"),
    ("fraction", "Scores: \\boxed{8/10, 9/10}", 2, "not_a_number"),
    # The analysis quotes a score block, the judge's own block never comes: nothing before the label counts.
    ("label_after_quoted_block", "Response 1 wrote \\boxed{9, 9}.\nScores:", 2, "no_score_block"),
]


@pytest.mark.parametrize(("case", "text", "n", "code"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_outputs(case: str, text: str, n: int, code: str) -> None:
    judgement = parse_judgement(text, n)
    assert judgement.scores is None
    assert not judgement.valid
    assert judgement.reason is not None
    assert judgement.reason.split(":")[0] == code
    assert code in REASON_CODES


def test_custom_range() -> None:
    assert parse_judgement("Scores: \\boxed{0}", 1, (0, 1)).scores == [0]
    assert parse_judgement("Scores: \\boxed{2}", 1, (0, 1)).reason.startswith("out_of_range")


def test_principles_with_weights() -> None:
    principles = parse_judgement(PAPER_CASE, 2).principles
    assert principles == [
        Principle("Depth of Analogies and Metaphors: how vivid the images are.", 0.3),
        Principle("Technical Accuracy: correctness of the facts.", 0.4),
        Principle("Clarity: readable by a beginner.", 0.3),
    ]


def test_principles_inline_and_bare_weights() -> None:
    text = "Specific Criteria: 1. Accuracy (4) 2. Brevity (2)\nAnalysis: fine\nScores: \\boxed{3, 4}"
    assert parse_principles(text) == [Principle("Accuracy", 4.0), Principle("Brevity", 2.0)]


def test_principles_absent() -> None:
    assert parse_principles("Scores: \\boxed{3}") == []


def test_critique_is_analysis_section() -> None:
    judgement = parse_judgement(PAPER_CASE, 2)
    assert judgement.critique == (
        "Response 1 uses a rich analogy but slips on one fact. Response 2 is accurate and vivid."
    )


def test_critique_without_labels_is_text_before_block() -> None:
    judgement = parse_judgement("Both are fine but B is clearer. \\boxed{5, 7}", 2)
    assert judgement.critique == "Both are fine but B is clearer."


def test_never_raises_on_junk() -> None:
    junk = ["\\boxed{", "}}}}", "[[[[", "Scores: \\boxed{{{", "\x00\x01", "Scores:" * 1000, "\\boxed{" * 50, "9" * 5000]
    for text in junk:
        judgement = parse_judgement(text, 2)
        assert judgement.scores is None or len(judgement.scores) == 2
    assert parse_judgement(None, 2).reason.startswith("empty")  # type: ignore[arg-type]


def test_score_block_location_prefers_label() -> None:
    text = "Analysis: \\boxed{1, 1} is silly.\nScores: \\boxed{6, 7}"
    block = find_score_block(text)
    assert block is not None and block.content == "6, 7"
    assert block.label_start == text.index("Scores:")


@pytest.mark.parametrize("digits", [400, 5_000])
def test_a_number_of_hundreds_of_digits_is_out_of_range_not_a_crash(digits: int) -> None:
    # int(float(...)) overflowed past 308 digits (OverflowError); int() alone refuses past 4,300
    judgement = parse_judgement(f"Scores: \\boxed{{{'9' * digits}, 7}}", 2)
    assert judgement.scores is None and judgement.reason is not None
    assert judgement.reason.startswith("out_of_range: ")
    assert parse_judgement(f"Scores: \\boxed{{{'0' * 50}7, 7.0}}", 2).scores == [7, 7]
