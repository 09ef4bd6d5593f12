"""Command-line flags derived from `GRMConfig`, so every setting has exactly one description.

Top-level fields become ``--field-name``; fields of a section become ``--section-field``
(e.g. ``--transformers-device``). Sections only one subcommand uses (``server``) get flags only
where that subcommand asks for them, and a subcommand may add short aliases (``serve --port``
for ``--server-port``). Only flags the user actually gives override the config file, so
``--config`` plus a few flags composes as expected.
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

__all__ = ["add_config_arguments", "config_from_args"]

_SHORT = {"k": "-k"}
_SEP = "__"
#: Sections whose flags only the subcommands that ask for them get.
_OPTIONAL_SECTIONS = frozenset({"server", "ray"})


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

    ``sections`` names the optional sections (``server``) this command uses; ``aliases`` maps a
    field path (``"server.port"``) to an extra flag name (``"--port"``).
    """
    wanted = set(sections)
    unknown = wanted - _OPTIONAL_SECTIONS
    if unknown:
        raise ValueError(f"unknown optional config sections {sorted(unknown)}")
    aliases = dict(aliases or {})
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
                extra = [aliases.pop(f"{name}.{sub}")] if f"{name}.{sub}" in aliases else []
                _add_field(section, f"--{name}-{sub}".replace("_", "-"), f"{name}{_SEP}{sub}", sub_info, *extra)
            continue
        extra = [a for a in (_SHORT.get(name), aliases.pop(name, None)) if a]
        _add_field(group, "--" + name.replace("_", "-"), name, info, *extra)
    if aliases:
        raise ValueError(f"aliases for unknown config fields: {sorted(aliases)}")


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
