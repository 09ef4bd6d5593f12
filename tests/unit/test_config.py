"""GRMConfig validation, files and CLI mapping."""

from __future__ import annotations

import pytest

from grm_reward import ConfigError, GRMConfig
from grm_reward.cli import build_parser
from grm_reward.cli.options import config_from_args


def test_defaults_are_the_papers() -> None:
    cfg = GRMConfig()
    assert cfg.k == 1 and cfg.effective_temperature == 0.0
    assert GRMConfig(k=8).effective_temperature == 0.5
    assert GRMConfig(k=8, temperature=0.9).effective_temperature == 0.9
    assert cfg.score_range == (1, 10) and not cfg.format_guarantee


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"k": 0}, "k"),
        ({"k": 4, "temperature": 0.0}, "would be identical"),
        ({"score_range": (5, 5)}, "0 <= lo < hi"),
        ({"score_range": (-1, 5)}, "0 <= lo < hi"),
        ({"template": "single_binary"}, "score_range=\\(0, 1\\)"),
        ({"backend": "nonsense"}, "unknown backend"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"kk": 3}, "kk"),
        ({"transformers": {"batch_size": 0}}, "transformers.batch_size"),
    ],
)
def test_invalid_configs_fail_when_built(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        GRMConfig.build(**values)


def test_configs_are_immutable_and_updated_copies_revalidate() -> None:
    cfg = GRMConfig(k=4)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.k = 2  # type: ignore[misc]
    assert cfg.updated(k=2).k == 2
    assert cfg.updated(transformers={"device": "cpu"}).transformers.device == "cpu"
    with pytest.raises(ConfigError):
        GRMConfig(k=1, temperature=0.0).updated(k=3)


def test_yaml_and_json_files(tmp_path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("k: 4\ntemperature: 0.7\ntransformers:\n  device: cpu\n")
    cfg = GRMConfig.from_file(yaml_file, k=6)
    assert (cfg.k, cfg.temperature, cfg.transformers.device) == (6, 0.7, "cpu")
    json_file = tmp_path / "c.json"
    json_file.write_text('{"k": 2, "score_range": [0, 5]}')
    assert GRMConfig.from_file(json_file).score_range == (0, 5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        GRMConfig.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        GRMConfig.from_file(tmp_path / "absent.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"system_prompt: caf\xe9\n")  # was a UnicodeDecodeError traceback out of the CLI
    with pytest.raises(ConfigError, match=r"config file .*latin.yaml is not UTF-8 \(byte 0xe9 at byte 19\)"):
        GRMConfig.from_file(latin)


def test_cli_flags_map_onto_config(tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("k: 4\nseed: 3\nformat_guarantee: true\n")
    args = build_parser().parse_args(
        ["score", "in.jsonl", "--config", str(base), "-k", "8", "--score-range", "0,5",
         "--no-format-guarantee", "--transformers-device", "cpu", "--failure-reward", "none", "--template", "default"]
    )
    cfg = config_from_args(args)
    assert cfg.k == 8 and cfg.seed == 3 and cfg.score_range == (0, 5)
    assert cfg.format_guarantee is False and cfg.transformers.device == "cpu"
    assert cfg.failure_reward is None and cfg.template == "default"


def test_cli_help_comes_from_field_descriptions(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--help"])
    out = capsys.readouterr().out
    assert "Judge samples per request; their scores are summed" in out
    assert "--transformers-batch-size" in out


def test_the_constructor_raises_config_error() -> None:
    # issue 11: pydantic's ValidationError escaped from GRMConfig(...); only GRMConfig.build mapped it
    from grm_reward.errors import ConfigError

    with pytest.raises(ConfigError, match="k"):
        GRMConfig(k=0)
    with pytest.raises(ConfigError, match="no_such_setting"):
        GRMConfig(no_such_setting=1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"server": {"batch_window_s": 0.02}}, r"server\.batch_window_s is now batching\.window_s"),
        ({"server": {"group_by_prompt": True}}, r"server\.group_by_prompt is now batching\.group_by_prompt"),
        ({"server": {"max_group_size": 4}}, r"server\.max_group_size is now batching\.max_group_size"),
        ({"server": {"max_batch_requests": 8}}, r"server\.max_batch_requests is now batching\.max_batch_requests"),
        ({"server": {"failure_reward": 0.0}}, r"server\.failure_reward is now failure_reward"),
    ],
)
def test_moved_keys_name_their_new_place(old, new) -> None:
    with pytest.raises(ConfigError, match=new):
        GRMConfig.build(**old)


def test_one_batching_section_with_documented_entry_defaults() -> None:
    cfg = GRMConfig()
    server, trl, verl = (cfg.batching_for(entry) for entry in ("server", "trl", "verl"))
    assert (server.group_by_prompt, server.max_group_size, server.window_s) == (False, 8, 0.01)
    assert (trl.group_by_prompt, trl.max_group_size) == (True, 4)
    assert (verl.group_by_prompt, verl.max_group_size, verl.window_s) == (True, 4, 0.05)
    chosen = GRMConfig(batching={"group_by_prompt": True, "max_group_size": 2, "window_s": 0.5}).batching_for("verl")
    assert (chosen.group_by_prompt, chosen.max_group_size, chosen.window_s) == (True, 2, 0.5)  # a setting wins
    with pytest.raises(ConfigError, match="max_responses=3"):
        GRMConfig(max_responses=3, batching={"max_group_size": 4})
    with pytest.raises(ConfigError, match="the trl default"):
        GRMConfig(max_responses=3).batching_for("trl")
    assert GRMConfig(max_responses=3).batching_for("server").max_group_size == 8  # grouping is off there


def test_one_failure_value() -> None:
    assert GRMConfig().failure_reward is None and GRMConfig().numeric_failure_reward == 0.0
    assert GRMConfig(failure_reward=-1.0).numeric_failure_reward == -1.0
    with pytest.raises(ConfigError, match="failure_reward"):
        GRMConfig(failure_reward=float("nan"))  # verl: a NaN turns a whole GRPO group's advantages into NaN
