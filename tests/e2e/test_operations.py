"""The operations surface end to end: `slimgate controller run` on the real gateway, scraped by a real
Prometheus, every Grafana dashboard query answered, the admin API and the audit log.

One drill produces every series the dashboard charts: a canary that fails half its calls (errors,
fallbacks, then a rollback by the controller), a second shadow that is slow, wrong and failing
(shadow requests, drops, errors, disagreements, latency deltas), client mistakes, ground-truth
feedback, and an operator promotion of the healthy shadow through the controller's admin API
(the failing one could lose a race with the controller's own rollback).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from support import poll_until, stop_process
from support.e2e import CONTROLLER_PORT, TEXT_POOL, TOKEN

from serving.controller.service import RayGateway
from serving.controller.sources import PrometheusSource
from serving.ops.assets import dashboard_queries
from serving.tools.report import render

AUTH = {"authorization": f"Bearer {TOKEN}"}


CASCADE_ON = threading.Event()


def _traffic(gateway, stop: threading.Event, served: list) -> None:
    i = 0
    while not stop.is_set():
        # Once the rollout's race is over, every fourth request goes to the cascade (pinned: it
        # carries no weight), so that its series exist too.
        pin = {"x-slimgate-variant": "cascade"} if CASCADE_ON.is_set() and i % 4 == 3 else {}
        r = gateway.predict([TEXT_POOL[i % len(TEXT_POOL)]], headers={"x-user-id": f"ops-{i}", **pin})
        if r.status_code == 200 and len(served) < 50:
            body = r.json()
            served.append((body["request_id"], body["outputs"][0]["label"]))
        i += 1


def _start_controller(prometheus: str, state, log_path):
    env = {**os.environ, "SLIMGATE_ADMIN_TOKEN": TOKEN}
    log = open(log_path, "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "controller",
            "run",
            "--prometheus",
            prometheus,
            "--state",
            str(state),
            "--metrics-port",
            str(CONTROLLER_PORT),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def test_drill_feeds_every_dashboard_query_and_the_audit_log(gateway, prometheus, tmp_path):
    drill = {
        "variants.canary.faults": {"error_rate": 0.5},
        "variants.shadow.timeout_s": 10.0,  # so that it may serve once promoted
        # Two shadows: the healthy one the operator promotes, and fp32, slow, wrong and failing (the
        # controller may roll it back whenever it likes: nothing waits on it).
        "shadow.variants": ["shadow", "fp32"],
        "shadow.fraction": 1.0,
        "shadow.max_in_flight": 1,
        "rollout": {"interval_s": 2.0, "window_s": 10.0, "failures_to_rollback": 2},
        # The SLO guard on, with an objective this load never breaks, so that its series exist.
        "slo": {"objective_s": 5.0},
        # A cascade (threshold 1: every text goes on) over a second stage of its own, in the router,
        # so that the drill's timing of the other candidates is left as it was.
        "variants.fp32": {
            "ref": "teacher-onnx",
            "progressive": False,
            "faults": {"delay_ms": 150.0, "error_rate": 0.2, "flip_rate": 0.5},
        },
        "variants.cascade": {
            "cascade": {"first": "stable", "then": "fp32", "threshold": 1.0, "budget_ms": 5000.0},
            "progressive": False,
        },
    }
    # Client mistakes and a burst that the router sheds itself, so that their series exist too.
    gateway.apply(**drill, admission={"max_in_flight": 2, "latency_objective_s": None})
    assert gateway.predict([]).status_code == 422
    with ThreadPoolExecutor(12) as pool:
        burst = list(pool.map(lambda i: gateway.predict([TEXT_POOL[0]]).status_code, range(36)))
    assert 503 in burst and 200 in burst
    gateway.apply(**drill)
    state, log_path = tmp_path / "controller.db", tmp_path / "controller.log"
    stop, served = threading.Event(), []
    workers = [threading.Thread(target=_traffic, args=(gateway, stop, served)) for _ in range(3)]
    for w in workers:
        w.start()
    proc, log = _start_controller(prometheus, state, log_path)
    api = httpx.Client(base_url=f"http://127.0.0.1:{CONTROLLER_PORT}", timeout=60)
    try:
        # Ground truth, so that its series exist too.
        poll_until(lambda: len(served) >= 10, timeout_s=60, every_s=1, what="served answers")
        for rid, label in served[:10]:
            fb = gateway.client.post("/v1/feedback", json={"request_id": rid, "label": label})
            assert fb.status_code == 202, fb.text

        def rolled_back():
            try:
                r = api.get("/admin/candidates", headers=AUTH)
            except httpx.HTTPError:
                return None
            phases = (
                {c["variant"]: c["phase"] for c in r.json()["candidates"]} if r.status_code == 200 else {}
            )
            return phases.get("canary") == "rolled_back"

        poll_until(
            rolled_back,
            timeout_s=120,
            every_s=1,
            what="the controller to roll the failing canary back",
            diagnose=lambda: log_path.read_text()[-4000:],
        )
        running = RayGateway().current()
        assert running.routing.weights["canary"] == 0

        # The operator promotes the shadow by hand through the admin API (it still fails sometimes:
        # a person may overrule the analysis, and the audit log says who did).
        r = api.post("/admin/candidates/shadow/promote", headers=AUTH, json={"actor": "e2e"})
        assert r.status_code == 200, r.text
        assert RayGateway().current().routing.stable == "shadow"
        CASCADE_ON.set()

        source = PrometheusSource(prometheus)
        queries = dashboard_queries()
        empty: list[str] = []

        def every_query_answered() -> bool:
            empty[:] = [q for q in queries if not source.query(q)]
            return not empty

        poll_until(
            every_query_answered,
            timeout_s=45,
            every_s=2,
            what="every dashboard query to return series",
            diagnose=lambda: "dashboard queries without series:\n" + "\n".join(empty),
        )

        # The SRE's picture of the same minutes: the rollback and the promotion are marked.
        report: dict = {}

        def both_marked() -> bool:
            report.update(render(prometheus, tmp_path / "drill.png", minutes=5, step_s=2))
            return report["marks"]["Rollbacks"] >= 1 and report["marks"]["Promotions"] >= 1

        poll_until(both_marked, timeout_s=30, every_s=2, what="the report's marks", diagnose=lambda: report)

        audit = subprocess.run(
            [sys.executable, "-m", "serving.cli", "audit", "--state", str(state), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        entries = json.loads(audit.stdout)
        actions = [(e["actor"], e["action"], e["variant"]) for e in entries]
        assert ("controller", "rollback", "canary") in actions
        assert ("api:e2e", "promote", "shadow") in actions
        rollback = next(e for e in entries if e["action"] == "rollback")
        assert (
            rollback["weights_after"]["canary"] == 0 and rollback["signals"] and rollback["config_revision"]
        )
    finally:
        stop.set()
        for w in workers:
            w.join()
        api.close()
        exit_code = stop_process(proc, signal.SIGTERM)
        log.close()
        gateway.apply()
    # The controller ends its loop on SIGTERM and exits 0 (a kill after the grace period is -9).
    assert exit_code == 0


def test_apply_is_audited_with_its_actor(gateway, controller_state):
    from serving.controller.store import StateStore

    gateway.apply(**{"routing.weights": {"stable": 80, "canary": 20}})
    try:
        with StateStore(controller_state) as store:
            last = store.entries()[-1]
        assert last.action == "apply" and last.actor == os.environ.get("USER", "operator")
        assert last.weights_after == {"stable": 80, "canary": 20}
        assert "routing.weights" in last.reason and last.config_revision
    finally:
        gateway.apply()


def test_report_renders_the_last_minutes_from_prometheus(gateway, prometheus, tmp_path):
    for i in range(20):
        gateway.predict([TEXT_POOL[i % len(TEXT_POOL)]])
    out = tmp_path / "report.png"
    runs = []

    def report_has_weights() -> bool:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "serving.cli",
                "report",
                "--prometheus",
                prometheus,
                "--minutes",
                "5",
                "--step",
                "2",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(proc)
        return "Traffic weights: 0 series" not in proc.stdout

    # The gateway's weights reach Prometheus within a report interval or two.
    poll_until(
        report_has_weights,
        timeout_s=30,
        every_s=2,
        what="the report to chart the traffic weights",
        diagnose=lambda: runs[-1].stdout,
    )
    proc = runs[-1]
    assert "Traffic weights: 0 series" not in proc.stdout, proc.stdout
    assert "Latency p50 / p99: 0 series" not in proc.stdout, proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "report",
            "--prometheus",
            "http://127.0.0.1:9",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unreachable" in bad.stderr


def test_every_replicas_warmup_reaches_prometheus_and_the_speed_gate_holds_a_slower_variant(
    gateway, prometheus
):
    """The speed gate's inputs end to end: each replica's self-measurement (the router's variants and
    the shadow's own replica) scraped by a real Prometheus and read back by the controller's source;
    the fp32 teacher, claimed cheaper than the int8 student, is held on what this machine measured."""
    import pytest

    from serving.controller.speed import judge

    source = PrometheusSource(prometheus)
    figures: dict = {}

    def measured() -> bool:
        figures.update({k: source.speed(k) for k in ("stable", "canary", "shadow")})
        return all(figures.values())

    poll_until(
        measured, timeout_s=60, every_s=2, what="every variant's warm-up figures", diagnose=lambda: figures
    )
    own = gateway.admin("/admin/config").json()["variants"]["stable"]["warmup"]
    assert figures["stable"].p50_s == pytest.approx(own["p50_s"])  # what the router measured itself
    assert all(any("cores" in h for h in f.hardware) for f in figures.values())
    hold, evidence = judge("shadow", figures["shadow"], {"stable": figures["stable"]}, 0.1)
    assert hold is not None and "shadow" in hold.reason, evidence
    assert judge("stable", figures["stable"], {"shadow": figures["shadow"]}, 0.1)[0] is None
