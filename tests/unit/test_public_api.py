"""The exported surface and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import grm_reward

EXPECTED = {
    "AllSamplesInvalidError",
    "BackendCapabilityError",
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailableError",
    "ConfigError",
    "DeadlineExceededError",
    "GRMConfig",
    "GRMError",
    "GRMReward",
    "GenerationError",
    "GenerativeRewardModel",
    "InputError",
    "Judgement",
    "JudgeUnavailableError",
    "Principle",
    "PromptTooLongError",
    "Request",
    "RewardResult",
    "TemplateError",
    "Usage",
    "__version__",
    "parse_judgement",
}


def test_exported_names() -> None:
    assert set(grm_reward.__all__) == EXPECTED
    for name in grm_reward.__all__:
        assert hasattr(grm_reward, name), name


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, grm_reward, grm_reward.cli, grm_reward.backends;"
        "from grm_reward import GRMReward;"  # the TRL adapter needs neither trl nor torch
        "import grm_reward.backends.openai, grm_reward.backends.vllm, grm_reward.adapters.openrlhf;"
        "heavy = [m for m in ('torch', 'vllm', 'fastapi', 'trl', 'verl', 'transformers', 'httpx', 'uvicorn', 'aiohttp')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_package_ships_templates_and_marker() -> None:
    from importlib import resources

    files = resources.files("grm_reward")
    assert files.joinpath("py.typed").is_file()
    for name in ("default", "single", "single_binary", "rubric", "reference_section"):
        assert files.joinpath("prompts", "templates", f"{name}.txt").is_file()


def test_trl_adapter_is_loaded_on_first_access_only() -> None:
    code = (
        "import sys, grm_reward;"
        "before = 'grm_reward.adapters.trl' in sys.modules;"
        "reward = grm_reward.GRMReward;"
        "print(before, 'grm_reward.adapters.trl' in sys.modules, reward.__module__, 'GRMReward' in dir(grm_reward))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "grm_reward.adapters.trl", "True"]


def test_nothing_above_the_model_reaches_around_it_to_a_backend() -> None:
    """The edge and the adapters ask the model (``rm.load()``, ``rm.probe()``), never ``rm.backend``."""
    import ast
    from pathlib import Path

    root = Path(grm_reward.__file__).parent
    reaching = []
    for package in ("cli", "server", "spct", "eval", "adapters"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr == "backend":
                    owner = ast.unparse(node.value)
                    if not owner.endswith("config"):  # config.backend is a setting's name, not an engine
                        reaching.append(f"{path.relative_to(root)}:{node.lineno}: {owner}.backend")
    assert reaching == []
