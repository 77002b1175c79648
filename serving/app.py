"""Gateway config -> Ray Serve config: one application per variant plus the router application.

Each variant is its own Serve application (``variant-<key>``) whose ``args`` hold exactly
what its replicas load (pinned registry ref, backend, threads, registry root). Ray Serve
derives an application's code version from its import path and args, so a changed artifact
restarts that variant's replicas and nothing else. Everything that may change live
(weights, shadow, limits, batching, faults, replica counts) is a deployment-level override
(``user_config``, ``num_replicas``, ``autoscaling_config``) that Ray applies in place.

The result is an ordinary Ray Serve config: ``slimgate serve`` and ``slimgate apply`` PUT it
to Ray's Serve REST API, ``serve deploy`` accepts it as a file, and KubeRay's
``serveConfigV2`` carries it unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.config import GatewayConfig, canonical_dict, check_against_registry, config_revision
from serving.router import GATEWAY_MODEL, VARIANT_APP_PREFIX, VARIANT_DEPLOYMENT

ROUTER_APP = GATEWAY_MODEL


def router_app(args: dict[str, Any]):
    """Import path of the router application (its settings arrive as user_config)."""
    from serving.router import Router

    return Router.bind()


def variant_app(args: dict[str, Any]):
    """Import path of one variant's application; ``args`` are its restart-worthy identity."""
    from ray import serve

    from serving.replica import VariantReplica

    return serve.deployment(VariantReplica, name=VARIANT_DEPLOYMENT).bind(
        args["key"], args["ref"], args.get("registry"), int(args.get("threads", 1)), args.get("backend")
    )


def _router_user_config(cfg: GatewayConfig, infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gateway = canonical_dict(cfg)
    gateway.get("admin", {}).pop("token", None)  # secrets never travel in user_config
    return {"gateway": gateway, "revision": config_revision(cfg), "variants": infos}


def serve_config(
    cfg: GatewayConfig, registry_root: Path | None = None, *, check_registry: bool = True
) -> dict:
    """The Ray Serve declarative config for ``cfg``; refs are pinned to the versions found now."""
    infos: dict[str, dict[str, Any]] = {}
    refs: dict[str, str] = {k: v.ref for k, v in cfg.variants.items()}
    registry = str(registry_root) if registry_root else (str(cfg.registry) if cfg.registry else None)
    if check_registry:
        from variants import Registry

        manifests = check_against_registry(cfg, Registry(registry))
        for key, m in manifests.items():
            refs[key] = m.ref
            infos[key] = {
                "name": m.name,
                "version": m.version,
                "labels": list(m.labels),
                "backend": cfg.variants[key].backend or m.backend,
                "precision": m.precision,
            }
    apps: list[dict[str, Any]] = [
        {
            "name": ROUTER_APP,
            "route_prefix": "/",
            "import_path": "serving.app:router_app",
            "args": {},
            "deployments": [
                {
                    "name": "Router",
                    "num_replicas": 1,
                    "max_ongoing_requests": 256,
                    "ray_actor_options": {"num_cpus": 0.25},
                    "user_config": _router_user_config(cfg, infos),
                }
            ],
        }
    ]
    for key, spec in sorted(cfg.variants.items()):
        opts = spec.deployment_options()
        deployment: dict[str, Any] = {
            "name": VARIANT_DEPLOYMENT,
            "max_ongoing_requests": opts["max_ongoing_requests"],
            "ray_actor_options": opts["ray_actor_options"],
            "user_config": {"batching": spec.batching.model_dump(), "faults": spec.faults.model_dump()},
            # A replica is healthy only once it has loaded and warmed up; big models need time.
            "health_check_timeout_s": 60,
            "graceful_shutdown_timeout_s": 30,
        }
        if "autoscaling_config" in opts:
            deployment["autoscaling_config"] = opts["autoscaling_config"]
        else:
            deployment["num_replicas"] = opts["num_replicas"]
        apps.append(
            {
                "name": VARIANT_APP_PREFIX + key,
                "route_prefix": None,
                "import_path": "serving.app:variant_app",
                "args": {
                    "key": key,
                    "ref": refs[key],
                    "registry": registry,
                    "threads": spec.threads,
                    "backend": spec.backend,
                },
                "deployments": [deployment],
            }
        )
    return {
        "proxy_location": "HeadOnly",
        "http_options": {
            "host": cfg.http.host,
            "port": cfg.http.port,
            "request_timeout_s": cfg.limits.request_timeout_s + 5,
        },
        "applications": apps,
    }


def gateway_from_serve_config(serve_cfg: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The gateway config and revision a deployed Serve config carries (None if not slimgate's)."""
    for a in serve_cfg.get("applications", []):
        if a.get("name") == ROUTER_APP:
            for d in a.get("deployments", []):
                uc = d.get("user_config") or {}
                if "gateway" in uc:
                    return uc["gateway"], uc.get("revision", "")
    return None
