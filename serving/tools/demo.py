"""The README's main job: build the variants, start the gateway, send it real traffic, show what happened."""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from serving.config import AdminConfig, GatewayConfig
from serving.errors_and_auth import resolve_admin_token
from variants.registry import Registry

SCRAPE_S = 2.0  # the drill's Prometheus


def derive_config(registry: Registry, workdir: Path) -> tuple[GatewayConfig, str]:
    """The gateway config the build made deployable (:mod:`serving.tools.selection`), each choice
    printed with its reason, written to ``workdir/gateway.yaml`` for ``slimgate serve``."""
    from serving.tools.selection import select, to_yaml

    chosen = select(registry)
    print("\ngateway config, derived from the registry (serving/tools/selection.py):")
    for line in chosen.lines:
        print(f"  {line}")
    written = workdir / "gateway.yaml"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(to_yaml(chosen), encoding="utf-8")
    print(f"written to {written} (serve it again with `slimgate serve {written}`)")
    return chosen.config, str(written)


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[dict[str, Any], float]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())
    return out, time.perf_counter() - start


def send_traffic(
    url: str, texts: list[str], requests: int, users: int = 50, concurrency: int = 4, seed: int = 0
) -> list[tuple[dict[str, Any], float]]:
    rng = random.Random(seed)
    jobs = [([rng.choice(texts)], f"user-{rng.randrange(users)}") for _ in range(requests)]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(
            pool.map(lambda j: _post(url + "/v1/predict", {"inputs": j[0]}, {"x-user-id": j[1]}), jobs)
        )


def summarize(results: list[tuple[dict[str, Any], float]]) -> str:
    by_variant: dict[str, list[float]] = defaultdict(list)
    routes: dict[str, Counter] = defaultdict(Counter)
    for body, seconds in results:
        by_variant[body["variant"]].append(seconds * 1000)
        routes[body["variant"]][body["route"]] += 1
    lines = [f"{'variant':20s} {'requests':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  routes"]
    for key, lat in sorted(by_variant.items()):
        p99 = sorted(lat)[max(0, int(len(lat) * 0.99) - 1)]
        lines.append(f"{key:20s} {len(lat):8d} {statistics.median(lat):8.1f} {p99:8.1f}  {dict(routes[key])}")
    return "\n".join(lines)


