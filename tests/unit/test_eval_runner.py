"""The evaluation run end to end with scripted judges: outputs, resume, errors, MetaRM@k, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grm_reward import GenerativeRewardModel, GRMConfig
from grm_reward.backends import ScriptedBackend
from grm_reward.cli import main
from grm_reward.errors import InputError, PromptTooLongError
from grm_reward.eval.runner import EvalSettings, evaluate
from tests.eval_helpers import CountingScorer, _marked_quality, marked, noisy_quality_judge
from tests.helpers import judge_text

NOISY = "tests.eval_helpers:noisy_quality_backend"


def write_pairs(path: Path, n: int, *, start: int = 0) -> Path:
    rows = [
        {"id": f"p{i}", "prompt": f"question {i}", "chosen": marked(f"good {i}", 6), "rejected": marked(f"bad {i}", 5),
         "subset": "even" if i % 2 == 0 else "odd"}
        for i in range(start, start + n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_bon(path: Path, n: int) -> Path:
    rows = [
        {"id": f"b{i}", "prompt": f"pick {i}", "best": 1,
         "responses": [marked("meh", 4), marked("best", 6), marked("poor", 3)]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def settings_for(tmp_path: Path, *benchmarks, **changes) -> EvalSettings:
    values = {"benchmarks": list(benchmarks), "output_dir": tmp_path / "out", "chunk_size": 2, "resamples": 8,
              "plots": False}
    values.update(changes)
    return EvalSettings(**values)


def test_report_markdown_and_plots(tmp_path) -> None:
    pairs, bon = write_pairs(tmp_path / "pairs.jsonl", 6), write_bon(tmp_path / "bon.jsonl", 4)
    settings = settings_for(tmp_path, ("pairwise", str(pairs)), ("bon", str(bon)), plots=True)
    report = evaluate(GRMConfig(k=4), settings, scorer=CountingScorer(k=4))
    out = tmp_path / "out"
    assert json.loads((out / "report.json").read_text()) == report
    assert report["ks"] == [1, 2, 4] and report["k_max"] == 4 and report["protocol"] == "list"
    pairwise, best_of_n = report["benchmarks"]
    assert pairwise["items_scored"] == 6 and best_of_n["items_scored"] == 4
    assert pairwise["samples"]["total"] == 24 and pairwise["samples"]["invalid"] == 0
    assert pairwise["tokens"]["prompt_per_item"] > 0 and pairwise["tokens"]["completion_per_item"] > 0
    assert set(pairwise["curves"]["voting"]) == {"1", "2", "4"}
    headline = pairwise["curves"]["voting"]["4"]["headline"]
    assert 0.0 <= headline["min"] <= headline["mean"] <= headline["max"] <= 1.0 and headline["rounds"] == 8
    assert set(pairwise["counts"]["subsets"]) == {"even", "odd"}
    markdown = (out / "report.md").read_text()
    assert "| benchmark | metric | items | Voting@1 | Voting@2 | Voting@4 |" in markdown
    assert "## pairwise JSONL" in markdown and "<summary>Subsets</summary>" in markdown
    for name in ("accuracy_vs_k", "invalid_share", "tokens_per_item"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_samples_nothing_twice(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 6)
    first_scorer = CountingScorer()
    first = evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=first_scorer)
    assert first_scorer.requests == 6
    again = CountingScorer()
    second = evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=again)
    assert again.requests == 0
    assert second["benchmarks"][0]["items_resumed"] == 6 and second["benchmarks"][0]["items_sampled_now"] == 0
    assert second["benchmarks"][0]["curves"] == first["benchmarks"][0]["curves"]
    # Settings that only read the samples differently reuse them too.
    third = CountingScorer()
    evaluate(GRMConfig(k=4, normalize="sum", tie_break="first"),
             settings_for(tmp_path, ("pairwise", str(pairs)), tie_policy="half", ks=(1, 3), resamples=3), scorer=third)
    assert third.requests == 0
    # More items: only the new ones are sampled.
    write_pairs(pairs, 9)
    more = CountingScorer()
    evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=more)
    assert more.requests == 3


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 6)

    class Interrupting(CountingScorer):
        async def ascore_batch(self, requests):
            if self.calls == 2:
                raise KeyboardInterrupt
            return await super().ascore_batch(requests)

    with pytest.raises(KeyboardInterrupt):
        evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=Interrupting())
    stored = list((tmp_path / "out" / "samples").glob("pairwise-*.jsonl"))
    assert len(stored) == 1 and len(stored[0].read_text().splitlines()) == 1 + 4  # header + 2 chunks of 2
    rest = CountingScorer()
    report = evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=rest)
    assert rest.requests == 2 and report["benchmarks"][0]["items_scored"] == 6


def test_changed_sampling_settings_never_reuse_samples(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=CountingScorer())
    for config, changes in [
        (GRMConfig(k=4, max_new_tokens=99), {}),
        (GRMConfig(k=4, temperature=0.9), {}),
        (GRMConfig(k=2), {}),
        (GRMConfig(k=4), {"protocol": "pairs"}),
    ]:
        scorer = CountingScorer(k=config.k)
        evaluate(config, settings_for(tmp_path, ("pairwise", str(pairs)), **changes), scorer=scorer)
        assert scorer.requests == 4, (config, changes)
    assert len(list((tmp_path / "out" / "samples").glob("pairwise-*.jsonl"))) == 5


def test_edited_rows_and_cut_lines_are_sampled_again(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=CountingScorer())
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    rows[0]["rejected"] = "an edited answer"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (store,) = (tmp_path / "out" / "samples").glob("pairwise-*.jsonl")
    lines = store.read_text().splitlines()
    store.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a crash mid-line
    scorer = CountingScorer()
    report = evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=scorer)
    assert scorer.requests == 2  # the edited row and the cut one
    assert any("unusable" in note for note in report["benchmarks"][0]["notes"])
    fresh = CountingScorer()
    evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs)), resume=False), scorer=fresh)
    assert fresh.requests == 4


def test_failed_items_are_reported_and_the_rest_scored(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 5)
    judge = noisy_quality_judge()

    def picky(call):
        if "question 3" in call.prompt:
            raise PromptTooLongError("the judge prompt has 9000 tokens, the context 8192")
        return judge(call)

    scorer = CountingScorer(judge=picky)
    report = evaluate(GRMConfig(k=4), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=scorer)
    bench = report["benchmarks"][0]
    assert bench["items_scored"] == 4 and bench["errors"]["count"] == 1
    assert bench["errors"]["first"][0].startswith("p3: ") and "9000 tokens" in bench["errors"]["first"][0]
    assert "Items that failed: 1" in (tmp_path / "out" / "report.md").read_text()


def test_meta_rm_curves_appear_with_meta_scores(tmp_path) -> None:
    bon = write_bon(tmp_path / "bon.jsonl", 12)

    class OracleMeta(CountingScorer):
        """Rates a sample 1 when it ranks the truly best response strictly on top, else -1."""

        async def ascore_batch(self, requests):
            results = await super().ascore_batch(requests)
            for request, result in zip(requests, results, strict=True):
                quality = [_marked_quality(r) for r in request.responses]
                best = quality.index(max(quality))
                for sample in result.samples:
                    top = max(sample.scores)
                    right = sample.scores[best] == top and sample.scores.count(top) == 1
                    sample.meta_score = 1.0 if right else -1.0
            return results

    settings = settings_for(tmp_path, ("bon", str(bon)), ks=(1, 2, 8), resamples=16)
    report = evaluate(GRMConfig(k=8), settings, scorer=OracleMeta(k=8))
    curves = report["benchmarks"][0]["curves"]
    assert set(curves) == {"voting", "meta_rm"}
    assert curves["meta_rm"]["8"]["headline"]["mean"] >= curves["voting"]["8"]["headline"]["mean"]
    assert curves["meta_rm"]["8"]["headline"]["mean"] > curves["voting"]["1"]["headline"]["mean"]
    assert "MetaRM@8" in (tmp_path / "out" / "report.md").read_text()
    # The meta scores were stored: a resumed run still has them.
    again = evaluate(GRMConfig(k=8), settings, scorer=CountingScorer(k=8))
    assert again["benchmarks"][0]["curves"]["meta_rm"] == curves["meta_rm"]


def test_cli_eval_end_to_end(tmp_path, capsys) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 6)
    out = tmp_path / "cli"
    code = main(["eval", "-b", f"pairwise={pairs}", "--backend", NOISY, "-k", "4", "-o", str(out), "--no-plots",
                 "--resamples", "4", "--subset", "even", "--limit", "2"])
    assert code == 0
    captured = capsys.readouterr()
    assert "| pairwise JSONL · pairs.jsonl | accuracy | 2 |" in captured.out
    assert "pairwise:pairs: 2 items selected of 6, 0 already sampled, 2 to sample" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["benchmarks"][0]["counts"]["subsets"] == {"even": 2}
    assert not (out / "plots").exists()
    # The same command again: nothing left to sample.
    assert main(["eval", "-b", f"pairwise={pairs}", "--backend", NOISY, "-k", "4", "-o", str(out), "--no-plots",
                 "--resamples", "4", "--subset", "even", "--limit", "2"]) == 0
    assert "2 already sampled, 0 to sample" in capsys.readouterr().err


def test_cli_eval_errors(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("GRM_REWARD_DATA", raising=False)
    assert main(["eval", "-b", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["eval", "-b", "rewardbench", "-o", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["eval", "-b", f"pairwise={tmp_path / 'missing.jsonl'}", "-o", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    assert main(["eval", "-b", f"pairwise={pairs}", "-k", "2", "--k-values", "1,4", "-o", str(tmp_path)]) == 2
    assert "k values must lie in 1..K" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert main(["eval", "--list-benchmarks"]) == 0
    assert "realmistake" in capsys.readouterr().out


def test_an_unwritable_output_directory_stops_before_any_judging(tmp_path, capsys) -> None:
    # the store's folder was made after the first chunk was judged: a traceback, exit status 1 ("items failed")
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    occupied = tmp_path / "a-file"
    occupied.write_text("")
    for out in (occupied, occupied / "below"):
        assert main(["eval", "-b", f"pairwise={pairs}", "--backend", "tests.score_backends:must_not_be_built",
                     "-k", "2", "-o", str(out), "--no-plots", "-q"]) == 2
        assert f"grm-reward: cannot write to the output directory {out}: " in capsys.readouterr().err


def test_a_full_disk_mid_run_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    import errno

    from grm_reward.eval import store

    def full(self, records, *, keep_text=True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(store.SampleStore, "append", full)
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    assert main(["eval", "-b", f"pairwise={pairs}", "--backend", NOISY, "-k", "2", "-o", str(tmp_path / "out"),
                 "--no-plots", "-q"]) == 2  # was a traceback and exit status 1 ("items failed")
    assert "grm-reward: cannot write the results: No space left on device (" in capsys.readouterr().err


def test_importing_the_harness_loads_no_plotting_or_engine() -> None:
    code = (
        "import sys, grm_reward.eval, grm_reward.cli.eval, grm_reward.eval.report;"
        "print(','.join(m for m in ('matplotlib', 'torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_meta_rm_curves_from_the_core_meta_rm(tmp_path) -> None:
    """With the core's meta RM (issue 5) rating the samples, MetaRM@k reads its scores."""
    from grm_reward import meta_rm
    quality = {"right": 9, "wrong": 2}

    def judge(call):  # careful samples score by quality, sloppy ones backwards
        careful = call.seed % 2 == 0
        return judge_text([quality[r] if careful else 11 - quality[r] for r in call.responses],
                          analysis="careful" if careful else "sloppy")

    rows = [{"id": f"m{i}", "prompt": f"q{i}", "chosen": "right", "rejected": "wrong"} for i in range(6)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=8,
                               meta_rm=meta_rm.ScriptedMetaRM(lambda text: 2.0 if "careful" in text else -15.8))
    report = evaluate(rm.config, settings_for(tmp_path, ("pairwise", str(data)), tie_policy="half"), scorer=rm)
    curves = report["benchmarks"][0]["curves"]
    # Seeds decide how many of the 8 samples are careful; the top half by meta score is mostly careful.
    assert curves["meta_rm"]["8"]["headline"]["mean"] >= 0.75
    assert curves["meta_rm"]["8"]["headline"]["mean"] > curves["voting"]["8"]["headline"]["mean"]
    (store,) = (tmp_path / "out" / "samples").glob("pairwise-*.jsonl")
    stored = [json.loads(line) for line in store.read_text().splitlines()[1:]]
    assert {s["meta_score"] for r in stored for s in r["samples"][0]} == {2.0, -15.8}


