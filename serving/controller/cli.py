"""``slimgate controller run`` and ``slimgate audit``: the rollout controller from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from serving import control

DEFAULT_STATE = Path(os.environ.get("SLIMGATE_STATE", Path.home() / ".local/share/slimgate/controller.db"))


def add_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("controller", help="roll candidates back or promote them from metric signals")
    cs = c.add_subparsers(dest="controller_cmd", required=True)
    r = cs.add_parser("run", help="watch every non-stable variant of the running gateway (blocks)")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--prometheus", default=None, help="Prometheus base URL (production source)")
    src.add_argument(
        "--embedded",
        default="http://127.0.0.1:8080/metrics",
        help="the gateway's own metrics endpoint, for machines without Prometheus (default)",
    )
    r.add_argument("--interval", type=float, default=5.0, help="seconds between analysis intervals")
    r.add_argument("--window", type=float, default=30.0, help="seconds of metrics each interval judges")
    r.add_argument("--state", type=Path, default=DEFAULT_STATE, help="SQLite state and audit file")
    r.add_argument("--metrics-port", type=int, default=9102, help="the controller's own /metrics")
    r.add_argument("--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", control.DEFAULT_DASHBOARD))
    r.set_defaults(func=cmd_run)

    for command, what in (
        ("promote", "make a candidate the stable variant now"),
        ("abort", "roll a candidate back now (it stays out until it changes)"),
        ("pause", "hold a candidate's weight (failures still roll it back)"),
        ("resume", "let a paused or frozen candidate progress again"),
    ):
        o = sub.add_parser(command, help=what)
        o.add_argument("variant")
        o.add_argument("--state", type=Path, default=DEFAULT_STATE)
        o.add_argument("--actor", default=os.environ.get("USER", "operator"))
        o.add_argument(
            "--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", control.DEFAULT_DASHBOARD)
        )
        o.set_defaults(func=cmd_operate, command=command)

    a = sub.add_parser("audit", help="the append-only record of every step, promotion and rollback")
    a.add_argument("--state", type=Path, default=DEFAULT_STATE)
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_audit)


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def cmd_run(args: argparse.Namespace) -> int:
    from serving.controller.service import run
    from serving.controller.sources import EmbeddedSource, PrometheusSource

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.prometheus:
        source = PrometheusSource(args.prometheus)
        before = None
    else:
        source = EmbeddedSource(lambda: fetch_text(args.embedded))
        before = source.scrape
    stop = threading.Event()
    if before is not None:
        # The embedded source computes rates from its own snapshots; take one every interval.
        def scraper() -> None:
            while not stop.wait(min(1.0, args.interval)):
                try:
                    before()
                except Exception as err:  # noqa: BLE001 - a failed scrape is reported by measure()
                    logging.getLogger("slimgate.controller").warning("scrape failed: %s", err)

        threading.Thread(target=scraper, daemon=True).start()
    try:
        run(
            source,
            args.state,
            interval_s=args.interval,
            window_s=args.window,
            dashboard=args.dashboard,
            metrics_port=args.metrics_port,
            stop=stop,
        )
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_operate(args: argparse.Namespace) -> int:
    from serving.controller.decide import InvalidTransition
    from serving.controller.runner import Controller
    from serving.controller.service import RayGateway
    from serving.controller.store import StateStore

    # Operator commands judge nothing, so they need no metrics source.
    ctl = Controller(RayGateway(args.dashboard), source=None, store=StateStore(args.state))  # type: ignore[arg-type]
    try:
        state = ctl.operate(args.variant, args.command, actor=args.actor)
    except InvalidTransition as err:
        print(f"slimgate: {args.command} refused: {err}", file=sys.stderr)
        return 2
    print(f"{args.variant}: {state.phase.value} at {state.weight}% ({state.last_reason})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from serving.controller.store import StateStore

    if not args.state.exists():
        print(f"no controller state at {args.state}", file=sys.stderr)
        return 1
    entries = StateStore(args.state).entries(limit=args.limit)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **e.__dict__,
                        "weights_before": dict(e.weights_before),
                        "weights_after": dict(e.weights_after),
                        "signals": dict(e.signals),
                    }
                    for e in entries
                ],
                indent=2,
                default=str,
            )
        )
        return 0
    for e in entries:
        at = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{at} {e.actor:10s} {e.action:9s} {e.variant:16s} {dict(e.weights_before)} -> "
            f"{dict(e.weights_after)}  {e.reason}"
        )
    return 0
