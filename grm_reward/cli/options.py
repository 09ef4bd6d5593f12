"""Command-line flags derived from `GRMConfig`, so every setting has exactly one description.

Top-level fields become ``--field-name``; fields of a section become ``--section-field``
(e.g. ``--transformers-device``). Sections only one subcommand uses (``server``) get flags only
where that subcommand asks for them. The short spellings in :data:`ALIASES` (``--base-url`` for
``--openai-base-url``) are the same in every command that has the field. Only flags the user
actually gives override the config file, so ``--config`` plus a few flags composes as expected.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from grm_reward.config import GRMConfig

__all__ = ["ALIASES", "add_config_arguments", "config_from_args"]

#: One spelling rule for every command: each setting's flag is its field path with dashes
#: (``--max-new-tokens``, ``--openai-base-url``), plus these short spellings. An alias exists in
#: exactly the commands that have its field, and means that field everywhere (``--api-key`` is the
#: server's own token, so only ``serve`` has it; the judge's key is always ``--openai-api-key``).
ALIASES: Mapping[str, str] = {
    "k": "-k",
    "openai.base_url": "--base-url",
    "server.host": "--host",
    "server.port": "--port",
    "server.api_key": "--api-key",
    "ray.enabled": "--ray",
    "ray.replicas": "--replicas",
    "adaptive.enabled": "--adaptive",
}
_SEP = "__"
#: Sections whose flags only the subcommands that ask for them get.
_OPTIONAL_SECTIONS = frozenset({"server", "batching", "ray"})


def _describe(info: FieldInfo) -> str:
    text = info.description or ""
    return text.replace("%", "%%")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _parse_range(text: str) -> tuple[int, int]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("expected LO,HI, e.g. 1,10")
    try:
        return int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected two integers, e.g. 1,10") from exc


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"top_k\": 20}'")
    return value


def _add_field(group: Any, flag: str, dest: str, info: FieldInfo, *aliases: str) -> None:
    annotation, optional = _unwrap_optional(info.annotation)
    names = [flag, *aliases]
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": _describe(info)}
    if annotation is not bool:
        kwargs["metavar"] = dest.rsplit(_SEP, 1)[-1].upper()
    if annotation is bool:
        group.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if get_origin(annotation) is Literal:
        kwargs["choices"] = [str(c) for c in get_args(annotation)]
        kwargs.pop("metavar")
    elif annotation is int:
        kwargs["type"] = int
    elif annotation is float:
        kwargs["type"] = float
    elif get_origin(annotation) is tuple:
        kwargs["type"] = _parse_range
        kwargs["metavar"] = "LO,HI"
    elif get_origin(annotation) is dict:
        kwargs["type"] = _parse_json_object
        kwargs["metavar"] = "JSON"
    if optional and annotation is not str:
        base_type = kwargs.get("type", str)

        def parse_optional(text: str, _t: Any = base_type) -> Any:
            return None if text.lower() in {"none", "null"} else _t(text)

        kwargs["type"] = parse_optional
    group.add_argument(*names, **kwargs)


def add_config_arguments(
    parser: argparse.ArgumentParser, *, sections: Iterable[str] = (), aliases: Mapping[str, str] | None = None
) -> None:
    """Add ``--config`` and one flag per GRMConfig field.

    ``sections`` names the optional sections (``server``) this command uses. Every command gets
    the :data:`ALIASES` of its fields; ``aliases`` (field path to flag) may only repeat them, so
    a spelling never means one thing in one command and another elsewhere.
    """
    wanted = set(sections)
    unknown = wanted - _OPTIONAL_SECTIONS
    if unknown:
        raise ValueError(f"unknown optional config sections {sorted(unknown)}")
    for path, flag in (aliases or {}).items():
        if ALIASES.get(path) != flag:
            raise ValueError(f"alias {flag} for {path}: add short spellings to ALIASES, so every command has them")
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of GRMConfig settings (flags override it).")
    group = parser.add_argument_group("reward model settings (GRMConfig)")
    for name, info in GRMConfig.model_fields.items():
        annotation, _ = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if name in _OPTIONAL_SECTIONS and name not in wanted:
                continue
            title = f"{name} settings" if name in _OPTIONAL_SECTIONS else f"{name} backend settings"
            section = parser.add_argument_group(title)
            for sub, sub_info in annotation.model_fields.items():
                extra = [ALIASES[f"{name}.{sub}"]] if f"{name}.{sub}" in ALIASES else []
                _add_field(section, f"--{name}-{sub}".replace("_", "-"), f"{name}{_SEP}{sub}", sub_info, *extra)
            continue
        extra = [ALIASES[name]] if name in ALIASES else []
        _add_field(group, "--" + name.replace("_", "-"), name, info, *extra)


def config_from_args(args: argparse.Namespace) -> GRMConfig:
    """The GRMConfig described by ``--config`` and the flags given."""
    values: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key in GRMConfig.model_fields:
            values[key] = value
        elif _SEP in key:
            section, sub = key.split(_SEP, 1)
            if section in GRMConfig.model_fields:
                values.setdefault(section, {})[sub] = value
    if getattr(args, "config", None):
        from grm_reward.config import load_config_file

        base = load_config_file(args.config)
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        values = base
    return GRMConfig.build(**values)
