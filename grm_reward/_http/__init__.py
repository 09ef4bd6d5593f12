"""The one HTTP layer: every client of a server (judge, meta RM, reward server) calls through it.

One module per seam: ``values`` (request, response, policy), ``failures`` (an answer as a failure, a
failure as an error), ``health`` (per-server budgets, breaker, latency), ``sessions`` (aiohttp, one
session per event loop, or a test ``Transport``), ``endpoint`` (one call: hedges, retries,
deadlines). Policy: docs/backends.md; the drawing: docs/architecture.md.
"""

from grm_reward._http.endpoint import HTTPEndpoint
from grm_reward._http.failures import HTTPFailure
from grm_reward._http.health import HEDGE_BUDGET_FLOOR, ServerHealth, forget_server, server_health
from grm_reward._http.sessions import import_aiohttp
from grm_reward._http.values import HTTPPolicy, HTTPRequest, HTTPResponse, Transport

__all__ = [
    "HEDGE_BUDGET_FLOOR",
    "HTTPEndpoint",
    "HTTPFailure",
    "HTTPPolicy",
    "HTTPRequest",
    "HTTPResponse",
    "ServerHealth",
    "Transport",
    "forget_server",
    "import_aiohttp",
    "server_health",
]
