"""The Ray fleet's parts that need no cluster: the board's routing policy, the config section,
the CLI flags and the application builder's arguments (tests/integration/test_ray_fleet.py runs it)."""

from __future__ import annotations

from collections import Counter

import pytest

from grm_reward import GRMConfig
from grm_reward.cli import build_parser
from grm_reward.cli.options import config_from_args
from grm_reward.errors import ConfigError
from grm_reward.types import Request
from tests.conftest import is_available

needs_ray = pytest.mark.skipif(
    not (is_available("ray") and is_available("grpc_reflection")), reason="needs pip install 'grm-reward[ray]'"
)


@pytest.fixture
def fleet():
    import grm_reward.server.ray as fleet

    return fleet


@needs_ray
def test_a_new_prompt_goes_to_the_least_loaded_replica_and_stays_there(fleet) -> None:
    board = fleet.FleetBoard()
    assert board.assign("p1", {"a": 3, "b": 1}) == "b"
    assert board.assign("p1", {"a": 0, "b": 9}) == "b"  # sticky while b is alive, whatever the load
    assert board.assign("p2", {"a": 0, "b": 9}) == "a"
    assert board.assign("p1", {"a": 5}) == "a"  # b died: p1 moves to a live replica and stays there
    assert board.assign("p1", {"a": 5, "b": 0}) == "a"
    assert board.held() == {"a": 2}


@needs_ray
def test_new_prompts_at_equal_load_split_evenly(fleet) -> None:
    board = fleet.FleetBoard()
    split = Counter(board.assign(f"prompt {i}", {"a": 0, "b": 0}) for i in range(256))
    assert split == {"a": 128, "b": 128}  # consistent hashing gave 160/96 here; keys held break the ties
    split = Counter(board.assign(f"more {i}", {"a": 0, "b": 0, "c": 0, "d": 0}) for i in range(256))
    assert split == {"c": 128, "d": 128}  # two replicas added: the new ones take new prompts until even
    assert board.held() == {"a": 128, "b": 128, "c": 128, "d": 128}


@needs_ray
def test_the_board_forgets_the_oldest_prompts(fleet) -> None:
    board = fleet.FleetBoard(max_keys=3)
    for i in range(5):
        board.assign(f"p{i}", {"a": 0})
    assert board.owner("p0") is None and board.owner("p4") == "a" and board.held() == {"a": 3}


@needs_ray
def test_only_fresh_reports_count_as_replicas_up(fleet, monkeypatch) -> None:
    board = fleet.FleetBoard()
    clock = [100.0]
    monkeypatch.setattr(fleet.time, "monotonic", lambda: clock[0])
    board.report("a", {"queue_depth": 2})
    clock[0] += fleet.REPORT_STALE_S / 2
    board.report("b", {"queue_depth": 0})
    assert set(board.fleet()) == {"a", "b"} and board.fleet()["a"]["queue_depth"] == 2
    clock[0] += fleet.REPORT_STALE_S * 0.75
    assert set(board.fleet()) == {"b"}


@needs_ray
def test_a_grpo_group_shares_one_affinity_key_and_prompts_differ(fleet) -> None:
    group = [Request(prompt="q", responses=[r]) for r in ("a", "b", "c")]
    assert len({fleet.affinity_key(r) for r in group}) == 1
    assert fleet.affinity_key(Request(prompt="other", responses=["a"])) != fleet.affinity_key(group[0])
    assert fleet.affinity_key(Request(prompt="q", responses=["a"], reference="x")) != fleet.affinity_key(group[0])


def test_ray_section_validates_its_bounds() -> None:
    assert GRMConfig(ray={"min_replicas": 1, "max_replicas": 4}).ray.max_replicas == 4
    with pytest.raises(ConfigError, match="go together"):
        GRMConfig.build(ray={"min_replicas": 1})
    with pytest.raises(ConfigError, match="exceeds"):
        GRMConfig.build(ray={"min_replicas": 5, "max_replicas": 4})


def test_serve_ray_flags_map_onto_the_ray_section() -> None:
    args = build_parser().parse_args(
        ["serve", "--ray", "--ray-address", "auto", "--replicas", "4", "--ray-num-gpus", "1"]
    )
    options = config_from_args(args).ray
    assert (options.enabled, options.address, options.replicas, options.num_gpus) == (True, "auto", 4, 1.0)
    assert not config_from_args(build_parser().parse_args(["serve"])).ray.enabled
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "x.jsonl", "--replicas", "2"])  # only serve has fleet flags


@needs_ray
def test_the_application_builder_reads_a_config_file_and_dotted_arguments(fleet, tmp_path) -> None:
    from ray.serve import Application

    path = tmp_path / "judge.yaml"
    path.write_text("k: 4\nray:\n  num_cpus: 0\n")
    assert isinstance(fleet.app({"config": str(path), "ray.replicas": "3", "k": "2"}), Application)
    with pytest.raises(ConfigError, match="unknown config section"):
        fleet.app({"rays.replicas": "3"})
    with pytest.raises(ConfigError, match="replicas"):
        fleet.app({"ray.replicas": "0"})
