"""The rollout controller against the real gateway and a real Prometheus server."""

from __future__ import annotations

import threading
import time

from support import poll_until
from support.e2e import TEXT_POOL

from serving.controller.candidate import Phase, Policy
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


def _with_traffic(gateway):
    stop = threading.Event()
    workers = [threading.Thread(target=_traffic, args=(gateway, stop)) for _ in range(3)]
    for w in workers:
        w.start()

    def done():
        stop.set()
        for w in workers:
            w.join()

    return done


# The tests tick the controller themselves, every TICK_S seconds: its analysis interval here.
TICK_S = 2


def _tick_until(ctl: Controller, reached, timeout_s: float, what: str):
    """Tick ``ctl`` every TICK_S seconds until ``reached(state of the canary)``; return that state."""
    last = [None]

    def tick() -> bool:
        last[0] = ctl.tick().get("canary")
        return last[0] is not None and reached(last[0])

    poll_until(tick, timeout_s, every_s=TICK_S, what=what, diagnose=lambda: f"last state: {last[0]!r}")
    return last[0]


def test_slow_candidate_is_rolled_back_from_prometheus_latency(gateway, prometheus, tmp_path):
    gateway.apply(**{"variants.canary.faults": {"delay_ms": 300.0}})
    done = _with_traffic(gateway)
    store = StateStore(tmp_path / "controller.db")
    ctl = Controller(
        RayGateway(),
        PrometheusSource(prometheus),
        store,
        Policy(failures_to_rollback=2, passes_per_step=1000),
        rules_for=lambda _c, _k: [
            Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True, min_samples=5)
        ],
        window_s=10,
    )
    try:
        start = time.monotonic()
        state = _tick_until(
            ctl, lambda s: s.phase is Phase.ROLLED_BACK, 120, "the slow canary to be rolled back"
        )
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
        done()
        store.close()
        gateway.apply()


def _controller(store, source, policy, rules):
    return Controller(RayGateway(), source, store, policy, rules_for=lambda _c, _k: rules, window_s=10)


def test_healthy_candidate_is_promoted_through_every_step(gateway, prometheus, tmp_path):
    gateway.apply(
        **{"routing.weights": {"stable": 100}, "shadow.variants": ["canary"], "shadow.fraction": 1.0}
    )
    done = _with_traffic(gateway)
    store = StateStore(tmp_path / "controller.db")
    # At weight 0 only the shadow comparison has data; once it carries traffic, errors count too.
    rules = [
        Rule(signal="shadow_agreement", min=0.2, min_samples=3),
        Rule(signal="error_rate", max=0.05, min_samples=3),
    ]
    ctl = _controller(store, PrometheusSource(prometheus), Policy(passes_per_step=1), rules)
    try:
        weights = []

        def promoted(state) -> bool:
            if not weights or weights[-1] != state.weight:
                weights.append(state.weight)
            return state.phase is Phase.PROMOTED

        _tick_until(ctl, promoted, 150, "the healthy canary to be promoted")
        # Starting at 0 (shadow only), one passing interval per step, none skipped.
        assert [w for w in weights if w] == [5, 25, 50, 100], weights
        running = RayGateway().current()
        assert running.routing.stable == "canary" and running.routing.weights["canary"] == 100
        assert [e.action for e in store.entries()] == ["track", "advance", "advance", "advance", "promote"]
    finally:
        done()
        store.close()
        gateway.apply()


def test_prometheus_stopped_mid_analysis_freezes_without_promoting(gateway, tmp_path):
    from support.e2e import METRICS_PORT, PrometheusServer

    server = PrometheusServer(tmp_path / "prom", 19091, [f"127.0.0.1:{METRICS_PORT}"])
    gateway.apply(**{"routing.weights": {"stable": 95, "canary": 5}})
    store = StateStore(tmp_path / "controller.db")
    rules = [Rule(signal="error_rate", max=0.05, min_samples=1)]
    ctl = _controller(
        store, PrometheusSource(server.url), Policy(passes_per_step=1, source_errors_to_act=3), rules
    )
    try:
        ctl.tick()
        server.stop()  # the metrics source goes away mid-analysis
        states = [ctl.tick()["canary"] for _ in range(4)]
        assert states[-1].phase is Phase.FROZEN
        assert all(s.weight <= 25 for s in states)  # never advanced blind
        frozen_weight = states[-1].weight
        assert RayGateway().current().routing.weights["canary"] == frozen_weight
        assert store.entries()[-1].action == "freeze"
    finally:
        server.stop()
        store.close()
        gateway.apply()


def test_disagreeing_candidate_is_rolled_back_on_shadow_agreement(gateway, prometheus, tmp_path):
    gateway.apply(
        **{
            "routing.weights": {"stable": 100},
            "shadow.variants": ["canary"],
            "shadow.fraction": 1.0,
            "variants.canary.faults": {"flip_rate": 0.5},
        }
    )
    done = _with_traffic(gateway)
    store = StateStore(tmp_path / "controller.db")
    rules = [Rule(signal="shadow_agreement", min=0.8, min_samples=5)]
    ctl = _controller(store, PrometheusSource(prometheus), Policy(failures_to_rollback=2), rules)
    try:
        state = _tick_until(
            ctl, lambda s: s.phase is Phase.ROLLED_BACK, 120, "the disagreeing canary to be rolled back"
        )
        assert state is not None and state.phase is Phase.ROLLED_BACK, state
        assert "shadow_agreement" in state.last_reason
        running = RayGateway().current()
        assert "canary" not in running.shadow.variants and running.routing.weights.get("canary", 0) == 0
    finally:
        done()
        store.close()
        gateway.apply()


def test_controller_restarted_mid_rollout_reaches_the_same_outcome(gateway, prometheus, tmp_path):
    gateway.apply(
        **{"routing.weights": {"stable": 100}, "shadow.variants": ["canary"], "shadow.fraction": 1.0}
    )
    done = _with_traffic(gateway)
    rules = [
        Rule(signal="shadow_agreement", min=0.2, min_samples=3),
        Rule(signal="error_rate", max=0.05, min_samples=3),
    ]
    path = tmp_path / "controller.db"
    try:
        first = _controller(StateStore(path), PrometheusSource(prometheus), Policy(passes_per_step=1), rules)
        start = time.monotonic()
        _tick_until(first, lambda s: s.weight >= 25, 120, "the rollout to reach 25%")
        reached = first.store.load("canary").weight
        first.store.close()
        assert reached == 25
        # A new controller process on the same state file carries on from 25%, not from scratch.
        second = _controller(StateStore(path), PrometheusSource(prometheus), Policy(passes_per_step=1), rules)
        ticked = []

        def promoted(state) -> bool:
            if not ticked:  # its first tick
                assert state.weight >= 25, state
            ticked.append(state)
            return state.phase is Phase.PROMOTED

        remaining_s = 240 - (time.monotonic() - start)
        state = _tick_until(second, promoted, remaining_s, "the restarted controller to promote the canary")
        assert state.phase is Phase.PROMOTED
        actions = [e.action for e in second.store.entries()]
        assert actions.count("track") == 1 and actions[-1] == "promote"
        second.store.close()
    finally:
        done()
        gateway.apply()
