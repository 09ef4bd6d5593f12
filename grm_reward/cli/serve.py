"""``grm-reward serve [--host 127.0.0.1] [--port P] [--backend B] [--base-url U] [--model M] [-k K] [--api-key KEY] [--config FILE]``

Starts the reward server (``docs/server.md``): OpenRLHF's ``POST /get_reward``, the native
``POST /v1/rewards``, ``GET /health``, ``GET /ready`` and ``GET /metrics``, with the connection
limits of the ``server`` section (header and keep-alive timeouts, max connections, backlog). Every GRMConfig setting has a flag;
the short ones map onto ``server.host``, ``server.port``, ``server.api_key`` (the token clients
of *this* server must send) and ``openai.base_url`` (the judge server the ``openai`` backend
calls, whose own key is ``--openai-api-key``). ``--ray [--ray-address auto] --replicas N`` serves
the same routes from a Ray Serve fleet of judge replicas (``docs/scaling.md``).
"""

from __future__ import annotations

import argparse
import os
import sys

from grm_reward.cli.options import add_config_arguments, config_from_args

__all__ = ["register"]

#: Environment variable read when no --api-key / server.api_key is given.
API_KEY_ENV = "GRM_REWARD_SERVER_API_KEY"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("grm-reward: the server needs FastAPI and uvicorn: pip install 'grm-reward[serve]'", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if not config.server.api_key and os.environ.get(API_KEY_ENV):
        config = config.updated(server={"api_key": os.environ[API_KEY_ENV]})
    options = config.server
    if options.host not in _LOCAL_HOSTS and not options.api_key:
        print(
            f"grm-reward: warning: serving on {options.host} without --api-key: anyone who can reach this port "
            "can use the judge",
            file=sys.stderr,
        )
    if config.ray.enabled:  # the Ray Serve fleet (docs/scaling.md)
        try:
            from grm_reward.server.ray import run_fleet
        except ImportError as exc:
            print(f"grm-reward: {exc}", file=sys.stderr)
            return 2
        return run_fleet(config)
    from grm_reward.server import build_app
    from grm_reward.server.running import RewardServer, uvicorn_config

    RewardServer(uvicorn_config(build_app(config), options)).run()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser(
        "serve",
        help="run the reward server (OpenRLHF /get_reward, native /v1/rewards, /health, /ready, /metrics)",
        description=(
            "Serve the judge over HTTP. OpenRLHF: --reward.remote_url http://HOST:PORT/get_reward. "
            f"--api-key (or ${API_KEY_ENV}) is the token clients of this server send; the judge server's key "
            "is --openai-api-key."
        ),
    )
    add_config_arguments(
        serve,
        sections=("server", "batching", "ray"),
    )
    serve.set_defaults(func=_cmd_serve)
