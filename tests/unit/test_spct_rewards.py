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
        ("Scores: \\boxed{7}", 1, {"label": 7}, 1.0),
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
