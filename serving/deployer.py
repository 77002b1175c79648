"""Changing a running gateway: find what it runs, apply a new config, put the old one back on failure.

Shared by ``slimgate apply``, the demo and the rollout controller's service
(:mod:`serving.controller.service`).
An apply is validated and pinned against the registry before anything is sent, audited under the
controller's lock, confirmed (variants placed in the router report what they loaded) and, when
the new revision does not come up, undone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving import ray_rest
from serving.config import ConfigError, GatewayConfig, config_revision, diff, parse_config, pin_refs
from serving.controller.store import AuditEntry, StateStore, default_state_path
from serving.errors_and_auth import resolve_admin_token
from serving.gateway_client import confirm_loaded, gateway_url
from serving.names import ROUTER_APP
from serving.translation import gateway_from_serve_config, serve_config


def running_gateway(dashboard: str) -> tuple[dict[str, Any], tuple[dict[str, Any], str] | None]:
    """Ray Serve's status behind ``dashboard`` and the (gateway config, revision) it runs, if any."""
    st = ray_rest.status(dashboard)
    apps = st.get("applications") or {}
    router = apps.get(ROUTER_APP, {}).get("deployed_app_config")
    found = gateway_from_serve_config({"applications": [router]} if router else {})
    return st, found


def apply_config(
    new: GatewayConfig,
    dashboard: str = ray_rest.DEFAULT_DASHBOARD,
    *,
    wait: bool = True,
    actor: str = "operator",
    state: Path | None = None,
    echo: Callable[[str], None] = print,
    create: bool = False,
) -> str:
    """Validate ``new`` against the registry, send it to the running gateway, audit it; its revision.

    ``create``: a Ray cluster without a gateway (``ray start``, a fresh KubeRay cluster) gets one.
    """
    new = pin_refs(new)  # validation and registry checks before anything is sent
    serve_cfg = serve_config(new)
    _, found = running_gateway(dashboard)
    old: GatewayConfig | None = None
    if found is None and not create:
        raise ray_rest.ControlError(
            f"no slimgate gateway is running behind {dashboard} "
            "(`slimgate deploy` creates one on a Ray cluster)"
        )
    if found is None:
        paths: tuple[str, ...] = ("the whole gateway (none was running)",)
        loads = {k for k, v in new.variants.items() if v.in_router}
        echo(f"deploying a new gateway onto the Ray cluster behind {dashboard}")
    else:
        old = parse_config(found[0], "the running gateway")
        change = diff(old, new)
        if change.http:
            raise ConfigError(
                "http: the listen address cannot change on a running gateway; restart it instead"
            )
        if change.unchanged:
            echo(f"nothing to apply: the running gateway already has revision {found[1]}")
            return found[1]
        paths = change.paths
        loads = set(change.reload)
        echo("changes: " + ", ".join(summarize_paths(paths, old, new)))
        echo("restarts: " + (", ".join(sorted(change.restart)) or "none (applied in place)"))
        if loads:
            echo("loaded live in the router: " + ", ".join(sorted(loads)))
    with StateStore(state or default_state_path()) as store, store.exclusive():
        # Under the controller's lock, recorded before it is sent: the controller never sees
        # this change half-applied, nor mistakes it for one made outside slimgate.
        _audit_apply(store, "apply", actor, old, new, paths)
        try:
            ray_rest.deploy(serve_cfg, dashboard)
            if wait:
                ray_rest.wait_running(serve_cfg, dashboard)
                _confirm_router_loads(new, loads, dashboard)
        except BaseException as err:
            why = f"{type(err).__name__}: {err}"
            if old is not None and isinstance(err, ray_rest.ControlError):
                # What failed to start must not stay half-applied: the gateway goes back to the
                # config it ran before (its variants reload what they served then).
                _put_back(old, dashboard, echo)
            _audit_apply(store, "apply-failed", actor, old, new, paths, why, failed=True)
            raise
    echo(f"applied revision {config_revision(new)}")
    return config_revision(new)


def _confirm_router_loads(cfg: GatewayConfig, keys: set[str], dashboard: str) -> None:
    """Fail (ControlError) when a variant placed in the router did not load what ``cfg`` pins."""
    if not keys:
        return
    # Without a token the reason is only in the router's log and GET /admin/config.
    token = resolve_admin_token(cfg.admin)
    missing = confirm_loaded(cfg, keys, gateway_url(cfg, dashboard), token)
    if missing:
        lines = "; ".join(f"variants.{k} ({cfg.variants[k].ref}) {why}" for k, why in sorted(missing.items()))
        raise ray_rest.ControlError(f"the router could not load every variant: {lines}")


def _put_back(old: GatewayConfig, dashboard: str, echo: Callable[[str], None]) -> None:
    sc = serve_config(old)
    try:
        ray_rest.deploy(sc, dashboard)
        ray_rest.wait_running(sc, dashboard)
        echo(f"put back the previous revision {config_revision(old)}")
    except ray_rest.ControlError as err:
        echo(f"could not put back the previous revision {config_revision(old)}: {err}")


def summarize_paths(paths: tuple[str, ...], old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Changed dotted paths, with a variant added or removed named once instead of field by field."""
    added, removed = new.variants.keys() - old.variants.keys(), old.variants.keys() - new.variants.keys()
    out = [f"variants.{k} (added)" for k in sorted(added)] + [
        f"variants.{k} (removed)" for k in sorted(removed)
    ]
    whole = {f"variants.{k}." for k in added | removed}
    return out + [p for p in paths if not any(p.startswith(w) for w in whole)]


def _audit_apply(
    store,
    action: str,
    actor: str,
    old: GatewayConfig | None,
    new: GatewayConfig,
    paths: tuple[str, ...],
    why: str = "",
    failed: bool = False,
) -> None:
    """Record an apply (or, ``failed``, that it did not happen) in the audit log; mark the revision seen."""
    now_cfg = old if failed else new  # a failed apply leaves the gateway where it was
    rev = "" if now_cfg is None else config_revision(now_cfg)
    listed = list(paths) if old is None else summarize_paths(paths, old, new)
    reason = "changes: " + ", ".join(listed) + (f" ({why})" if why else "")
    before = {} if old is None else dict(old.routing.weights)
    after = {} if now_cfg is None else dict(now_cfg.routing.weights)
    entry = AuditEntry(actor, action, "*", rev, before, after, {}, reason, time.time(), rev)
    store.see_config(rev, after, [entry])
