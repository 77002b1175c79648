"""Gateway config -> Ray Serve config: the router application plus one application per variant
that has a deployment of its own.

The router application (``slimgate``, route ``/``) carries the whole gateway config as its
``user_config``: the variants placed in the router (``placement: router``) are loaded by each
router replica from it, and a new artifact for one of them is swapped in live by the router, so
nothing restarts. Each variant with ``placement: deployment`` is its own Serve application
(``variant-<key>``) whose ``args`` hold exactly what its replicas load (registry ref, backend,
threads, registry root). Ray Serve derives an application's code version from its import path
and args, so a changed artifact restarts that variant's replicas and nothing else. Everything
that may change live (weights, shadow, limits, batching, faults, replica counts) is a
deployment-level override (``user_config``, ``num_replicas``, ``autoscaling_config``) that Ray
applies in place.

The translation is a pure function of the gateway config: it reads no registry, so the Helm
chart can mirror it for KubeRay's ``serveConfigV2`` (a test holds the two equal). What the
registry knows (label tables, versions, precision) the router learns from the replicas that
actually loaded. ``slimgate serve`` and ``slimgate apply`` first pin every ref to the version
the registry holds now (:func:`serving.config.pin_refs`), so a later build never changes what
a running gateway serves.
"""

from __future__ import annotations

from typing import Any

from serving.config import GatewayConfig, VariantSpec, canonical_dict, config_revision, parse_config
from serving.config.base import ARTIFACT, LIVE, fields_costing
from serving.config.variant import DEPLOYMENT_ONLY, ROUTER_ONLY
from serving.names import ROUTER_APP, ROUTER_DEPLOYMENT, VARIANT_APP_PREFIX, VARIANT_DEPLOYMENT

# Ray Serve imports this at start-up to register the inference protocol's gRPC service
# (serving.oip_grpc.add_servicer; named here so the translation imports neither gRPC nor Ray).
GRPC_SERVICER = "serving.oip_grpc.add_servicer"

# Room above admission.max_in_flight for what admission does not count (admin, health checks), so
# that Ray never queues a request in front of the router's own admission control.
ROUTER_ONGOING_HEADROOM = 32

# Read from the change-cost tags: what a variant's replicas load is its application's args (Ray
# Serve restarts an application whose args change); what they may change live is user_config
# (delivered to reconfigure()); the deployment options are Ray Serve's own.
VARIANT_ARGS = fields_costing(VariantSpec, ARTIFACT)
VARIANT_USER_CONFIG = tuple(
    f for f in fields_costing(VariantSpec, LIVE) if f not in DEPLOYMENT_ONLY and f not in ROUTER_ONLY
)


def serve_config(cfg: GatewayConfig) -> dict:
    """The Ray Serve declarative config for ``cfg`` (refs exactly as the config names them)."""
    gateway = canonical_dict(cfg)  # secrets never travel in user_config: the token is left out
    registry = str(cfg.registry) if cfg.registry else None
    apps: list[dict[str, Any]] = [
        {
            "name": ROUTER_APP,
            "route_prefix": "/",
            "import_path": "serving.ray_apps:router_app",
            "args": {},
            "deployments": [
                {
                    "name": ROUTER_DEPLOYMENT,
                    "num_replicas": cfg.router.replicas,
                    "max_ongoing_requests": cfg.admission.max_in_flight + ROUTER_ONGOING_HEADROOM,
                    "ray_actor_options": {"num_cpus": cfg.router.num_cpus},
                    "user_config": {"gateway": gateway},
                    # One log line per request costs more than routing it; metrics count requests.
                    "logging_config": {"enable_access_log": False},
                    # Loading the variants placed in the router happens before it is ready.
                    "health_check_timeout_s": 60,
                    "graceful_shutdown_timeout_s": 30,
                }
            ],
        }
    ]
    for key, spec in sorted(cfg.variants.items()):
        if not spec.in_router:
            apps.append(_variant_app(key, spec, registry))
    out: dict[str, Any] = {
        "proxy_location": "HeadOnly",
        "http_options": {
            "host": cfg.http.host,
            "port": cfg.http.port,
            "request_timeout_s": cfg.limits.request_timeout_s + 5,
            "keep_alive_timeout_s": cfg.http.idle_timeout_s,
        },
    }
    if cfg.http.grpc_port is not None:
        # The inference protocol's gRPC service, answered by the router's methods of the same names.
        out["grpc_options"] = {"port": cfg.http.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}
    out["applications"] = apps
    return out


def gateway_from_serve_config(serve_cfg: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The gateway config and revision a deployed Serve config carries (None if not slimgate's)."""
    for a in serve_cfg.get("applications", []):
        if a.get("name") == ROUTER_APP:
            for d in a.get("deployments", []):
                uc = d.get("user_config") or {}
                if "gateway" in uc:
                    return uc["gateway"], config_revision(parse_config(uc["gateway"], "the running gateway"))
    return None


def deployment_options(spec: VariantSpec) -> dict[str, Any]:
    """Ray Serve's options for the deployment of a variant with replicas of its own."""
    actor: dict[str, Any] = {"num_cpus": spec.resources.num_cpus}
    if spec.resources.num_gpus is not None:
        actor["num_gpus"] = spec.resources.num_gpus
    opts: dict[str, Any] = {
        "ray_actor_options": actor,
        # Ray's default (5) would cap a replica below one full batch; allow one batch running
        # and one filling, and never so few that callers fall into Ray's retry backoff
        # (with batching off, 2 in flight would throttle a replica to a trickle).
        "max_ongoing_requests": max(32, 2 * spec.batching.max_batch_size),
    }
    if spec.max_queued_requests is not None:
        opts["max_queued_requests"] = spec.max_queued_requests
    if spec.autoscaling is not None:
        opts["autoscaling_config"] = spec.autoscaling.model_dump()
    else:
        opts["num_replicas"] = spec.replicas or 1
    return opts


def _variant_app(key: str, spec: VariantSpec, registry: str | None) -> dict[str, Any]:
    live = spec.model_dump(mode="json", include=set(VARIANT_USER_CONFIG))
    deployment: dict[str, Any] = {
        "name": VARIANT_DEPLOYMENT,
        **deployment_options(spec),
        "user_config": live,
        # A replica is healthy only once it has loaded and warmed up; big models need time.
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 30,
    }
    return {
        "name": VARIANT_APP_PREFIX + key,
        "route_prefix": None,
        "import_path": "serving.ray_apps:variant_app",
        "args": {"key": key, "registry": registry, **spec.model_dump(mode="json", include=set(VARIANT_ARGS))},
        "deployments": [deployment],
    }
