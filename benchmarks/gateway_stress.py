"""The sustained-load sections of the gateway benchmark: ``overload`` and ``soak``.

Both run against one gateway, started once, after its capacity is measured: overload offers
twice that capacity, soak half of it for long enough to see memory settle. Replica processes
are found on this machine, so their restarts and memory can be reported.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.gateway_harness import TEXT_HEADERS, batching_config, gateway_config, measure, say, serving
from benchmarks.load import hey


def _replica_pids() -> list[int]:
    """Every Ray Serve replica process on this machine (the router and the variants)."""
    import psutil

    return sorted(
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any("ServeReplica:" in part for part in (p.info["cmdline"] or []))
    )


def _rss_mb(pids: list[int]) -> dict[int, float]:
    import psutil

    return {pid: psutil.Process(pid).memory_info().rss / 2**20 for pid in pids if psutil.pid_exists(pid)}


def _replica_ids() -> set[str]:
    from serving import ray_rest

    apps = ray_rest.status()["applications"]
    return {
        r["replica_id"] for app in apps.values() for d in app["deployments"].values() for r in d["replicas"]
    }


def overload(a: argparse.Namespace, out: dict[str, Any]) -> None:
    variants = {"student-int8": {"ref": "student-int8", "batching": batching_config(16)}}
    from serving.config import AdmissionConfig

    objective = a.objective_s if a.objective_s is not None else AdmissionConfig().latency_objective_s
    cfg = gateway_config(a.registry, variants, **{"admission.latency_objective_s": objective})
    with serving(cfg) as url:
        cap = measure(f"{url}/v1/predict", a.requests, 32, TEXT_HEADERS).ok_rps()
        workers = 128
        pids = _replica_pids()
        before_ids, before_rss = _replica_ids(), _rss_mb(pids)
        if "overload" in a.only:
            say(
                f"\noverload: 2x the measured capacity ({cap:.0f} req/s) for {a.overload_s} s, "
                f"objective {objective} s:"
            )
            r = hey(
                f"{url}/v1/predict",
                duration_s=a.overload_s,
                concurrency=workers,
                rate_per_worker=2 * cap / workers,
                headers=TEXT_HEADERS,
            )
            after_ids, after_rss = _replica_ids(), _rss_mb(pids)
            out["overload"] = r
            statuses = r.statuses()
            other = {s: n for s, n in statuses.items() if s not in (200, 503)}
            say(
                f"  offered {r.rps:.0f} req/s: answered {r.count(200)}, shed {r.count(503)}, "
                f"other {other or 'none'}"
            )
            say(f"  shed answers p99 {1000 * r.p(99, 503):.1f} ms (target <= 50 ms)")
            say(
                f"  admitted p99 {1000 * r.p(99, 200):.1f} ms (objective {1000 * objective:.0f} ms); "
                f"answered {r.ok_rps():.0f} req/s"
            )
            say(
                f"  replicas restarted: {len(before_ids - after_ids)}; memory (MB) before -> after: "
                + ", ".join(
                    f"{before_rss[p]:.0f} -> {after_rss.get(p, float('nan')):.0f}" for p in before_rss
                )
            )
        if "soak" in a.only:
            _soak(a, url, cap, pids, out)


def _soak(a: argparse.Namespace, url: str, cap: float, pids: list[int], out: dict[str, Any]) -> None:
    """Half the capacity for ``--soak-s``; memory sampled as it runs (the feedback window fills first)."""
    import threading

    say(f"\nsoak: half the capacity ({cap / 2:.0f} req/s) for {a.soak_s} s:")
    samples: list[tuple[float, dict[int, float]]] = []
    done = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not done.wait(10.0 if samples else 0.0):
            samples.append((time.monotonic() - start, _rss_mb(pids)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    r = hey(
        f"{url}/v1/predict",
        duration_s=a.soak_s,
        concurrency=16,
        rate_per_worker=cap / 2 / 16,
        headers=TEXT_HEADERS,
    )
    done.set()
    sampler.join()
    samples.append((float(a.soak_s), _rss_mb(pids)))
    out["soak"] = r
    errors = r.total - r.count(200)
    say(f"  {r.total} requests, {errors} not answered with 200 {r.statuses()} (target 0)")
    say(f"  p50 {1000 * r.p(50):.1f} ms, p99 {1000 * r.p(99):.1f} ms")
    first, half = samples[0][1], next(m for t, m in samples if t >= a.soak_s / 2)
    last = samples[-1][1]

    def growth(x: dict[int, float], y: dict[int, float]) -> float:
        return max((y[p] - x[p]) / x[p] for p in x if p in y)

    say(
        f"  replica memory (MB) at 0 / {a.soak_s // 2} / {a.soak_s} s: "
        + "; ".join(f"{first[p]:.0f} / {half.get(p, 0):.0f} / {last.get(p, 0):.0f}" for p in first)
    )
    say(
        f"  growth over the second half {100 * growth(half, last):+.1f}% (target < 5%); over the whole run "
        f"{100 * growth(first, last):+.1f}%, the first minutes filling the bounded feedback window "
        "(feedback.max_entries answers, about 300 bytes each)"
    )