def show_traffic(url: str, admin: AdminConfig, requests: int) -> None:
    from variants.dataset import load_dataset

    test = load_dataset().test
    print(f"\nsending {requests} requests from the test split to {url}/v1/predict (sticky by x-user-id) ...")
    results = send_traffic(url, random.Random(1).sample(test.texts, 2000), requests)
    print(summarize(results))
    picks = [test.examples[i] for i in range(0, len(test), len(test) // 3)][:3]
    sample, _ = _post(url + "/v1/predict", {"inputs": [e.text for e in picks]}, {})
    print("\nexample answer:")
    for text, out, truth in zip(
        [e.text for e in picks], sample["outputs"], [e.label for e in picks], strict=True
    ):
        print(f"  {text[:60]!r:64s} -> {out['label']} ({out['probability']:.2f}); true: {truth}")
    token = resolve_admin_token(admin) or ""
    req = urllib.request.Request(url + "/admin/disagreements", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        dis = json.loads(resp.read())
    print(f"\nshadow comparison: {dis['total']} disagreements recorded between served and shadow answers")
    for s in dis["samples"][-3:]:
        print(
            f"  {s['text'][:50]!r}: {s['served_variant']} said {s['served_label']}, "
            f"{s['shadow_variant']} said {s['shadow_label']} (TV {s['tv_distance']:.2f})"
        )


def live_rollout(url: str, metrics_port: int, workdir: Path, rate: float = 40.0) -> None:
    """The rollout controller at work: a degraded canary rolled back, a healthy one promoted, live.

    Metrics come from a real Prometheus when the machine has one (``scripts/bootstrap.sh``
    installs it), else from the gateway's own metrics endpoint: the same signals either way.
    """
    from serving.cli.controller import fetch_text, print_audit, start_scraping
    from serving.controller.candidate import Phase
    from serving.controller.service import RayGateway
    from serving.controller.sources import EmbeddedSource, MetricsSource, PrometheusSource
    from serving.deployer import apply_config
    from serving.ops import local_prometheus
    from serving.tools.drill import ControllerThread, SteadyLoad, free_port, running_revision, watch
    from serving.tools.selection import promotion_candidate, read_baseline, running_canary, swap_changes
    from variants.dataset import load_dataset

    cfg = RayGateway().current()
    canary = running_canary(cfg)
    if canary is None:
        print("\nrollout drill skipped: the config has no canary with traffic")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "controller.db"
    state.unlink(missing_ok=True)
    for extra in ("-wal", "-shm"):
        Path(f"{state}{extra}").unlink(missing_ok=True)
    stop = None
    prometheus = None
    controller_port = free_port()
    started = time.time()
    if local_prometheus.available():
        # Both the gateway and the controller, as in production: the report's rollback and
        # promotion marks are the controller's own counters.
        targets = [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{controller_port}"]
        try:
            prometheus = local_prometheus.LocalPrometheus(
                workdir / "prometheus", 9090, targets, scrape_s=SCRAPE_S
            )
        except RuntimeError as err:  # e.g. port 9090 taken by a Prometheus of the user's
            print(f"\n(no local Prometheus for the drill: {str(err).splitlines()[0]})")
    source: MetricsSource
    if prometheus is not None:
        source, where = PrometheusSource(prometheus.url), f"Prometheus at {prometheus.url}"
    else:
        import threading

        embedded = EmbeddedSource(lambda: fetch_text(f"http://127.0.0.1:{metrics_port}/metrics"))
        stop = threading.Event()
        start_scraping(embedded, stop, 1.0)
        source = embedded
        where = "the gateway's own metrics (no Prometheus on this machine)"
    # The drill prints what the controller does; its own per-interval log would repeat it.
    logging.getLogger("slimgate.controller").setLevel(logging.WARNING)
    policy = cfg.rollout
    # At a first step a candidate sees only a few requests a second; a 90 s window gives its p99
    # enough samples that one slow request (a cold replica's first call) is not its p99.
    window = max(policy.window_s, 90.0)
    print(
        f"\n== rollout drill: the controller judges every candidate each {policy.interval_s:g} s on the "
        f"last {window:g} s of metrics from {where};\n   steady load of {rate:g} requests/s; "
        f"state and audit log in {state}"
    )

    def show(state_, seconds: float) -> None:
        where = f"{state_.phase.value} at {state_.weight}%"
        print(f"  +{seconds:5.1f} s  {state_.variant}: {where}  ({state_.last_reason})")

    # A random sample of the whole test split: its first texts are grouped by label, which would be
    # drifted traffic for every variant.
    texts = random.Random(0).sample(load_dataset().test.texts, 2000)
    try:
        with (
            SteadyLoad(url, texts, rate=rate, threads=8) as load,
            ControllerThread(source, state, api_port=controller_port) as ctl,
        ):
            time.sleep(policy.interval_s * 2)  # the controller starts tracking the candidates
            print(f"\n1. {canary} (canary at {cfg.routing.weights[canary]}%) slows down: 400 ms injected")
            t0 = time.monotonic()
            slow = cfg.with_changes(
                {f"variants.{canary}.faults": {"delay_ms": 400.0}, "rollout.window_s": window}
            )
            apply_config(slow, actor="demo", state=state, echo=lambda m: print("   " + m))
            rev = running_revision(canary)
            done, took = watch(
                ctl.ctl, canary, lambda s: s.phase is Phase.ROLLED_BACK, 180, show, since=t0, revision=rev
            )
            if done is None:
                print(f"   not rolled back within {took:.0f} s (see the controller log above)")
                return
            print(
                f"   rolled back {took:.1f} s after the fault was applied; client errors meanwhile: "
                f"{load.errors(t0)} of {len(load.window(t0))} requests"
            )
            registry = Registry(cfg.registry)
            found, why = promotion_candidate(
                cfg, registry.latest(), registry.lookup, read_baseline(registry.root)
            )
            if found is None:
                print(f"\n2. skipped: no candidate to promote: {why}")
                return
            name, ref = found.name, found.ref
            running = RayGateway().current()
            first = policy.steps[0]
            # The rolled-back canary (and any cascade staged on it) makes room for the new candidate.
            fresh = running.with_changes(swap_changes(running, canary, name, ref, first), "demo")
            print(f"\n2. a new candidate, {ref}, starts at {first}% and earns each step\n   ({why})")
            t1 = time.monotonic()
            apply_config(fresh, actor="demo", state=state, echo=lambda m: print("   " + m))
            done, took = watch(
                ctl.ctl, name, lambda s: s.phase in (Phase.PROMOTED, Phase.ROLLED_BACK), 300, show, since=t1
            )
            time.sleep(2 * SCRAPE_S)  # Prometheus scrapes the controller's last counters before it stops
            if done is not None and done.phase is Phase.PROMOTED:
                print(
                    f"   promoted to stable {took:.1f} s after it was applied; client errors meanwhile: "
                    f"{load.errors(t1)} of {len(load.window(t1))} requests"
                )
            else:
                print(f"   not promoted within {took:.0f} s")
        print(f"\naudit log (`slimgate audit --state {state}`):")
        print_audit(state, limit=30)
        if prometheus is not None:
            _write_report(prometheus.url, workdir / "slimgate-report.png", started)
    finally:
        if stop is not None:
            stop.set()
        if prometheus is not None:
            prometheus.stop()


def _write_report(prometheus_url: str, out: Path, since: float) -> None:
    """The SRE's picture of the drill: ``slimgate report`` over the drill's own Prometheus data."""
    from serving.tools.report import ReportError, render

    minutes = math.ceil((time.time() - since) / 30 + 1) / 2  # the drill and half a minute, in half minutes
    try:
        summary = render(prometheus_url, out, minutes=minutes, step_s=2.0)
    except ReportError as err:
        print(f"\n(no report: {err})")
        return
    marks = ", ".join(f"{k.lower()}: {v}" for k, v in summary["marks"].items())
    print(f"\nreport of the drill (weights, latency, agreement, brownouts; {marks}): {out.resolve()}")
