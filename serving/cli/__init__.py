"""The ``slimgate`` command: one entry point that gathers each package's sub-commands."""

from __future__ import annotations

import argparse
import sys

from serving.cli import controller as controller_cli
from serving.cli import gateway as gateway_commands
from serving.config import ConfigError
from serving.controller.store import StoreError
from serving.launcher import run_gateway
from serving.ray_rest import ControlError
from serving.tools import report
from serving.tools.report import ReportError
from variants import cli as variants_cli
from variants.recipe import RecipeError
from variants.registry import RegistryError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimgate", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    variants_cli.add_commands(sub)
    gateway_commands.add_commands(sub)
    controller_cli.add_commands(sub)
    report.add_commands(sub)
    d = sub.add_parser("demo", help="the main job: build the variants, start the gateway, serve traffic")
    d.add_argument("--recipe", default="quick", help="recipe to build (default: the quick profile)")
    d.add_argument("--registry", default=None)
    d.add_argument(
        "--config",
        default=None,
        help="gateway config (default: derived from the registry after the build by the rules of "
        "serving/tools/selection.py, and written to WORKDIR/gateway.yaml)",
    )
    d.add_argument("--requests", type=int, default=300, help="sample requests sent once the gateway is up")
    d.add_argument("--metrics-port", type=int, default=8080)
    d.add_argument("--exit", action="store_true", help="stop after the sample traffic instead of serving on")
    d.add_argument(
        "--no-drill",
        action="store_true",
        help="skip the live rollback and promotion by the rollout controller",
    )
    d.add_argument(
        "--workdir",
        default="runs/demo",
        help="the derived gateway config, the drill's controller state and Prometheus data",
    )
    d.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from serving.config import load_config
    from serving.tools.demo import derive_config, live_rollout, show_traffic
    from variants import Registry

    if args.registry:
        os.environ["SLIMGATE_REGISTRY"] = str(args.registry)  # the gateway's replicas read the same root
    # The demo runs its steps as the commands a user would type, parsed by the same parser, so a
    # command's new option can never leave the demo with arguments it lacks.
    registry = ["--registry", str(args.registry)] if args.registry else []
    build = ["variants", *registry, "build", "--recipe", args.recipe]
    rc = variants_cli.cmd_build(parser().parse_args(build))
    if rc != 0:
        return rc
    variants_cli.cmd_lineage(parser().parse_args(["variants", *registry, "lineage"]))
    if args.config:
        cfg, source = load_config(args.config), args.config
    else:
        # What the build made deployable decides what is served; NoServableVariant (a ValueError)
        # reaches main() and stops the demo with its figures, before Ray starts.
        cfg, source = derive_config(Registry(args.registry), Path(args.workdir))
    print(f"\nstarting the gateway ({source}) ...")

    def on_ready(url: str) -> None:
        show_traffic(url, cfg.admin, args.requests)
        if not args.no_drill:
            live_rollout(url, args.metrics_port, Path(args.workdir))

    run_gateway(
        cfg,
        args.metrics_port,
        on_ready=on_ready,
        block=not args.exit,
    )
    return 0


# What a command reports as one line and status 2: the user's input or the machine's state, never
# a bug (which keeps its traceback).
USER_ERRORS = (RecipeError, RegistryError, ConfigError, ControlError, ReportError, StoreError, ValueError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `serve` runs itself again, supervised
    try:
        return args.func(args)
    except (
        RecipeError,
        RegistryError,
        ConfigError,
        ControlError,
        ReportError,
        StoreError,
        ValueError,
    ) as err:
        print(f"slimgate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimgate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
