"""Command-line flags derived from `GRMConfig`, so every setting has exactly one description.

Top-level fields become ``--field-name``; fields of a backend section become
``--section-field`` (e.g. ``--transformers-device``). Only flags the user actually gives
override the config file, so ``--config`` plus a few flags composes as expected.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from grm_reward.config import GRMConfig

__all__ = ["add_config_arguments", "config_from_args"]

_SHORT = {"k": "-k"}
_SEP = "__"


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


def _add_field(group: Any, flag: str, dest: str, info: FieldInfo, short: str | None = None) -> None:
    annotation, optional = _unwrap_optional(info.annotation)
    names = [flag] + ([short] if short else [])
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
    if optional and annotation is not str:
        base_type = kwargs.get("type", str)

        def parse_optional(text: str, _t: Any = base_type) -> Any:
            return None if text.lower() in {"none", "null"} else _t(text)

        kwargs["type"] = parse_optional
    group.add_argument(*names, **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per GRMConfig field."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of GRMConfig settings (flags override it).")
    group = parser.add_argument_group("reward model settings (GRMConfig)")
    for name, info in GRMConfig.model_fields.items():
        annotation, _ = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = parser.add_argument_group(f"{name} backend settings")
            for sub, sub_info in annotation.model_fields.items():
                _add_field(section, f"--{name}-{sub}".replace("_", "-"), f"{name}{_SEP}{sub}", sub_info)
            continue
        _add_field(group, "--" + name.replace("_", "-"), name, info, _SHORT.get(name))


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
