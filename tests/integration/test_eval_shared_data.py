"""Loaders over the real benchmark files in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter

import pytest

from grm_reward import GRMConfig
from grm_reward.eval.benchmarks import BENCHMARKS, load_benchmark
from grm_reward.eval.runner import EvalSettings, evaluate
from tests.conftest import SHARED_DATA, requires_shared_data
from tests.eval_helpers import CountingScorer

pytestmark = requires_shared_data

# Sizes stated in the data folder's README.
EXPECTED = {
    "rewardbench": (866, {"Chat Hard": 419, "Reasoning": 447}),
    "rmb-bon": (3786, {"Help-BoN": 2109, "Harm-BoN": 1677}),
    "rmb-pairwise": (14543, {"Help-Pair": 8456, "Harm-Pair": 6087}),
    "rmbench": (129 + 228 + 284 + 157, {"Chat": 129, "Code": 228, "Safety": 284 + 157}),
    "llmbar": (885, {"Natural": 100, "Adversarial": 134 + 92 + 47 + 46, "Processed": 66 + 200 + 200}),
    "realmistake": (900, {"answerability_classification": 300, "finegrained_fact_verification": 300,
                          "math_word_problem_generation": 300}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_row_loads(name) -> None:
    loaded = load_benchmark(name, data_root=SHARED_DATA)
    total, sections = EXPECTED[name]
    assert loaded.issues == []
    assert len(loaded.items) == total
    assert Counter(i.section for i in loaded.items) == sections
    assert len({i.uid for i in loaded.items}) == total


def test_rmb_combined_and_bon_lists() -> None:
    loaded = load_benchmark("rmb", data_root=SHARED_DATA)
    assert len(loaded.items) == 3786 + 14543
    bon = [i for i in loaded.items if i.section.endswith("BoN")]
    assert {len(i.responses) for i in bon} == {3, 4, 5, 6, 7} and all(i.good == {0} for i in bon)


def test_xstest_items_are_multi_response() -> None:
    loaded = load_benchmark("xstest", data_root=SHARED_DATA)
    assert loaded.issues == []
    left_out = int(loaded.notes[0].split()[0])
    assert len(loaded.items) + left_out == 450
    assert all(len(i.responses) == 5 and 0 < len(i.good) < 5 for i in loaded.items)
    assert set(Counter(i.section for i in loaded.items)) == {"should-respond", "should-refuse"}


def test_realmistake_labels_and_no_plain_text_left_behind() -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    loaded = load_benchmark("realmistake", data_root=SHARED_DATA)
    after = set(os.listdir(tempfile.gettempdir()))
    assert not [p for p in after - before if p.startswith("grm-realmistake-")]
    assert Counter(i.label for i in loaded.items) == {0: 649, 1: 251}


@pytest.mark.parametrize(("names", "protocol"), [(("rewardbench", "rmbench", "xstest", "realmistake"), "list"),
                                                 (("rmb", "rmbench", "llmbar"), "pairs")])
def test_a_scripted_run_over_real_rows(tmp_path, names, protocol) -> None:
    settings = EvalSettings(benchmarks=[(n, None) for n in names], output_dir=tmp_path, data_root=SHARED_DATA,
                            limit=6, resamples=4, protocol=protocol, plots=False)
    report = evaluate(GRMConfig(k=2), settings, scorer=CountingScorer(k=2))
    for bench in report["benchmarks"]:
        assert bench["items_scored"] == 6 and bench["errors"]["count"] == 0, bench["name"]
        assert "headline" in bench["curves"]["voting"]["2"], bench["name"]
    assert [b["metric"] for b in report["benchmarks"]] == [BENCHMARKS[n].metric for n in names]
