"""Templates: the paper's text verbatim, one-pass filling, variants, custom files."""

from __future__ import annotations

import pytest

from grm_reward import Request, TemplateError
from grm_reward.prompts import fill, format_conversation, get_template, render_judge_prompt, select_template

PAPER_OPENING = (
    "You are a skilled little expert at scoring responses. You should evaluate given responses based on the "
    "given judging criteria.\n"
)
PAPER_OUTPUT_LINE = (
    "Scores: <the overall comprehensive score of all responses in order, separate by comma in the boxed, "
    "e.g., \\boxed{x, x} if there exists 2 responeses>.\n"
)


def test_default_template_is_the_papers() -> None:
    text = get_template("default").text
    assert text.startswith(PAPER_OPENING)
    assert text.endswith(PAPER_OUTPUT_LINE)  # typo "responeses" included, as published
    assert "   - Fully Adhered (9-10 points): The response fully complies" in text
    assert "#### Conversation Context ####\n{{context}}\n#### Responses to be Scored ####\n" in text


def test_render_default_for_three_responses_in_a_given_order() -> None:
    request = Request("What is 2+2?", ["four", "five", "4"])
    text = render_judge_prompt(request, [2, 0, 1], get_template("default"), (1, 10))
    assert (
        "#### Responses to be Scored ####\n"
        "[The Begin of Response 1]\n4\n[The End of Response 1]\n"
        "[The Begin of Response 2]\nfour\n[The End of Response 2]\n"
        "[The Begin of Response 3]\nfive\n[The End of Response 3]\n"
        "#### Output Format Requirements ####\n"
    ) in text
    assert "{{" not in text


def test_fill_is_one_pass_and_strict() -> None:
    assert fill("{{a}}-{{b}}", {"a": "{{b}}", "b": "x"}) == "{{b}}-x"
    with pytest.raises(TemplateError, match="no value for placeholder"):
        fill("{{missing}}", {})


def test_auto_selection() -> None:
    assert select_template("auto", num_responses=1, has_principles=False).name == "single"
    assert select_template("auto", num_responses=3, has_principles=False).name == "default"
    assert select_template("auto", num_responses=1, has_principles=True).name == "rubric"
    with pytest.raises(TemplateError, match="scores one response"):
        select_template("single", num_responses=2, has_principles=False)


def test_rubric_template_fills_range_and_principles() -> None:
    request = Request("q", ["a", "b"], principles="Only correctness matters.")
    text = render_judge_prompt(request, [0, 1], get_template("rubric"), (1, 5))
    assert "integer between 1 and 5" in text
    assert "#### Given Principles ####\nOnly correctness matters.\n" in text
    assert "e.g., \\boxed{x, x} for 2 responses" in text


def test_binary_template_and_range_mismatch() -> None:
    request = Request("Is 7 prime?", ["Yes."])
    text = render_judge_prompt(request, [0], get_template("single_binary"), (0, 1))
    assert "The score is 0 or 1, with 1 indicating that the response is correct." in text
    with pytest.raises(TemplateError, match="asks for scores in"):
        render_judge_prompt(request, [0], get_template("default"), (0, 1))


def test_dropping_principles_or_reference_is_an_error() -> None:
    with pytest.raises(TemplateError, match="principles would be dropped"):
        render_judge_prompt(Request("q", ["a", "b"], principles="p"), [0, 1], get_template("default"), (1, 10))
    with pytest.raises(TemplateError, match="needs principles"):
        render_judge_prompt(Request("q", ["a"]), [0], get_template("rubric"), (1, 10))


def test_custom_template_file(tmp_path) -> None:
    good = tmp_path / "mine.txt"
    good.write_text("Rate {{num_responses}} answers to: {{context}}\n{{responses}}Scores in [{{score_min}}, {{score_max}}].")
    text = render_judge_prompt(Request("q?", ["a"]), [0], get_template(str(good)), (0, 3))
    assert text == "Rate 1 answers to: q?\n[The Begin of Response 1]\na\n[The End of Response 1]\nScores in [0, 3]."
    bad = tmp_path / "bad.txt"
    bad.write_text("{{context}} {{responses}} {{nope}}")
    with pytest.raises(TemplateError, match="unknown placeholders"):
        get_template(str(bad))
    missing = tmp_path / "missing.txt"
    missing.write_text("{{context}} only")
    with pytest.raises(TemplateError, match="lacks required placeholders"):
        get_template(str(missing))
    with pytest.raises(TemplateError, match="unknown template"):
        get_template("no-such-template")


def test_conversation_formatting() -> None:
    assert format_conversation("plain") == "plain"
    assert format_conversation([{"role": "user", "content": "only"}]) == "only"
    assert format_conversation(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    ) == "System: S\n\nUser: U"
