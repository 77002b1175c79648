"""Rollout controller benchmark: time to roll a faulty candidate back, client errors while the controller
moves traffic, and false rollbacks of a healthy candidate.

    python -m benchmarks.rollout [--stable student-int8] [--candidate student-int8-qat]
                                 [--intervals 100] [--trials 3] [--rate 40]

Starts the gateway (stable + one candidate of the same architecture), a real Prometheus scraping
it every 5 s, and the controller ticking every 5 s with 2 failing intervals to roll back, on
the lineage-derived default rules, under steady client load. Three phases, in one run:

1. false rollbacks: the healthy candidate at 25% (``progressive: false``) judged for
   ``--intervals`` intervals; every rollback is a false one;
2. rollback time: ``--trials`` times, 300 ms of latency is injected into the candidate; the
   clock runs from the moment the fault is live to the moment the running gateway's config has
   the candidate at weight 0; client errors are counted over each trial;
3. promotion: a fresh healthy candidate starts at 5% and is promoted through every step; client
   errors are counted per step.

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", default=None)
    p.add_argument("--stable", default="student-int8")
    p.add_argument("--candidate", default="student-int8-qat")
    p.add_argument("--intervals", type=int, default=100, help="intervals judged for false rollbacks")
    p.add_argument("--trials", type=int, default=3, help="fault injections timed")
    p.add_argument("--rate", type=float, default=40.0, help="client requests per second")
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
            "routing": {"stable": "stable", "weights": {"stable": 75, "candidate": 25}},
            "registry": a.registry,
            "http": {"host": "127.0.0.1", "port": PORT},
            "rollout": {"interval_s": 5.0, "window_s": 30.0, "failures_to_rollback": 2, "passes_per_step": 2},
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

    work = Path(tempfile.mkdtemp(prefix="slimgate-rollout-"))
    texts = random.Random(0).sample(load_dataset().test.texts, 2000)  # representative, not label-grouped
    prom = LocalPrometheus(work / "prom", PROMETHEUS_PORT, [f"127.0.0.1:{METRICS_PORT}"], scrape_s=5.0)
    base = RayGateway().current()
    out: dict = {
        "setup": {
            "scrape_s": 5.0,
            "interval_s": 5.0,
            "window_s": 30.0,
            "failures_to_rollback": 2,
            "rate_per_s": a.rate,
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
            inner = ctl.ctl.on_interval

            def count(key: str, outcome: str) -> None:
                inner(key, outcome)
                if key == "candidate":
                    outcomes[outcome] += 1

            ctl.ctl.on_interval = count
            # 1. false rollbacks of a healthy candidate
            print(f"phase 1: healthy candidate at 25% for {a.intervals} intervals of 5 s ...", flush=True)
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
            for i in range(a.trials):
                healthy = base.with_changes({"variants.candidate.faults": {"delay_ms": float(i)}})
                apply_config(healthy, actor="benchmark", state=work / "controller.db", echo=quiet)
                time.sleep(15)  # the candidate is tracked afresh and has a window of healthy data
                faulty = base.with_changes({"variants.candidate.faults": {"delay_ms": 300.0 + i}})
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
                    "fault_to_weight0_s": None if seconds is None else round(seconds, 2),
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
            print("phase 3: a fresh healthy candidate promoted 5 -> 25 -> 50 -> 100 ...", flush=True)
            fresh = base.with_changes(
                {
                    "variants.candidate.progressive": True,
                    "variants.candidate.faults": {"delay_ms": 0.0, "error_rate": 0.0, "flip_rate": 0.0},
                    "routing.weights": {"stable": 95, "candidate": 5},
                }
            )
            time.sleep(25)  # longer than the window: the last trial's slow answers are out of it
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
    print("\n== rollout benchmark (5 s scrape, 5 s intervals, 2 failures to roll back) ==")
    print(
        f"false rollbacks of a healthy candidate: {fr['rollbacks']} over {fr['intervals']} intervals "
        f"(outcomes {fr['outcomes']}); client errors {fr['client_errors']}/{fr['requests']}"
    )
    for i, t in enumerate(rb["trials"], 1):
        print(
            f"fault -> weight 0, trial {i}: {t['fault_to_weight0_s']} s (apply {t['apply_s']} s); "
            f"client errors {t['client_errors']}/{t['requests']}"
        )
    print(f"fault -> weight 0: median {rb['median_s']} s, max {rb['max_s']} s (target <= 15 s)")
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
