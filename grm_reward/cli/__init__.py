"""The ``grm-reward`` command line: one module per subcommand, each with ``register(subparsers)``.

    grm-reward score INPUT.jsonl -o OUTPUT.jsonl [-k K] [--model M] [--backend B] ...
    grm-reward serve [--host 127.0.0.1] [--port P] [--backend B] [--base-url U] [-k K] [--api-key KEY]
    grm-reward eval --benchmark NAME[=PATH] [-k K] [--limit N] [-o DIR] ...
    grm-reward spct {rft-data,meta-data,rl-data,train-meta} ...   # SPCT data builders, meta-RM training
    grm-reward config [--config FILE] [flags]      # print the effective settings
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from grm_reward.cli.options import add_config_arguments, config_from_args
from grm_reward.errors import GRMError

__all__ = ["build_parser", "main"]

#: Subcommand modules under grm_reward.cli, in the order `--help` lists them.
SUBCOMMANDS = ("score", "serve", "eval", "spct")


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    config = config_from_args(args)
    print(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grm-reward",
        description="Generative reward model (DeepSeek-GRM style): principles, critiques, 1-10 scores, voting.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"grm_reward.cli.{name}").register(sub)
    config = sub.add_parser("config", help="print the effective settings as YAML")
    add_config_arguments(config)
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GRMError as exc:
        print(f"grm-reward: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grm-reward: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
