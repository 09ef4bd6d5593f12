"""SPCT data builders with scripted judges: items, hints, rejection, too-easy items, row formats, bad input."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest

from grm_reward import GenerativeRewardModel, GRMConfig, InputError
from grm_reward.backends import ScriptedBackend
from grm_reward.backends.scripted import shown_responses
from grm_reward.cli import main
from grm_reward.errors import DataError
from grm_reward.meta_rm import meta_conversation, meta_text
from grm_reward.spct.items import PreferenceItem, item_from_row, load_items, shuffled_pair
from grm_reward.spct.meta_data import meta_row
from grm_reward.spct.rewards import rule_reward
from grm_reward.spct.rft import hint_wanted, is_too_easy, select_rft, sft_row
from grm_reward.spct.rl_data import rl_row
from grm_reward.spct.sampling import HINT_TEMPLATE, SpctSampler, hint_text, with_hint
from tests.conftest import SHARED_DATA, requires_shared_data
from tests.spct_helpers import first_or_hint_judge, quality_judge

QUALITY = "tests.spct_helpers:quality_backend"
FIRST_OR_HINT = "tests.spct_helpers:first_or_hint_backend"


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pairs(count, prefix="p"):
    return [{"id": f"{prefix}{i}", "prompt": f"question {i}", "chosen": f"GOOD answer {i}", "rejected": f"BAD answer {i}"}
            for i in range(count)]


# --- items ------------------------------------------------------------------------------------


def test_pairwise_rows_are_shuffled_with_a_seed_and_best_follows_chosen() -> None:
    bests = set()
    for i in range(20):
        item = item_from_row({"prompt": "q", "chosen": "GOOD", "rejected": "BAD"}, f"row{i}", seed=3)
        assert item.responses[item.best] == "GOOD"
        bests.add(item.best)
        again = item_from_row({"prompt": "q", "chosen": "GOOD", "rejected": "BAD"}, f"row{i}", seed=3)
        assert again == item
    assert bests == {0, 1}  # the chosen response is not always first
    assert shuffled_pair("a", ["b", "c"], "k", 1)[0][shuffled_pair("a", ["b", "c"], "k", 1)[1]] == "a"


def test_best_of_n_and_single_rows() -> None:
    bon = item_from_row({"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b", "c"], "best": 2}, "x")
    assert bon.responses == ("a", "b", "c") and bon.best == 2 and bon.label is None
    assert bon.prompt == ({"role": "user", "content": "q"},)
    single = item_from_row({"id": 7, "prompt": "q", "response": "a", "label": 0}, "x")
    assert single.id == "7" and single.n == 1 and single.label == 0 and single.best is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"chosen": "a", "rejected": "b"}, "missing key 'prompt'"),
        ({"prompt": "q", "responses": ["a", "b"]}, "needs 'best'"),
        ({"prompt": "q", "responses": ["a", "b"], "best": 2}, "response index"),
        ({"prompt": "q", "responses": ["a", "b"], "best": True}, "response index"),
        ({"prompt": "q", "responses": ["a"], "best": 0}, "at least 2"),
        ({"prompt": "q", "response": "a", "label": 3}, "0 .incorrect. or 1"),
        ({"prompt": "q", "response": "a"}, "needs 'label'"),
        ({"prompt": "q", "chosen": "a", "rejected": 5}, "strings"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "response": "c", "label": 1}, "exactly one of"),
        ({"prompt": "", "response": "a", "label": 1}, "prompt is empty"),
        ({"prompt": 3, "response": "a", "label": 1}, "prompt"),
    ],
)
def test_malformed_rows_say_why(row, message) -> None:
    with pytest.raises(InputError, match=message):
        item_from_row(row, "x")


def test_a_file_with_bad_lines_reports_them_with_file_and_line_and_keeps_the_rest(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "q1", "chosen": "a", "rejected": "b"},
            "{not json",
            "[1, 2]",
            {"prompt": "q2", "responses": ["a", "b"], "best": 9},
            {"prompt": "q3", "response": "a", "label": 1},
            {"id": "dup", "prompt": "q4", "responses": ["a", "b", "c"], "best": 1},
            {"id": "dup", "prompt": "q5", "responses": ["a", "b"], "best": 0},
        ],
    )
    loaded = load_items(str(path))
    assert [i.id for i in loaded.items] == ["mixed:1", "mixed:5", "dup", "dup#2"]
    assert [(issue.where, issue.source) for issue in loaded.issues] == [
        ("line 2", str(path)), ("line 3", str(path)), ("line 4", str(path))
    ]
    assert "not valid JSON" in loaded.issues[0].message and "response index" in loaded.issues[2].message
    with pytest.raises(DataError, match="does not exist"):
        load_items(str(tmp_path / "missing.jsonl"))


def test_limit_keeps_a_seeded_sample(tmp_path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", pairs(10))
    first = [i.id for i in load_items(str(path), limit=4, seed=1).items]
    assert len(first) == 4 and first == [i.id for i in load_items(str(path), limit=4, seed=1).items]


def test_hh_rlhf_transcripts_become_a_conversation_and_two_answers(tmp_path) -> None:
    shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: tell me a joke"
    rows = [
        {"chosen": shared + "\n\nAssistant: a clean joke", "rejected": shared + "\n\nAssistant: a rude joke"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: DIFFERENT\n\nAssistant: c"},
        {"chosen": "no transcript", "rejected": "\n\nHuman: a\n\nAssistant: b"},
    ]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_items(f"hh_rlhf={path}")
    (item,) = loaded.items
    assert item.prompt == (
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "tell me a joke"},
    )
    assert item.responses[item.best] == "a clean joke" and set(item.responses) == {"a clean joke", "a rude joke"}
    assert [i.where for i in loaded.issues] == ["line 2", "line 3"]


def test_named_sets_need_a_path_or_a_data_root(monkeypatch) -> None:
    monkeypatch.delenv("GRM_REWARD_DATA", raising=False)
    with pytest.raises(DataError, match="data root"):
        load_items("rewardbench")


@requires_shared_data
def test_shared_sets_map_to_items() -> None:
    rb = load_items("rewardbench", data_root=SHARED_DATA, limit=40)
    assert len(rb.items) == 40 and not rb.issues
    assert {i.best for i in rb.items} == {0, 1} and all(i.n == 2 for i in rb.items)
    rm = load_items("realmistake", data_root=SHARED_DATA, limit=20)
    assert all(i.n == 1 and i.label in (0, 1) for i in rm.items)
    xs = load_items("xstest", data_root=SHARED_DATA)
    assert any("several acceptable" in note for note in xs.notes)
    assert all(i.best is not None for i in xs.items)


# --- sampling and hints -----------------------------------------------------------------------


def sample(judge, items, count, *, hinted=False, **config):
    config.setdefault("k", max(count, 1))
    with GenerativeRewardModel(GRMConfig(**config), backend=ScriptedBackend(judge)) as rm:
        return SpctSampler(rm).sample(items, count, hinted=hinted)


def test_hint_text_names_the_shown_position() -> None:
    assert HINT_TEMPLATE == "The best response is: Response {index}"
    assert hint_text(0) == "The best response is: Response 1"
    assert with_hint("prompt text\n", 2) == "prompt text\nThe best response is: Response 3"


def test_each_sample_sees_a_seeded_order_and_is_read_in_that_order() -> None:
    item = PreferenceItem("a", "q", ("GOOD x", "BAD y", "meh z"), best=0)
    samples = sample(quality_judge, [item], 8)
    assert len({s.order for s in samples[0]}) > 1  # shuffled per sample
    for s in samples[0]:
        assert s.correct and s.shown_scores is not None
        assert s.judgement().scores == [9, 2, 5]  # mapped back to the item's order
        assert shown_responses(s.messages[-1]["content"]) == [item.responses[i] for i in s.order]
    assert [s.order for s in sample(quality_judge, [item], 8)[0]] == [s.order for s in samples[0]]  # seeded


def test_hinted_samples_see_the_hint_but_the_row_prompt_does_not() -> None:
    item = PreferenceItem("a", "q", ("x", "y", "z"), best=1)
    seen = []

    def judge(call):
        seen.append(call.prompt)
        return first_or_hint_judge(call)

    (samples,) = sample(judge, [item], 4, hinted=True)
    for prompt, s in zip(seen, samples):
        assert prompt.endswith(hint_text(s.shown_best))
        assert s.correct  # the hint-follower scores the hinted position highest
        assert "The best response is" not in s.messages[-1]["content"]
        row = sft_row(s)
        assert row["hinted"] is True and "The best response is" not in row["messages"][0]["content"]
    with pytest.raises(InputError, match="needs a best"):
        sample(judge, [PreferenceItem("s", "q", ("x",), label=1)], 1, hinted=True)


def test_incorrect_and_unreadable_samples_are_rejected_strictly() -> None:
    item = PreferenceItem("a", "q", ("x", "y"), best=1)
    (samples,) = sample(first_or_hint_judge, [item], 6)
    for s in samples:
        assert s.correct == (s.order[0] == 1)  # right only when the best happens to be shown first
    tie = sample(lambda call: "Scores: \\boxed{7, 7}", [item], 2)[0]
    assert not any(s.correct for s in tie)
    unreadable = sample(first_or_hint_judge, [PreferenceItem("u", "UNREADABLE", ("x", "y"), best=0)], 2)[0]
    assert all(s.shown_scores is None and not s.correct and s.reason for s in unreadable)
    kept, easy = select_rft(samples + tie + unreadable, (), samples=14, keep_easy=False)
    assert not easy and kept == [s for s in samples if s.correct]


def test_single_responses_use_the_threshold_rule() -> None:
    good = PreferenceItem("g", "q", ("GOOD",), label=1)
    bad_marked_correct = PreferenceItem("b", "q", ("BAD",), label=1)
    bad = PreferenceItem("c", "q", ("BAD",), label=0)
    results = sample(quality_judge, [good, bad_marked_correct, bad], 1)
    assert [r[0].correct for r in results] == [True, False, True]
    # the same rule as the RL reward
    assert rule_reward(results[0][0].text, 1, label=1) == 1.0
    with GenerativeRewardModel(GRMConfig(), backend=ScriptedBackend(quality_judge)) as rm:
        strict = SpctSampler(rm, threshold=9)
        assert not asyncio.run(strict.asample([good], 1))[0][0].correct


# --- RFT selection ------------------------------------------------------------------------------


def test_too_easy_items_and_hint_modes() -> None:
    pair = PreferenceItem("a", "q", ("GOOD", "BAD"), best=0)
    single = PreferenceItem("s", "q", ("GOOD",), label=1)
    (easy,) = sample(quality_judge, [pair], 3)
    assert is_too_easy(easy, 3) and not is_too_easy(easy[:2], 3)
    assert select_rft(easy, (), samples=3, keep_easy=False) == ([], True)
    assert select_rft(easy, (), samples=3, keep_easy=True) == (easy, True)
    (mixed,) = sample(first_or_hint_judge, [PreferenceItem("m", "q", ("x", "y"), best=1)], 6)
    assert any(s.correct for s in mixed) and not all(s.correct for s in mixed)
    wrong = [s for s in mixed if not s.correct]
    assert hint_wanted("off", pair, wrong, too_easy=False, keep_easy=False) is False
    assert hint_wanted("on", pair, easy, too_easy=True, keep_easy=False) is True
    assert hint_wanted("both", pair, easy, too_easy=True, keep_easy=False) is False
    assert hint_wanted("both", pair, easy, too_easy=True, keep_easy=True) is True
    assert hint_wanted("both", pair, mixed, too_easy=False, keep_easy=False) is True
    assert hint_wanted("fallback", pair, mixed, too_easy=False, keep_easy=False) is False
    assert hint_wanted("fallback", pair, wrong, too_easy=False, keep_easy=False) is True
    assert hint_wanted("both", single, [], too_easy=False, keep_easy=False) is False  # no informative hint


# --- row formats ------------------------------------------------------------------------------


def test_rl_rows_name_the_best_by_its_shown_position() -> None:
    config = GRMConfig()
    positions = set()
    for i in range(12):
        item = PreferenceItem(f"i{i}", "q", ("GOOD one", "BAD two", "BAD three"), best=0)
        row = rl_row(item, config, seed=0)
        assert set(row) == {"prompt", "num_responses", "best", "label", "id", "score_range"}
        assert row["prompt"][0]["role"] == "user" and len(row["prompt"]) == 1
        shown = shown_responses(row["prompt"][0]["content"])
        assert shown[row["best"]] == "GOOD one" and row["num_responses"] == 3 and row["label"] is None
        positions.add(row["best"])
        good_text = "Scores: \\boxed{" + ", ".join("9" if "GOOD" in r else "2" for r in shown) + "}"
        assert rule_reward(good_text, row["num_responses"], best=row["best"], label=row["label"]) == 1.0
        assert row == rl_row(item, config, seed=0)
    assert len(positions) > 1
    single = rl_row(PreferenceItem("s", "q", ("r",), label=0), GRMConfig(system_prompt="Be a judge."), seed=0)
    assert single["best"] is None and single["label"] == 0 and single["prompt"][0] == {
        "role": "system", "content": "Be a judge."}


def test_meta_rows_are_the_meta_rm_input_at_inference() -> None:
    item = PreferenceItem("a", [{"role": "user", "content": "q"}], ("x", "y"), best=1)  # type: ignore[arg-type]
    (samples,) = sample(first_or_hint_judge, [item], 4)

    class FakeTokenizer:
        chat_template = "yes"

        def apply_chat_template(self, messages, tokenize=False):
            return "|".join(f"{m['role']}:{m['content']}" for m in messages)

    for index, s in enumerate(samples):
        conversation = meta_conversation(item.request, s.judgement())
        plain = meta_row(s, None, index=index)
        assert plain["text"] == meta_text(conversation) and plain["text"].startswith("Prompt: Please score")
        assert plain["label"] == int(s.correct) and plain["id"] == "a" and plain["sample"] == index
        assert plain["messages"] == [dict(m) for m in conversation]
        templated = meta_row(s, FakeTokenizer())
        assert templated["text"] == meta_text(conversation, FakeTokenizer())
        # the meta RM sees the responses in the order this sample saw them
        assert shown_responses(conversation[0]["content"]) == [item.responses[i] for i in s.order]


# --- the command line ---------------------------------------------------------------------------


def test_rft_data_cli_rejects_wrong_samples_and_drops_easy_items(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [*pairs(4), "{broken", {"prompt": "q", "response": "GOOD", "label": 1}])
    out = tmp_path / "rft.jsonl"
    assert main(["spct", "rft-data", str(src), "-o", str(out), "--backend", QUALITY, "-q"]) == 0
    assert read_jsonl(out) == []  # the quality judge is always right: every item is too easy
    assert "line 5" in capsys.readouterr().err
    assert main(["spct", "rft-data", str(src), "-o", str(out), "--backend", QUALITY, "--keep-easy"]) == 0
    rows = read_jsonl(out)
    summary = capsys.readouterr().out
    assert len(rows) == 5 * 3 + 4  # 3 plain per item, + 1 hinted per pair (both mode keeps easy ones too)
    assert "too easy (every plain sample correct): 5 items, kept" in summary and "rows written: 19" in summary
    row = rows[0]
    assert set(row) == {"messages", "id", "hinted", "num_responses", "order", "scores"}
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"].endswith("\\boxed{" + ", ".join(map(str, row["scores"])) + "}")
    assert len(shown_responses(row["messages"][0]["content"])) == row["num_responses"] == 2


def test_an_item_the_engine_fails_on_is_reported_and_the_others_are_written(tmp_path, capsys) -> None:
    rows = [*pairs(3), {"id": "boom", "prompt": "EXPLODE", "chosen": "GOOD", "rejected": "BAD"}]
    src, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    backend = "tests.spct_helpers:exploding_backend"
    assert main(["spct", "rft-data", str(src), "-o", str(out), "--backend", backend, "--keep-easy"]) == 0
    captured = capsys.readouterr()
    assert "item boom failed: the engine gave up" in captured.err and "3 sampled, 1 failed" in captured.out
    assert {r["id"] for r in read_jsonl(out)} == {"p0", "p1", "p2"}
    assert main(["spct", "meta-data", str(src), "-o", str(out), "--backend", backend, "--tokenizer", "none",
                 "--chunk-size", "1", "-q"]) == 0
    assert {r["id"] for r in read_jsonl(out)} == {"p0", "p1", "p2"}
    assert main(["spct", "rft-data", str(src), "-o", str(out), "--backend", "no.such.module:factory"]) == 2
    assert "cannot load backend factory" in capsys.readouterr().err


def test_rft_data_cli_hint_modes(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", pairs(6))
    out, traj = tmp_path / "rft.jsonl", tmp_path / "traj.jsonl"
    args = ["spct", "rft-data", str(src), "-o", str(out), "--backend", FIRST_OR_HINT, "--samples", "3", "-q"]

    assert main([*args, "--hint", "off", "--trajectories", str(traj)]) == 0
    plain_rows = read_jsonl(out)
    trajectories = read_jsonl(traj)
    assert len(trajectories) == 18 and not any(t["hinted"] for t in trajectories)
    by_item: dict[str, list[bool]] = {}
    for t in trajectories:
        by_item.setdefault(t["id"], []).append(t["correct"])
    easy = {i for i, c in by_item.items() if all(c)}
    assert len(plain_rows) == sum(sum(c) for i, c in by_item.items() if i not in easy)
    assert all(r["hinted"] is False for r in plain_rows)
    for row in plain_rows:  # kept rows are the correct ones: best (chosen, GOOD) shown first and scored 9
        assert "GOOD" in shown_responses(row["messages"][0]["content"])[0] and row["scores"][0] == 9

    assert main([*args, "--hint", "both"]) == 0
    both = read_jsonl(out)
    hinted = [r for r in both if r["hinted"]]
    assert len(hinted) == 6 - len(easy)  # one per item not dropped as too easy, all correct
    assert [r for r in both if not r["hinted"]] == plain_rows

    assert main([*args, "--hint", "fallback"]) == 0
    fallback = [r for r in read_jsonl(out) if r["hinted"]]
    assert len(fallback) == sum(1 for c in by_item.values() if not any(c))

    assert main([*args, "--hint", "on"]) == 0
    on = read_jsonl(out)
    assert len(on) == 6 and all(r["hinted"] for r in on)

    # never forced: the format guarantee (which this scripted judge could not serve) is switched off
    assert main([*args, "--hint", "off", "--format-guarantee"]) == 0
    assert read_jsonl(out) == plain_rows
    assert "--format-guarantee ignored" in capsys.readouterr().err


def test_meta_data_cli_samples_or_reuses_trajectories(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [*pairs(4), {"id": "u", "prompt": "UNREADABLE", "chosen": "a",
                                                           "rejected": "b"}])
    out, traj = tmp_path / "meta.jsonl", tmp_path / "traj.jsonl"
    common = ["--backend", FIRST_OR_HINT, "--tokenizer", "none"]
    assert main(["spct", "meta-data", str(src), "-o", str(out), *common]) == 0
    rows = read_jsonl(out)
    summary = capsys.readouterr().out
    assert len(rows) == 12 and {r["id"] for r in rows} == {"p0", "p1", "p2", "p3"}  # unreadable left out
    assert {r["label"] for r in rows} == {0, 1} and "positive (label 1) share" in summary
    assert all(r["text"].startswith("Prompt: Please score the responses.") for r in rows)
    assert main(["spct", "meta-data", str(src), "-o", str(out), *common, "--keep-unreadable", "-q"]) == 0
    assert len(read_jsonl(out)) == 15

    assert main(["spct", "rft-data", str(src), "-o", str(tmp_path / "rft.jsonl"), "--backend", FIRST_OR_HINT,
                 "--trajectories", str(traj), "-q"]) == 0
    assert main(["spct", "meta-data", str(traj), "-o", str(out), "--tokenizer", "none"]) == 0
    reused = read_jsonl(out)
    assert "no judge calls" in capsys.readouterr().out
    assert [(r["id"], r["label"], r["text"]) for r in reused] == [(r["id"], r["label"], r["text"]) for r in rows]

    broken = traj.read_text(encoding="utf-8").splitlines()
    broken[1] = json.dumps({**json.loads(broken[1]), "order": [0, 0]})
    traj.write_text("\n".join([*broken, "{oops"]) + "\n", encoding="utf-8")
    assert main(["spct", "meta-data", str(traj), "-o", str(out), "--tokenizer", "none", "-q"]) == 0
    err = capsys.readouterr().err
    assert "line 2: 'order' [0, 0] is not a permutation" in err and f"line {len(broken) + 1}: not valid JSON" in err
    assert len(read_jsonl(out)) == len(reused) - 1


def test_rl_data_cli(tmp_path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [*pairs(3), {"prompt": "q", "response": "r", "label": 1}, "oops"])
    out = tmp_path / "rl.jsonl"
    assert main(["spct", "rl-data", str(src), "-o", str(out), "--seed", "5"]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "in:4"]
    for row in rows[:3]:
        assert "GOOD" in shown_responses(row["prompt"][0]["content"])[row["best"]]
    assert rows[3]["label"] == 1 and rows[3]["best"] is None and rows[3]["num_responses"] == 1
    captured = capsys.readouterr()
    assert "line 5" in captured.err and "4 rows" in captured.out
    assert main(["spct", "rl-data", str(tmp_path / "nothing.jsonl"), "-o", str(out)]) == 2
    assert main(["spct", "rl-data", str(src), "-o", str(out), "--template", "single_binary",
                 "--score-range", "0,1"]) == 0  # pairs cannot use a single-response template: skipped
    assert [r["id"] for r in read_jsonl(out)] == ["in:4"]
    assert "scores one response" in capsys.readouterr().err


def test_train_meta_reports_bad_rows_and_needs_rows(tmp_path, capsys) -> None:
    from grm_reward.spct.meta_train import read_meta_rows

    path = write_jsonl(tmp_path / "m.jsonl", [
        {"text": "a", "label": 1, "id": "x"}, {"text": "b", "label": 2}, "nope", {"label": 0},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}], "label": 0},
    ])
    examples, issues = read_meta_rows(path)
    assert [e.label for e in examples] == [1, 0] and examples[1].messages is not None
    assert [i.where for i in issues] == ["line 2", "line 3", "line 4"]
    empty = write_jsonl(tmp_path / "empty.jsonl", ["{}"])
    assert main(["spct", "train-meta", str(empty), "-o", str(tmp_path / "ckpt")]) == 2
    assert "no usable rows" in capsys.readouterr().err


# --- the RFT loop as a library function, the CLI a thin shell over it ---------------------------


def test_run_rft_returns_rows_and_stats_and_the_cli_writes_exactly_them(tmp_path, capsys) -> None:
    from grm_reward import GenerativeRewardModel
    from grm_reward.spct.rft import RFTSettings, run_rft
    from tests.spct_helpers import exploding_judge

    rows = [*pairs(5), {"id": "boom", "prompt": "EXPLODE", "chosen": "GOOD", "rejected": "BAD"},
            {"id": "many", "prompt": "q", "responses": ["GOOD"] * 40, "best": 0}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    items = load_items(str(src)).items
    settings = RFTSettings(samples=2, hint="both", keep_easy=True, chunk_size=3)
    chunks, reported, counted = [], [], []
    with GenerativeRewardModel(backend=ScriptedBackend(exploding_judge), k=2) as rm:
        outcome = run_rft(rm, items, settings, report=reported.append,
                          on_chunk=lambda r, t: chunks.append((len(r), len(t))), progress=counted.append)
    stats = outcome.stats
    assert (stats.items, stats.failed_items, stats.skipped_rows) == (5, 1, 1)  # 40 responses > max_responses
    assert len(outcome.rows) == stats.rows == 5 * 3 and len(outcome.trajectories) == 5 * 3
    assert stats.plain_samples == 10 and stats.hinted_samples == 5 and stats.too_easy == stats.too_easy_kept == 5
    assert sum(r for r, _ in chunks) == 15 and sum(counted) == 6  # the checked items, chunk by chunk
    assert any("item boom failed" in line for line in reported) and any("line 7" in line and "max_responses" in line for line in reported)

    out = tmp_path / "rft.jsonl"
    assert main(["spct", "rft-data", str(src), "-o", str(out), "--backend", "tests.spct_helpers:exploding_backend",
                 "--samples", "2", "--keep-easy", "--chunk-size", "3", "-q"]) == 0
    assert read_jsonl(out) == outcome.rows


def test_rft_settings_are_checked() -> None:
    from grm_reward.errors import ConfigError
    from grm_reward.spct.rft import RFTSettings

    with pytest.raises(ConfigError, match="samples"):
        RFTSettings.build(samples=0)
    with pytest.raises(ConfigError, match="hint"):
        RFTSettings.build(hint="sometimes")


def test_train_meta_flags_come_from_the_settings_model(tmp_path, capsys) -> None:
    from grm_reward.spct.meta_train import MetaTrainSettings

    with pytest.raises(SystemExit):
        main(["spct", "train-meta", "--help"])
    help_text = capsys.readouterr().out
    for name, info in MetaTrainSettings.model_fields.items():
        if name != "output_dir":
            assert f"--{name.replace('_', '-')}" in help_text
            assert info.description and info.description.split()[0] in help_text
    rows = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": 1}])
    assert main(["spct", "train-meta", str(rows), "-o", str(tmp_path / "ckpt"), "--eval-split", "1.5"]) == 2
    assert "eval_split" in capsys.readouterr().err


def test_the_sampler_honours_balanced_shuffling() -> None:
    # issue 11: the sampler re-implemented planning and ignored shuffle="balanced"
    item = PreferenceItem("a", "q", ("GOOD x", "BAD y", "meh z"), best=0)
    (samples,) = sample(quality_judge, [item], 6, shuffle="balanced")
    positions = [s.order.index(r) for s in samples for r in range(3)]
    assert all(positions.count(p) == 6 for p in range(3))
    for r in range(3):  # each response is shown at each position equally often
        assert sorted(s.order.index(r) for s in samples) == [0, 0, 1, 1, 2, 2]


def test_the_sampler_judges_through_the_models_plan() -> None:
    item = PreferenceItem("a", "q", ("GOOD x", "BAD y"), best=0)
    config = GRMConfig(k=4, system_prompt="be fair")
    with GenerativeRewardModel(config, backend=ScriptedBackend(quality_judge)) as rm:
        (judging,) = rm.judge_batch([item.request], purpose="plain:")
        (samples,) = SpctSampler(rm).sample([item], 4)
    assert [s.seed for s in samples] == [j.seed for j in judging.judgements]
    assert [list(s.order) for s in samples] == [j.order for j in judging.judgements]
    for s in samples:
        assert s.messages == judging.plan.group_of(s.order).messages
        assert s.messages[0] == {"role": "system", "content": "be fair"}

