"""slimgate's gateway: serves registry variants side by side (Ray Serve router, replicas, controller).

Public surface (what tools, benchmarks and other packages use; everything else is internal):

* configuration: :class:`GatewayConfig`, :func:`load_config`, :func:`parse_config`,
  :class:`ConfigError`, :func:`pin_refs`, :func:`diff` / :class:`ConfigChange`, :class:`Change`;
* the Ray Serve translation: :func:`serve_config`;
* running and changing a gateway: :func:`run_gateway`, :func:`apply_config`, :func:`running_gateway`;
* errors and auth: :class:`ApiError`, :class:`AdminToken`, :func:`resolve_admin_token`.

Layers, each importing only the ones above it: ``config`` -> ``errors_and_auth``, ``metrics``,
``names`` -> the request path (``requests``, ``dataplane``, ``http_api``, ``oip``, ``router``,
``replica``) and ``translation`` -> ``controller``, ``deployer``, ``launcher`` -> ``cli`` ->
``tools``. ``tests/test_architecture.py`` holds the project free of import cycles and of
private names imported across modules.
"""

from serving.config import (
    Change,
    ConfigChange,
    ConfigError,
    GatewayConfig,
    diff,
    load_config,
    parse_config,
    pin_refs,
)
from serving.deployer import apply_config, running_gateway
from serving.errors_and_auth import AdminToken, ApiError, resolve_admin_token
from serving.launcher import run_gateway
from serving.translation import serve_config

__all__ = [
    "AdminToken",
    "ApiError",
    "Change",
    "ConfigChange",
    "ConfigError",
    "GatewayConfig",
    "apply_config",
    "diff",
    "load_config",
    "parse_config",
    "pin_refs",
    "resolve_admin_token",
    "run_gateway",
    "running_gateway",
    "serve_config",
]
