"""``slimgate serve | apply | status | config``: run and change the gateway from its config file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from serving import ray_rest
from serving.config import (
    config_revision,
    json_schema,
    load_config,
    pin_refs,
)
from serving.controller.store import default_state_path
from serving.deployer import apply_config, running_gateway
from serving.launcher import run_gateway
from serving.names import ROUTER_APP, VARIANT_APP_PREFIX
from serving.supervisor import IN_SESSION, supervise
from serving.translation import serve_config


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="start a local Ray cluster and serve the gateway (blocks; Ctrl-C stops)")
    s.add_argument("config", nargs="?", type=Path, default=None, help="gateway config (default: bundled)")
    s.add_argument(
        "--metrics-port", type=int, default=8080, help="Ray metrics export port (Prometheus target)"
    )
    s.add_argument("--ready-file", type=Path, default=None, help="write the gateway URL here once it serves")
    s.add_argument(
        "--state",
        type=Path,
        default=default_state_path(),
        help="the controller's state: its rollbacks and weights are restored before traffic is routed",
    )
    s.add_argument(
        "--stop-timeout",
        type=float,
        default=9.0,
        help="seconds a stop (SIGTERM, SIGINT, SIGHUP) may take to drain and shut down before the "
        "gateway's processes are killed (then the status is 1)",
    )
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
            "--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", ray_rest.DEFAULT_DASHBOARD)
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
    st.add_argument(
        "--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", ray_rest.DEFAULT_DASHBOARD)
    )
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    c = sub.add_parser("config", help="gateway config tools")
    cs = c.add_subparsers(dest="config_cmd", required=True)
    ci = cs.add_parser(
        "init", help="write a gateway config for a registry's variants (the demo's rules; prints each choice)"
    )
    ci.add_argument("--registry", type=Path, required=True, help="built by slimgate variants build")
    ci.add_argument("--out", type=Path, default=Path("gateway.yaml"), help="the config file to write")
    ci.add_argument("--force", action="store_true", help="overwrite --out")
    ci.set_defaults(func=cmd_config_init)
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


def cmd_config_init(args: argparse.Namespace) -> int:
    from serving.tools.selection import select, to_yaml
    from variants.registry import Registry

    if args.out.exists() and not args.force:
        raise ValueError(f"{args.out} exists; choose another --out, or --force to replace it")
    if not args.registry.is_dir():
        raise ValueError(f"--registry {args.registry}: no such folder (build one: slimgate variants build)")
    chosen = select(Registry(args.registry))
    for line in chosen.lines:
        print(line)
    args.out.write_text(to_yaml(chosen), encoding="utf-8")
    print(f"wrote {args.out}; serve it with: slimgate serve {args.out}")
    return 0


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
    if os.environ.get(IN_SESSION) != "1":
        # This process only supervises: the gateway runs in a session of its own (serving.supervisor).
        return supervise([sys.executable, "-m", "serving.cli", *args.argv], args.stop_timeout)
    cfg = load_config(args.config)

    def ready(url: str) -> None:
        if args.ready_file:
            args.ready_file.write_text(url)

    run_gateway(cfg, args.metrics_port, on_ready=ready, state=args.state)
    return 0


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


def cmd_status(args: argparse.Namespace) -> int:
    st, found = running_gateway(args.dashboard)
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
        dep: dict[str, Any] = next(iter((app.get("deployments") or {}).values()), {})
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
