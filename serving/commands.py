"""``slimgate serve | apply | status | config``: run and change the gateway from its config file."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from serving import control
from serving.app import gateway_from_serve_config, serve_config
from serving.config import (
    ConfigError,
    GatewayConfig,
    config_revision,
    diff,
    json_schema,
    load_config,
    parse_config,
    pin_refs,
)
from serving.names import ROUTER_APP, VARIANT_APP_PREFIX


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="start a local Ray cluster and serve the gateway (blocks; Ctrl-C stops)")
    s.add_argument("config", nargs="?", type=Path, default=None, help="gateway config (default: bundled)")
    s.add_argument(
        "--metrics-port", type=int, default=8080, help="Ray metrics export port (Prometheus target)"
    )
    s.add_argument("--ready-file", type=Path, default=None, help="write the gateway URL here once it serves")
    s.set_defaults(func=cmd_serve)

    for name, create, what in (
        ("apply", False, "apply a changed config to the running gateway"),
        (
            "deploy",
            True,
            "deploy the gateway onto a running Ray cluster (`ray start`, KubeRay) via its dashboard",
        ),
    ):
        a = sub.add_parser(name, help=what)
        a.add_argument("config", type=Path)
        a.add_argument(
            "--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", control.DEFAULT_DASHBOARD)
        )
        a.add_argument("--no-wait", action="store_true", help="return once Ray accepted the config")
        a.add_argument(
            "--state",
            type=Path,
            default=None,
            help="the controller's state file, whose audit log records this change "
            "(default: $SLIMGATE_STATE or ~/.local/share/slimgate/controller.db)",
        )
        a.add_argument("--actor", default=os.environ.get("USER", "operator"), help="who applies (audit log)")
        a.set_defaults(func=cmd_apply, create=create)

    st = sub.add_parser("status", help="variants, replicas, weights and config revision of the gateway")
    st.add_argument("--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", control.DEFAULT_DASHBOARD))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    c = sub.add_parser("config", help="gateway config tools")
    cs = c.add_subparsers(dest="config_cmd", required=True)
    v = cs.add_parser("validate", help="validate a config (and its variants against the registry)")
    v.add_argument("config", type=Path)
    v.add_argument("--no-registry", action="store_true")
    v.set_defaults(func=cmd_validate)
    sc = cs.add_parser("schema", help="print the JSON Schema of the gateway config")
    sc.set_defaults(func=lambda _a: print(json.dumps(json_schema(), indent=2)) or 0)
    re_ = cs.add_parser(
        "ray-env", help="print the environment every Ray node must start with for this config's ingress"
    )
    re_.add_argument("config", type=Path, nargs="?", default=None)
    re_.set_defaults(func=cmd_ray_env)
    rs = cs.add_parser("ray-serve", help="print the Ray Serve config (serve deploy / KubeRay serveConfigV2)")
    rs.add_argument("config", type=Path)
    rs.add_argument("--no-registry", action="store_true", help="do not pin versions from the registry")
    rs.set_defaults(func=cmd_ray_serve)


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if not args.no_registry:
        pin_refs(cfg)  # every ref exists, is deployable, and the label tables agree
    print(f"{args.config}: valid (revision {config_revision(cfg)})")
    return 0


def cmd_ray_env(args: argparse.Namespace) -> int:
    """``export`` lines for ``ray start`` on every node of a cluster that ``slimgate deploy`` targets."""
    from serving.ray_env import ingress_env

    cfg = load_config(args.config)
    env = ingress_env(cfg.http)
    print(f"# http.ingress: {cfg.http.ingress}; set on every Ray node before `ray start`")
    for k, v in sorted(env.items()):
        print(f"export {k}={v}")
    return 0


def cmd_ray_serve(args: argparse.Namespace) -> int:
    import yaml

    cfg = load_config(args.config)
    if not args.no_registry:
        cfg = pin_refs(cfg)
    print(yaml.safe_dump(serve_config(cfg), sort_keys=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)

    def ready(url: str) -> None:
        if args.ready_file:
            args.ready_file.write_text(url)

    run_gateway(cfg, args.metrics_port, on_ready=ready)
    return 0


def run_gateway(
    cfg: GatewayConfig, metrics_port: int, on_ready: Callable[[str], None] | None = None, block: bool = True
) -> None:
    """Start a local Ray cluster, deploy the gateway, call ``on_ready(url)``, then serve until stopped.

    Everything Ray starts listens on loopback only; the gateway's own port binds ``http.host``.
    """
    import tempfile

    from serving.ray_env import single_host_env, stop_haproxy

    cfg = pin_refs(cfg)  # refuses a config whose variants are missing or not deployable
    serve_cfg = serve_config(cfg)
    if cfg.http.ingress == "haproxy":
        # Replicas' own HTTP servers bind this address; HAProxy's listener for clients is moved to
        # http.host by the wrapper (serving.ray_env), so only the gateway's port can be public.
        serve_cfg["http_options"]["host"] = "127.0.0.1"
    token_env = cfg.admin.token_env
    if not (os.environ.get(token_env) or cfg.admin.token):
        os.environ[token_env] = secrets.token_urlsafe(24)
        print(f"admin token (set ${token_env} to choose your own): {os.environ[token_env]}")
    runtime_dir = Path(tempfile.mkdtemp(prefix="slimgate-"))
    os.environ.update(single_host_env(cfg, runtime_dir))
    import ray
    from ray import serve

    # Replicas inherit this process's environment (the admin token, the ingress mode) from the
    # local raylet.
    ray.init(
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 2000},
        log_to_driver=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        control.deploy(serve_cfg)
        control.wait_running(serve_cfg)
        url = f"http://{cfg.http.host}:{cfg.http.port}"
        print(f"slimgate gateway serving at {url} (metrics: http://127.0.0.1:{metrics_port}/metrics)")
        print(
            f"  curl -s {url}/v1/predict -H 'content-type: application/json' "
            '-d \'{"inputs": ["a large tree with hard wood"]}\''
        )
        if on_ready:
            on_ready(url)
        while block and not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("slimgate: stopping the gateway", file=sys.stderr)
        serve.shutdown()
        ray.shutdown()
        stop_haproxy(runtime_dir)
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _running_gateway(dashboard: str):
    st = control.status(dashboard)
    apps = st.get("applications") or {}
    router = apps.get(ROUTER_APP, {}).get("deployed_app_config")
    found = gateway_from_serve_config({"applications": [router]} if router else {})
    return st, found


def cmd_apply(args: argparse.Namespace) -> int:
    apply_config(
        load_config(args.config),
        args.dashboard,
        wait=not args.no_wait,
        actor=args.actor,
        state=args.state,
        create=args.create,
    )
    return 0


def apply_config(
    new: GatewayConfig,
    dashboard: str = control.DEFAULT_DASHBOARD,
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
    _, found = _running_gateway(dashboard)
    old: GatewayConfig | None = None
    if found is None and not create:
        raise control.ControlError(
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
    from serving.controller.cli import DEFAULT_STATE
    from serving.controller.store import StateStore

    with StateStore(state or DEFAULT_STATE) as store, store.exclusive():
        # Under the controller's lock, recorded before it is sent: the controller never sees
        # this change half-applied, nor mistakes it for one made outside slimgate.
        _audit_apply(store, "apply", actor, old, new, paths)
        try:
            control.deploy(serve_cfg, dashboard)
            if wait:
                control.wait_running(serve_cfg, dashboard)
                _confirm_router_loads(new, loads, dashboard)
        except BaseException as err:
            why = f"{type(err).__name__}: {err}"
            if old is not None and isinstance(err, control.ControlError):
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
    from serving.gateway_client import confirm_loaded, gateway_url

    try:
        token: str | None = cfg.admin.resolve_token()
    except ConfigError:
        token = None  # the reason is then only in the router's log and GET /admin/config
    missing = confirm_loaded(cfg, keys, gateway_url(cfg, dashboard), token)
    if missing:
        lines = "; ".join(f"variants.{k} ({cfg.variants[k].ref}) {why}" for k, why in sorted(missing.items()))
        raise control.ControlError(f"the router could not load every variant: {lines}")


def _put_back(old: GatewayConfig, dashboard: str, echo: Callable[[str], None]) -> None:
    sc = serve_config(old)
    try:
        control.deploy(sc, dashboard)
        control.wait_running(sc, dashboard)
        echo(f"put back the previous revision {config_revision(old)}")
    except control.ControlError as err:
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
    import time

    from serving.controller.store import AuditEntry

    now_cfg = old if failed else new  # a failed apply leaves the gateway where it was
    rev = "" if now_cfg is None else config_revision(now_cfg)
    listed = list(paths) if old is None else summarize_paths(paths, old, new)
    reason = "changes: " + ", ".join(listed) + (f" ({why})" if why else "")
    before = {} if old is None else dict(old.routing.weights)
    after = {} if now_cfg is None else dict(now_cfg.routing.weights)
    entry = AuditEntry(actor, action, "*", rev, before, after, {}, reason, time.time(), rev)
    store.see_config(rev, after, [entry])


def cmd_status(args: argparse.Namespace) -> int:
    st, found = _running_gateway(args.dashboard)
    if found is None:
        print(f"no slimgate gateway is running behind {args.dashboard}")
        return 1
    gateway, revision = found
    weights = gateway["routing"]["weights"]
    shadows = set(gateway.get("shadow", {}).get("variants", []))
    apps = st.get("applications") or {}
    router_app = apps.get(ROUTER_APP, {})
    rows = []
    for key in sorted(gateway["variants"]):
        spec = gateway["variants"][key]
        in_router = spec.get("placement", "router") == "router"
        # A variant placed in the router runs in each router replica; the others have an app each.
        app = router_app if in_router else apps.get(VARIANT_APP_PREFIX + key, {})
        dep = next(iter((app.get("deployments") or {}).values()), {})
        replicas = [r.get("state") for r in dep.get("replicas", [])]
        app_args = {} if in_router else (app.get("deployed_app_config") or {}).get("args", {})
        role = "stable" if key == gateway["routing"]["stable"] else ("shadow" if key in shadows else "")
        rows.append(
            {
                "variant": key,
                "ref": app_args.get("ref", spec["ref"]),
                "placement": "router" if in_router else "deployment",
                "role": role,
                "weight": weights.get(key, 0),
                "status": dep.get("status", app.get("status", "MISSING")),
                "replicas": f"{replicas.count('RUNNING')}/{len(replicas)}",
            }
        )
    if args.json:
        print(json.dumps({"revision": revision, "variants": rows}, indent=2))
        return 0
    print(f"config revision {revision}; router {apps.get(ROUTER_APP, {}).get('status', 'MISSING')}")
    print(f"{'variant':20s} {'ref':24s} {'placement':10s} {'role':7s} {'weight':>6s} {'status':10s} replicas")
    for r in rows:
        line = f"{r['variant']:20s} {r['ref']:24s} {r['placement']:10s} {r['role']:7s} {r['weight']:6d}"
        print(f"{line} {r['status']:10s} {r['replicas']}")
    return 0
