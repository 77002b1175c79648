"""The rollout controller against the real gateway and a real Prometheus server."""

from __future__ import annotations

import threading
import time

from e2e_support import TEXT_POOL

from serving.controller.decide import Phase, Policy
from serving.controller.rules import Rule
from serving.controller.runner import Controller
from serving.controller.service import RayGateway
from serving.controller.sources import PrometheusSource
from serving.controller.store import StateStore


def _traffic(gateway, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        gateway.predict([TEXT_POOL[i % len(TEXT_POOL)]], headers={"x-user-id": f"ctl-{i}"})
        i += 1


def test_slow_candidate_is_rolled_back_from_prometheus_latency(gateway, prometheus, tmp_path):
    gateway.apply(**{"variants.canary.faults": {"delay_ms": 300.0}})
    stop = threading.Event()
    workers = [threading.Thread(target=_traffic, args=(gateway, stop)) for _ in range(3)]
    for w in workers:
        w.start()
    store = StateStore(tmp_path / "controller.db")
    ctl = Controller(
        RayGateway(),
        PrometheusSource(prometheus),
        store,
        Policy(failures_to_rollback=2, passes_per_step=1000),
        rules_for=lambda _k: [Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True, min_samples=5)],
        window_s=10,
    )
    try:
        start = time.monotonic()
        state = None
        while time.monotonic() - start < 120:
            state = ctl.tick().get("canary")
            if state is not None and state.phase is Phase.ROLLED_BACK:
                break
            time.sleep(2)
        elapsed = time.monotonic() - start
        assert state is not None and state.phase is Phase.ROLLED_BACK, state
        running = RayGateway().current()
        assert running.routing.weights["canary"] == 0 and "canary" not in running.shadow.variants
        last = store.entries()[-1]
        assert last.action == "rollback" and last.weights_after["canary"] == 0
        assert any("latency_p99_s" in k for k in last.signals)
        print(f"\nrolled back {elapsed:.1f} s after the controller started watching")
        # The same revision never comes back, however the metrics look now.
        gateway.apply(**{"variants.canary.faults": {"delay_ms": 300.0}})
        assert ctl.tick()["canary"].phase is Phase.ROLLED_BACK
        assert RayGateway().current().routing.weights["canary"] == 0
    finally:
        stop.set()
        for w in workers:
            w.join()
        store.close()
        gateway.apply()
