"""``slimgate controller run`` and ``slimgate audit``: the rollout controller from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from serving import ray_rest
from serving.controller.store import default_state_path


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
    r.add_argument(
        "--interval", type=float, default=None, help="seconds between intervals (default: rollout.interval_s)"
    )
    r.add_argument(
        "--window", type=float, default=None, help="seconds of metrics judged (default: rollout.window_s)"
    )
    r.add_argument("--state", type=Path, default=default_state_path(), help="SQLite state and audit file")
    r.add_argument(
        "--metrics-port", type=int, default=9102, help="port of the controller's /metrics and admin API"
    )
    r.add_argument("--host", default="127.0.0.1", help="address the metrics and admin API bind to")
    r.add_argument("--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", ray_rest.DEFAULT_DASHBOARD))
    r.set_defaults(func=cmd_run)

    for command, what in (
        ("promote", "make a candidate the stable variant now"),
        ("abort", "roll a candidate back now (it stays out until it changes)"),
        ("pause", "hold a candidate's weight (failures still roll it back)"),
        ("resume", "let a paused or frozen candidate progress again"),
    ):
        o = sub.add_parser(command, help=what)
        o.add_argument("variant")
        o.add_argument("--state", type=Path, default=default_state_path())
        o.add_argument("--actor", default=os.environ.get("USER", "operator"))
        o.add_argument(
            "--dashboard", default=os.environ.get("RAY_DASHBOARD_ADDRESS", ray_rest.DEFAULT_DASHBOARD)
        )
        o.set_defaults(func=cmd_operate, command=command)

    a = sub.add_parser("audit", help="the append-only record of every step, promotion and rollback")
    a.add_argument("--state", type=Path, default=default_state_path())
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--json", action="store_true")
    a.add_argument(
        "--verify",
        action="store_true",
        help="check the audit log's hash-chained copy line by line, and the database against it",
    )
    a.set_defaults(func=cmd_audit)


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def cmd_run(args: argparse.Namespace) -> int:
    from serving.controller.api import ControllerAPI
    from serving.controller.service import ControllerMetrics, build, run
    from serving.controller.sources import EmbeddedSource, MetricsSource, PrometheusSource

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()
    source: MetricsSource
    if args.prometheus:
        source = PrometheusSource(args.prometheus)
    else:
        embedded = EmbeddedSource(lambda: fetch_text(args.embedded))
        start_scraping(embedded, stop, args.interval or 1.0)
        source = embedded
    metrics = ControllerMetrics()
    ctl = build(source, args.state, window_s=args.window, dashboard=args.dashboard, metrics=metrics)
    api = ControllerAPI(ctl, metrics, args.host, args.metrics_port).start()
    print(f"slimgate controller: metrics and admin API at http://{args.host}:{api.port}", flush=True)
    # SIGTERM (Kubernetes, systemd) ends the loop after the tick in progress, like Ctrl-C; a process
    # started in the background by a non-interactive shell never sees SIGINT at all.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run(ctl, metrics, interval_s=args.interval, stop=stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        api.close()
    return 0


def start_scraping(source, stop: threading.Event, every_s: float) -> threading.Thread:
    """The embedded source computes rates from its own snapshots of the gateway; take them in a thread."""

    def scraper() -> None:
        while not stop.wait(min(1.0, every_s)):
            try:
                source.scrape()
            except Exception as err:  # noqa: BLE001 - a failed scrape is reported by measure()
                logging.getLogger("slimgate.controller").warning("scrape failed: %s", err)

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    return thread


def cmd_operate(args: argparse.Namespace) -> int:
    from serving.controller.candidate import InvalidTransition
    from serving.controller.service import build

    # Operator commands judge nothing, so they need no metrics source.
    ctl = build(None, args.state, dashboard=args.dashboard)
    try:
        state = ctl.operate(args.variant, args.command, actor=args.actor)
    except InvalidTransition as err:
        print(f"slimgate: {args.command} refused: {err}", file=sys.stderr)
        return 2
    finally:
        ctl.store.close()
    print(f"{args.variant}: {state.phase.value} at {state.weight}% ({state.last_reason})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.verify:
        return verify_audit(args.state)
    return print_audit(args.state, limit=args.limit, as_json=args.json)


def print_audit(state: Path, *, limit: int | None = None, as_json: bool = False) -> int:
    """The audit log's newest entries, one line each (or as JSON); 1 when there is no state."""
    from serving.controller.store import StateStore

    if not state.exists():
        print(f"no controller state at {state}", file=sys.stderr)
        return 1
    with StateStore(state) as store:
        entries = store.entries(limit=limit)
    if as_json:
        from serving.controller.api import entry_json

        print(json.dumps([entry_json(e) for e in entries], indent=2, default=str))
        return 0
    for e in entries:
        at = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{at} {e.actor:12s} {e.action:13s} {e.variant:16s} {e.config_revision or '-':12s} "
            f"{dict(e.weights_before)} -> {dict(e.weights_after)}  {e.reason}"
        )
    return 0


def verify_audit(state: Path) -> int:
    """Every problem of the audit log's copy, by line, and whether the database holds all of it."""
    from serving.controller.audit_chain import chain_path, verify
    from serving.controller.store import StateStore, StoreError

    copy = verify(chain_path(state))
    problems = list(copy.problems)
    try:
        with StateStore(state) as store:
            held = len(store.entries())
    except StoreError as err:
        problems.append(str(err))
    else:
        if held != len(copy.records):
            problems.append(f"{state} holds {held} entries, its copy {len(copy.records)}")
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"audit log intact: {len(copy.records)} entries, hash chain unbroken, {state} holds them all")
    return 0