def test_a_subset_that_matches_nothing_is_reported(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    report = evaluate(GRMConfig(k=2), settings_for(tmp_path, ("pairwise", str(pairs)), subsets=["nothing*"]),
                      scorer=CountingScorer(k=2))
    bench = report["benchmarks"][0]
    assert bench["items_scored"] == 0 and bench["curves"] == {}
    assert any("no items selected" in note for note in bench["notes"])
    assert "| pairwise JSONL · pairs.jsonl | accuracy | 0 | – | – |" in (tmp_path / "out" / "report.md").read_text()


def test_a_benchmark_without_its_headline_sections_still_plots(tmp_path) -> None:
    (tmp_path / "llmbar").mkdir()
    rows = [{"input": f"q{i}", "output_1": marked("a", 6), "output_2": marked("b", 5), "label": 1} for i in range(3)]
    (tmp_path / "llmbar" / "Processed_FairEval.json").write_text(json.dumps(rows))
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    settings = settings_for(tmp_path, ("llmbar", str(tmp_path / "llmbar")), ("pairwise", str(pairs)), plots=True)
    report = evaluate(GRMConfig(k=2), settings, scorer=CountingScorer(k=2))  # warnings are errors in tests
    llmbar = report["benchmarks"][0]
    assert "headline" not in llmbar["curves"]["voting"]["2"] and "section:Processed" in llmbar["curves"]["voting"]["2"]
    assert any("no LLMBar figure" in note for note in llmbar["notes"])
    assert (tmp_path / "out" / "plots" / "accuracy_vs_k.png").is_file()


def test_judge_time_survives_resuming(tmp_path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    first = evaluate(GRMConfig(k=2), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=CountingScorer(k=2))
    again = evaluate(GRMConfig(k=2), settings_for(tmp_path, ("pairwise", str(pairs))), scorer=CountingScorer(k=2))
    seconds = first["benchmarks"][0]["judge_seconds"]
    assert seconds["total"] > 0 and seconds["per_item"] == pytest.approx(seconds["total"] / 4)
    assert again["benchmarks"][0]["judge_seconds"] == pytest.approx(seconds, rel=1e-3, abs=1e-3)


def test_credentials_in_the_config_are_never_written_out() -> None:
    from grm_reward.eval.store import public_settings, sampling_key

    class WithKey(GRMConfig):
        api_key: str | None = None

    secret = WithKey(k=2, api_key="sk-very-secret")
    assert public_settings(secret)["api_key"] == "<redacted>"
    assert "api_key" not in public_settings(secret, drop_secrets=True)
    assert sampling_key(secret, "list") == sampling_key(WithKey(k=2, api_key="another"), "list")
    assert "sk-very-secret" not in json.dumps(public_settings(secret))

    class Nested:  # an engine section holding the key, as an OpenAI-compatible backend's settings do
        def model_dump(self, mode: str) -> dict:
            return {"k": 2, "openai": {"base_url": "http://h/v1", "api_key": "sk-x", "api_key_env": "OPENAI_API_KEY"}}

    assert public_settings(Nested())["openai"] == {  # type: ignore[arg-type]
        "base_url": "http://h/v1", "api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY"}


def write_quality_pairs(path: Path, n: int, chosen: int, rejected: int) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"question {i}", "chosen": marked(f"good {i}", chosen),
             "rejected": marked(f"bad {i}", rejected)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_repeated_benchmark_entries_each_get_their_own_figures(tmp_path) -> None:
    # a judge that always prefers the right answer of a.jsonl and the wrong one of b.jsonl
    right = write_quality_pairs(tmp_path / "a.jsonl", 4, chosen=9, rejected=2)
    wrong = write_quality_pairs(tmp_path / "b.jsonl", 2, chosen=2, rejected=9)
    settings = settings_for(tmp_path, ("pairwise", str(right)), ("pairwise", str(wrong)))
    report = evaluate(GRMConfig(k=2), settings, scorer=CountingScorer(k=2, judge=noisy_quality_judge(noise=0)))
    first, second = report["benchmarks"]
    assert (first["name"], second["name"]) == ("pairwise:a", "pairwise:b")
    assert first["benchmark"] == second["benchmark"] == "pairwise"
    assert (first["items_scored"], second["items_scored"]) == (4, 2)
    assert first["curves"]["voting"]["2"]["headline"]["mean"] == 1.0
    assert second["curves"]["voting"]["2"]["headline"]["mean"] == 0.0
    assert first["samples_file"] != second["samples_file"]
    assert len(list((tmp_path / "out" / "samples").glob("pairwise-*.jsonl"))) == 2
    rows = [line for line in (tmp_path / "out" / "report.md").read_text().splitlines() if "| accuracy |" in line]
    assert len(rows) == 2 and rows[0] != rows[1]
    assert "a.jsonl" in rows[0] and "b.jsonl" in rows[1]
    # a second run resumes each entry from its own store
    again = evaluate(GRMConfig(k=2), settings, scorer=CountingScorer(k=2, judge=noisy_quality_judge(noise=0)))
    assert [b["items_resumed"] for b in again["benchmarks"]] == [4, 2]
    assert again["benchmarks"][1]["curves"] == second["curves"]


def test_the_same_file_twice_is_refused(tmp_path) -> None:
    pairs = write_quality_pairs(tmp_path / "a.jsonl", 2, chosen=9, rejected=2)
    with pytest.raises(InputError, match="twice"):
        evaluate(GRMConfig(k=2), settings_for(tmp_path, ("pairwise", str(pairs)), ("pairwise", str(pairs))),
                 scorer=CountingScorer(k=2))


def interrupting_backend(config: object) -> ScriptedBackend:
    """Backend factory for the CLI: Ctrl-C while judging the prompt that says INTERRUPT."""

    def judge(call):
        if "INTERRUPT" in call.prompt:
            raise KeyboardInterrupt
        return noisy_quality_judge(noise=0)(call)

    return ScriptedBackend(judge)


def test_cli_eval_exit_status_is_1_when_items_failed_and_130_when_interrupted(tmp_path, capsys) -> None:
    rows = [{"id": "ok", "prompt": "fine", "chosen": marked("a", 8), "rejected": marked("b", 2)},
            {"id": "boom", "prompt": "EXPLODE", "chosen": "GOOD", "rejected": "BAD"}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = ["eval", "-b", f"pairwise={data}", "-k", "2", "-o", str(tmp_path / "out"), "--no-plots", "--chunk-size", "2"]
    assert main([*common, "--backend", "tests.spct_helpers:exploding_backend", "-q"]) == 1
    assert "pairwise:pairs: 1 items failed, e.g. boom: the engine gave up" in capsys.readouterr().err
    data.write_text(json.dumps({**rows[0], "prompt": "INTERRUPT"}) + "\n", encoding="utf-8")
    assert main([*common, "--backend", "tests.unit.test_eval_runner:interrupting_backend", "-q"]) == 130
    assert "interrupted; finished items are stored under" in capsys.readouterr().err


def test_docs_cli_describes_every_eval_flag_and_exit_status() -> None:
    from grm_reward.cli import build_parser

    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = docs.split("## `grm-reward eval`", 1)[1].split("\n## ", 1)[0]
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]  # type: ignore[union-attr]
    group = next(g for g in eval_parser._action_groups if g.title == "evaluation")
    for action in group._group_actions:
        for flag in action.option_strings:
            assert f"`{flag}" in section or f"`{flag} " in section or f", `{flag}" in section, flag
    for status in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert status in section


def test_serving_settings_do_not_change_the_sampling_key() -> None:
    """A store written behind a server or with other batching is resumed, not sampled again; a
    setting that changes the samples still gives a new key."""
    from grm_reward.eval.store import sampling_key

    base = sampling_key(GRMConfig(k=2), "list")
    serving = GRMConfig(
        k=2, server={"port": 9999}, batching={"max_batch_requests": 3}, ray={"replicas": 3}, reuse={"result_cache": 0}
    )
    assert sampling_key(serving, "list") == base
    assert sampling_key(GRMConfig(k=3), "list") != base
    assert sampling_key(GRMConfig(k=2, seed=1), "list") != base
