"""The SPCT rule reward, Eq. 10-11."""

from __future__ import annotations

import pytest

from grm_reward.spct import is_correct, rule_reward


@pytest.mark.parametrize(
    ("text", "n", "kwargs", "expected"),
    [
        ("Scores: \\boxed{3, 8}", 2, {"best": 1}, 1.0),
        ("Scores: \\boxed{8, 3}", 2, {"best": 1}, -1.0),
        ("Scores: \\boxed{8, 8}", 2, {"best": 1}, -1.0),  # tie at the top
        ("Scores: \\boxed{2, 9, 9}", 3, {"best": 1}, -1.0),
        ("Scores: \\boxed{2, 9, 8}", 3, {"best": 1}, 1.0),
        ("Scores: \\boxed{2, 9}", 3, {"best": 1}, -1.0),  # wrong count
        ("no scores at all", 2, {"best": 0}, -1.0),
        ("Scores: \\boxed{1}", 1, {"label": 1, "score_range": (0, 1)}, 1.0),
        ("Scores: \\boxed{0}", 1, {"label": 1, "score_range": (0, 1)}, -1.0),
        # one response, 1-10 judge, 0/1 label: correct above 5, incorrect at or below 5
        ("Scores: \\boxed{7}", 1, {"label": 1}, 1.0),
        ("Scores: \\boxed{6}", 1, {"label": 1}, 1.0),
        ("Scores: \\boxed{5}", 1, {"label": 1}, -1.0),
        ("Scores: \\boxed{1}", 1, {"label": 1}, -1.0),  # the old exact-match rule said +1 here
        ("Scores: \\boxed{5}", 1, {"label": 0}, 1.0),
        ("Scores: \\boxed{6}", 1, {"label": 0}, -1.0),
        ("Scores: \\boxed{8}", 1, {"label": 1, "threshold": 8}, -1.0),
        ("Scores: \\boxed{8}", 1, {"label": 0, "threshold": 8}, 1.0),
        ("Scores: \\boxed{0}", 1, {"label": 0, "score_range": (0, 1)}, 1.0),
        ("Scores: \\boxed{11, 3}", 2, {"best": 0}, -1.0),  # out of range
    ],
)
def test_rule_reward(text, n, kwargs, expected) -> None:
    assert rule_reward(text, n, **kwargs) == expected


def test_missing_labels_are_errors() -> None:
    with pytest.raises(ValueError, match="label"):
        is_correct([3])
    with pytest.raises(ValueError, match="best"):
        is_correct([3, 4])
    with pytest.raises(ValueError, match="not a response index"):
        is_correct([3, 4], best=2)
    with pytest.raises(ValueError, match=r"0 \(incorrect\) or 1"):
        is_correct([7], label=7)
    with pytest.raises(ValueError, match=r"0 \(incorrect\) or 1"):
        is_correct([1], label=True)


def test_threshold_defaults_to_the_lower_midpoint() -> None:
    from grm_reward.spct.rewards import default_threshold

    assert default_threshold((1, 10)) == 5
    assert default_threshold((0, 1)) == 0  # the paper's S_1 = r_1 on its 0/1 training scale
    assert default_threshold((0, 100)) == 50
