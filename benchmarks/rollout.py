"""Rollout controller benchmark: time to roll a faulty candidate back at low traffic, client errors while
the controller moves traffic, and false rollbacks of a healthy candidate.

    python -m benchmarks.rollout [--stable student-int8] [--candidate student-int8-static]
                                 [--intervals 100] [--delays-ms 250 400 400] [--rate 15] [--weight 20]

Starts the gateway (stable + one candidate of the same architecture), a real Prometheus scraping
it every 2 s, and the controller ticking every 2 s over a 10 s window with 2 failing intervals to
roll back, on the lineage-derived default rules, under steady client load. At the defaults the
candidate gets about 3 req/s of its own: fewer than the 50 requests a window a p99 pass needs,
which is the point (a slow canary completes few requests, and must not hide behind that).
Three phases, in one run:

1. false rollbacks: the healthy candidate at ``--weight`` % (``progressive: false``) judged for
   ``--intervals`` intervals; every rollback is a false one;
2. rollback time: once per ``--delays-ms``, that much latency is injected into the candidate
   (250 ms is about 3x the bound on a student; 400 ms is the scenario of the issue); the clock runs
   from the moment the fault is live to the moment the running gateway's config has the candidate
   at weight 0, and is also given in intervals; client errors are counted over each trial;
3. promotion: a fresh healthy candidate starts at 25% and is promoted through the remaining steps
   over a 30 s window (a pass needs 50 of its requests in a window); client errors are counted
   per step.

Figures are printed (and written to reports/rollout.json); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

PORT = 18200
METRICS_PORT = 18280
PROMETHEUS_PORT = 19290
SCRAPE_S = 2.0
INTERVAL_S = 2.0
WINDOW_S = 10.0
PROMOTION_WINDOW_S = 30.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", default=None)
    p.add_argument("--stable", default="student-int8")
    p.add_argument("--candidate", default="student-int8-static")
    p.add_argument("--intervals", type=int, default=100, help="intervals judged for false rollbacks")
    p.add_argument(
        "--delays-ms",
        type=float,
        nargs="+",
        default=[250.0, 300.0, 400.0],
        help="faults timed (distinct: a rolled-back config never returns)",
    )
    p.add_argument("--rate", type=float, default=15.0, help="client requests per second")
    p.add_argument("--weight", type=int, default=20, help="the candidate's share of traffic, percent")
    p.add_argument("--out", type=Path, default=Path("reports/rollout.json"))
    a = p.parse_args()
    if a.registry:
        os.environ["SLIMGATE_REGISTRY"] = a.registry
    os.environ.setdefault("SLIMGATE_ADMIN_TOKEN", secrets.token_urlsafe(16))

    from serving.config import parse_config
    from serving.launcher import run_gateway

    cfg = parse_config(
        {
            "variants": {
                "stable": {"ref": a.stable},
                "candidate": {"ref": a.candidate, "progressive": False},
            },
            "routing": {"stable": "stable", "weights": {"stable": 100 - a.weight, "candidate": a.weight}},
            "registry": a.registry,
            "http": {"host": "127.0.0.1", "port": PORT},
            "rollout": {
                "interval_s": INTERVAL_S,
                "window_s": WINDOW_S,
                "failures_to_rollback": 2,
                "passes_per_step": 2,
            },
        },
        "benchmark",
    )
    results: dict = {}
    run_gateway(cfg, METRICS_PORT, on_ready=lambda url: results.update(_phases(url, a)), block=False)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {a.out}")


def _phases(url: str, a: argparse.Namespace) -> dict:
    from serving.controller.candidate import Phase
    from serving.controller.service import RayGateway
    from serving.controller.sources import PrometheusSource
    from serving.deployer import apply_config
    from serving.ops.local_prometheus import LocalPrometheus
    from serving.tools.drill import ControllerThread, SteadyLoad, running_revision, watch
    from variants.dataset import load_dataset
    from variants.hardware import describe

    work = Path(tempfile.mkdtemp(prefix="slimgate-rollout-"))
    texts = random.Random(0).sample(load_dataset().test.texts, 2000)  # representative, not label-grouped
    prom = LocalPrometheus(work / "prom", PROMETHEUS_PORT, [f"127.0.0.1:{METRICS_PORT}"], scrape_s=SCRAPE_S)
    base = RayGateway().current()
    out: dict = {
        "setup": {
            "scrape_s": SCRAPE_S,
            "interval_s": INTERVAL_S,
            "window_s": WINDOW_S,
            "failures_to_rollback": 2,
            "rate_per_s": a.rate,
            "candidate_rate_per_s": a.rate * a.weight / 100,
            "machine": describe(),
            "stable": a.stable,
            "candidate": a.candidate,
        }
    }
    quiet = lambda _m: None  # noqa: E731
    try:
        with (
            SteadyLoad(url, texts, rate=a.rate) as load,
            ControllerThread(PrometheusSource(prom.url), work / "controller.db") as ctl,
        ):
            outcomes: Counter = Counter()
            judged: list[float] = []  # when each of the candidate's intervals was judged
            inner = ctl.ctl.on_interval

            def count(key: str, outcome: str) -> None:
                inner(key, outcome)
                if key == "candidate":
                    outcomes[outcome] += 1
                    judged.append(time.monotonic())

            ctl.ctl.on_interval = count
            # 1. false rollbacks of a healthy candidate
            print(
                f"phase 1: healthy candidate at {a.weight}% for {a.intervals} intervals "
                f"of {INTERVAL_S:g} s ...",
                flush=True,
            )
            t0 = time.monotonic()
            while sum(outcomes.values()) < a.intervals:
                time.sleep(1)
                state = ctl.ctl.store.load("candidate")
                if state is not None and state.phase is Phase.ROLLED_BACK:
                    break
            rollbacks = sum(1 for e in ctl.ctl.store.entries() if e.action == "rollback")
            out["false_rollbacks"] = {
                "intervals": sum(outcomes.values()),
                "outcomes": dict(outcomes),
                "rollbacks": rollbacks,
                "client_errors": load.errors(t0),
                "requests": len(load.window(t0)),
            }
            print(f"  {out['false_rollbacks']}", flush=True)

            # 2. fault -> weight 0
            trials = []
            for i, delay_ms in enumerate(a.delays_ms):
                # A distinct tiny delay makes each trial a new revision, tracked afresh.
                healthy = base.with_changes({"variants.candidate.faults": {"delay_ms": i / 10}})
                apply_config(healthy, actor="benchmark", state=work / "controller.db", echo=quiet)
                time.sleep(WINDOW_S + 5)  # the candidate has a window of healthy data
                faulty = base.with_changes({"variants.candidate.faults": {"delay_ms": delay_ms}})
                start_apply = time.monotonic()
                apply_config(faulty, actor="benchmark", state=work / "controller.db", echo=quiet)
                live = time.monotonic()  # Ray answered RUNNING: the fault is on every replica
                seconds = None
                while time.monotonic() - live < 120:
                    if RayGateway().current().routing.weights.get("candidate", 0) == 0:
                        seconds = time.monotonic() - live
                        break
                    time.sleep(0.25)
                time.sleep(5)
                trial = {
                    "delay_ms": delay_ms,
                    "fault_to_weight0_s": None if seconds is None else round(seconds, 2),
                    # Intervals the controller judged the faulty revision in, the rollback's included.
                    "intervals": None
                    if seconds is None
                    else sum(live < t <= live + seconds + 0.5 for t in judged),
                    "apply_s": round(live - start_apply, 2),
                    "client_errors": load.errors(start_apply),
                    "requests": len(load.window(start_apply)),
                }
                trials.append(trial)
                print(f"  trial {i + 1}: {trial}", flush=True)
            times = [t["fault_to_weight0_s"] for t in trials if t["fault_to_weight0_s"] is not None]
            out["rollback"] = {
                "trials": trials,
                "median_s": statistics.median(times) if times else None,
                "max_s": max(times) if times else None,
            }

            # 3. promotion through every step
            print(
                f"phase 3: a fresh healthy candidate promoted 25 -> 50 -> 100 "
                f"({PROMOTION_WINDOW_S:g} s window) ...",
                flush=True,
            )
            fresh = base.with_changes(
                {
                    "variants.candidate.progressive": True,
                    "variants.candidate.faults": {"delay_ms": 0.0, "error_rate": 0.0, "flip_rate": 0.0},
                    "routing.weights": {"stable": 75, "candidate": 25},
                    # A pass needs 50 requests of the candidate in a window: at a few req/s that
                    # takes a longer window than the 10 s that catches a fault.
                    "rollout.window_s": PROMOTION_WINDOW_S,
                }
            )
            time.sleep(WINDOW_S + 5)  # the last trial's slow answers are out of the window
            t3 = time.monotonic()
            apply_config(fresh, actor="benchmark", state=work / "controller.db", echo=quiet)
            steps: list[dict] = []

            def step(state, seconds: float) -> None:
                if steps:
                    steps[-1]["client_errors"] = load.errors(steps[-1]["_t"])
                    steps[-1]["requests"] = len(load.window(steps[-1]["_t"]))
                steps.append(
                    {
                        "weight": state.weight,
                        "phase": state.phase.value,
                        "at_s": round(seconds, 1),
                        "_t": time.monotonic(),
                    }
                )

            done, took = watch(
                ctl.ctl,
                "candidate",
                lambda s: s.phase in (Phase.PROMOTED, Phase.ROLLED_BACK),
                600,
                step,
                since=t3,
                revision=running_revision("candidate"),
            )
            time.sleep(5)
            if steps:
                steps[-1]["client_errors"] = load.errors(steps[-1]["_t"])
                steps[-1]["requests"] = len(load.window(steps[-1]["_t"]))
            for s in steps:
                s.pop("_t")
            out["promotion"] = {
                "result": None if done is None else done.phase.value,
                "seconds": round(took, 1),
                "steps": steps,
                "client_errors": load.errors(t3),
                "requests": len(load.window(t3)),
            }
            print(f"  {out['promotion']}", flush=True)
    finally:
        prom.stop()
    _print(out)
    return out


def _print(out: dict) -> None:
    fr, rb, pr = out["false_rollbacks"], out["rollback"], out["promotion"]
    st = out["setup"]
    print(
        f"\n== rollout benchmark ({st['scrape_s']:g} s scrape, {st['interval_s']:g} s intervals, "
        f"{st['window_s']:g} s window, 2 failures to roll back; "
        f"candidate {st['candidate_rate_per_s']:g} req/s of {st['rate_per_s']:g}) =="
    )
    print(f"machine: {st['machine']}")
    print(
        f"false rollbacks of a healthy candidate: {fr['rollbacks']} over {fr['intervals']} intervals "
        f"(outcomes {fr['outcomes']}); client errors {fr['client_errors']}/{fr['requests']}"
    )
    for i, t in enumerate(rb["trials"], 1):
        print(
            f"fault +{t['delay_ms']:g} ms -> weight 0, trial {i}: {t['fault_to_weight0_s']} s = "
            f"{t['intervals']} intervals (apply {t['apply_s']} s); "
            f"client errors {t['client_errors']}/{t['requests']}"
        )
    print(
        f"fault -> weight 0: median {rb['median_s']} s, max {rb['max_s']} s "
        "(target: within 3 intervals of tracking)"
    )
    print(
        f"promotion: {pr['result']} after {pr['seconds']} s; "
        f"client errors {pr['client_errors']}/{pr['requests']}"
    )
    for s in pr["steps"]:
        print(
            f"  {s['at_s']:6.1f} s  {s['phase']:12s} {s['weight']:3d}%  client errors "
            f"{s.get('client_errors', 0)}/{s.get('requests', 0)}"
        )


if __name__ == "__main__":
    main()
