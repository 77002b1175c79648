"""SLO guard benchmark: requests that miss the latency objective when load steps past capacity, with the
guard off (admission control sheds) and on (the overloaded variant browns out to a cheaper one).

    python -m benchmarks.slo_guard [--registry R] [--stable teacher-onnx] [--cheap student-int8]
                                   [--objective-s 0.25] [--low-s 20] [--high-s 60] [--after-s 40]

Starts one gateway serving ``--stable`` at 100% with ``--cheap`` configured at weight 0 (both in
the router, one thread each), and measures the stable variant's capacity C (hey, 6 connections, so
that admission control sheds none, 10 s). Then, once with the guard off and once on, in the same
run on the same gateway, hey offers
0.5 C for ``--low-s``, 2 C for ``--high-s``, and 0.5 C for ``--after-s`` (64 rate-limited
workers at 2 C, in 16 hey processes started a fraction of a period apart, so that hey's workers
do not fire in bursts). A request misses when it is not answered 200 within the objective, so
a request shed by admission control (503) is a miss too. While the guard is on, its state is
read from the router's ``GET /admin/config`` every 0.25 s:

* reaction: from the step up to the first moment a share is browned out;
* recovery: from the step down to the moment every share is back (the original mix);
* the expected accuracy of the mix served (registry test accuracy, weighted by answers).

Figures are printed and written to reports/slo_guard.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.gateway_harness import gateway_config, say, serving
from benchmarks.load import Load, hey

HIGH_WORKERS = 64
LOW_WORKERS = 16
HEY_PROCESSES = 16
CAPACITY_CALLERS = 6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", default=None)
    p.add_argument("--stable", default="teacher-onnx", help="the variant that serves (and is overloaded)")
    p.add_argument("--cheap", default="student-int8", help="the cheaper variant it may brown out to")
    p.add_argument("--objective-s", type=float, default=0.25, help="slo.objective_s (p99)")
    p.add_argument("--low-s", type=float, default=20.0)
    p.add_argument("--high-s", type=float, default=60.0)
    p.add_argument("--after-s", type=float, default=40.0)
    p.add_argument(
        "--texts",
        type=int,
        default=8,
        help="texts per request (from the test split): the model's work, "
        "not the gateway's, is what a brownout saves",
    )
    p.add_argument("--out", type=Path, default=Path("reports/slo_guard.json"))
    a = p.parse_args(argv)
    from variants.hardware import describe

    os.environ.setdefault("SLIMGATE_ADMIN_TOKEN", secrets.token_urlsafe(16))
    machine = describe()
    say(f"machine: {machine}")
    variant = {
        "placement": "router",
        "threads": 1,
        "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.0},
    }
    cfg = gateway_config(
        a.registry,
        {"stable": {"ref": a.stable, **variant}, "cheap": {"ref": a.cheap, **variant}},
        **{"routing.weights": {"stable": 100}},
    )
    out: dict[str, Any] = {
        "machine": machine,
        "stable": a.stable,
        "cheap": a.cheap,
        "objective_s": a.objective_s,
    }
    a.body = _body(a.texts)
    out["texts_per_request"] = a.texts
    with serving(cfg) as url:
        predict = url + "/v1/predict"
        hey(predict, n=200, concurrency=8, body=a.body)  # warm-up
        # Few enough callers that admission control sheds none of them (its floor is 8 in flight).
        capacity = hey(predict, duration_s=10, concurrency=CAPACITY_CALLERS, body=a.body).ok_rps()
        out["capacity_rps"] = capacity
        say(
            f"capacity of {a.stable}: {capacity:.0f} req/s of {a.texts} texts each "
            f"(hey -c {CAPACITY_CALLERS}, 10 s)"
        )
        for mode in ("off", "on"):
            _apply(None if mode == "off" else a.objective_s)
            out[mode] = _profile(url, capacity, a)
            _print_mode(mode, out[mode])
    off, on = out["off"]["misses"], out["on"]["misses"]
    out["fewer_misses"] = off / on if on else float("inf")
    say(f"\n== SLO guard ({machine}) ==")
    say(f"objective: p99 {a.objective_s:g} s; load 0.5x -> 2x -> 0.5x of {capacity:.0f} req/s ({a.stable})")
    for mode in ("off", "on"):
        _print_mode(mode, out[mode])
    say(f"misses: {off} off vs {on} on = {out['fewer_misses']:.1f}x fewer with the guard")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    say(f"wrote {a.out}")
    return 0


def _apply(objective_s: float | None) -> None:
    from serving.controller.service import RayGateway
    from serving.deployer import apply_config

    cfg = (
        RayGateway()
        .current()
        .with_changes({"slo": {"objective_s": objective_s, "react_s": 1.0, "recover_s": 8.0}}, "benchmark")
    )
    state = Path(os.environ.get("TMPDIR", "/tmp")) / "slimgate-bench-slo.db"
    apply_config(cfg, actor="benchmark", state=state, echo=lambda _m: None)


class GuardWatch:
    """Polls the router's guard state; (time.monotonic(), largest fraction, expected accuracy)."""

    def __init__(self, url: str) -> None:
        self.url = url + "/admin/config"
        self.samples: list[tuple[float, float, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> GuardWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        token = os.environ["SLIMGATE_ADMIN_TOKEN"]
        while not self._stop.wait(0.25):
            req = urllib.request.Request(self.url, headers={"authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    guard = json.loads(resp.read()).get("slo_guard", {})
            except OSError:
                continue
            fractions = [b["fraction"] for b in guard.get("brownouts", {}).values()]
            self.samples.append(
                (time.monotonic(), max(fractions, default=0.0), guard.get("expected_accuracy"))
            )

    def first(self, since: float, until: float, pred) -> float | None:
        return next((t - since for t, f, _ in self.samples if since <= t <= until and pred(f)), None)

    def accuracy(self, since: float, until: float) -> float | None:
        values = [acc for t, _, acc in self.samples if since <= t <= until and acc is not None]
        return statistics.fmean(values) if values else None


def _body(n: int) -> str:
    import random

    from variants.dataset import load_dataset

    return json.dumps({"inputs": random.Random(0).sample(load_dataset().test.texts, n)})


def _phase(url: str, rate: float, seconds: float, workers: int, body: str) -> Load:
    """``rate`` requests/s for ``seconds`` from ``workers`` rate-limited hey workers.

    One hey process starts all its workers' tickers together, so its workers fire in bursts; the
    workers are spread over ``HEY_PROCESSES`` processes started a fraction of a period apart,
    which spreads the bursts into a steady stream."""
    per_process = max(1, workers // HEY_PROCESSES)
    per_worker = rate / (per_process * HEY_PROCESSES)
    period = 1.0 / per_worker
    loads: list[Load] = []

    def one(i: int) -> None:
        time.sleep(i * period / HEY_PROCESSES)
        left = seconds - i * period / HEY_PROCESSES
        loads.append(
            hey(
                url + "/v1/predict",
                duration_s=left,
                concurrency=per_process,
                rate_per_worker=per_worker,
                body=body,
            )
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(HEY_PROCESSES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged: dict[int, list[float]] = {}
    for load in loads:
        for status, values in load.latencies.items():
            merged.setdefault(status, []).extend(values)
    return Load(seconds, merged)


def _misses(load: Load, objective_s: float) -> tuple[int, int]:
    late = sum(1 for x in load.latencies.get(200, []) if x > objective_s)
    failed = load.total - load.count(200)
    return late, failed


def _profile(url: str, capacity: float, a: argparse.Namespace) -> dict[str, Any]:
    with GuardWatch(url) as watch:
        t0 = time.monotonic()
        low = _phase(url, 0.5 * capacity, a.low_s, LOW_WORKERS, a.body)
        t_high = time.monotonic()
        high = _phase(url, 2.0 * capacity, a.high_s, HIGH_WORKERS, a.body)
        t_after = time.monotonic()
        after = _phase(url, 0.5 * capacity, a.after_s, LOW_WORKERS, a.body)
        t_end = time.monotonic()
    phases = {"low": low, "high": high, "after": after}
    result: dict[str, Any] = {"phases": {}}
    misses = 0
    for name, load in phases.items():
        late, failed = _misses(load, a.objective_s)
        misses += late + failed
        result["phases"][name] = {
            "requests": load.total,
            "ok_rps": load.ok_rps(),
            "p99_s": load.p(99),
            "late": late,
            "failed": failed,
            "statuses": load.statuses(),
        }
    result["requests"] = sum(p.total for p in phases.values())
    result["misses"] = misses
    result["reaction_s"] = watch.first(t_high, t_after, lambda f: f > 0)
    back = [t for t, f, _ in watch.samples if t_after <= t <= t_end and f > 0]
    result["recovery_s"] = (max(back) - t_after + 0.25) if back else 0.0
    result["browned_out_at_end"] = bool(watch.samples and watch.samples[-1][1] > 0)
    result["expected_accuracy"] = {
        "low": watch.accuracy(t0, t_high),
        "high": watch.accuracy(t_high + 5, t_after),
        "after": watch.accuracy(t_after + 30, t_end),
    }
    result["peak_fraction"] = max((f for _, f, _ in watch.samples), default=0.0)
    return result


def _print_mode(mode: str, r: dict[str, Any]) -> None:
    say(f"\nguard {mode}: {r['misses']} of {r['requests']} requests missed (late or not answered)")
    for name, ph in r["phases"].items():
        say(
            f"  {name:6s} {ph['requests']:6d} requests  {ph['ok_rps']:6.1f} ok/s  "
            f"p99 {1000 * ph['p99_s']:7.1f} ms  "
            f"late {ph['late']:5d}  failed {ph['failed']:5d}  {ph['statuses']}"
        )
    if mode == "on":
        acc = r["expected_accuracy"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        say(
            f"  reaction {r['reaction_s'] if r['reaction_s'] is None else round(r['reaction_s'], 2)} s, "
            f"back to the original mix {r['recovery_s']:.1f} s after the load fell"
            f"{' (still browned out at the end!)' if r['browned_out_at_end'] else ''}; peak share diverted "
            f"{100 * r['peak_fraction']:.0f}%"
        )
        say(
            f"  expected accuracy of the mix: low {fmt(acc['low'])}, 2x {fmt(acc['high'])}, "
            f"after {fmt(acc['after'])}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
