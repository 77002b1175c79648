"""The import paths Ray Serve builds the gateway's applications from (named by :mod:`serving.translation`).

Kept apart from the translation so that turning a config into a Ray Serve config imports neither
Ray nor the router.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from serving.names import ROUTER_DEPLOYMENT, VARIANT_DEPLOYMENT
from serving.replica import VariantReplica
from serving.router import Router


def router_app(args: dict[str, Any]):
    """Import path of the router application (its settings arrive as user_config)."""
    deployment: Any = serve.deployment(Router, name=ROUTER_DEPLOYMENT)  # typed as a decorator factory
    return deployment.bind()


def variant_app(args: dict[str, Any]):
    """Import path of one variant's application; ``args`` are its restart-worthy identity."""
    deployment: Any = serve.deployment(VariantReplica, name=VARIANT_DEPLOYMENT)
    return deployment.bind(
        args["key"],
        args["ref"],
        args.get("registry"),
        int(args.get("threads", 1)),
        args.get("backend"),
        args.get("device"),
        args.get("precision"),
    )
