"""Wiring the controller to the real world: the running gateway, the registry, Prometheus, the clock.

:class:`RayGateway` is the controller's port to the gateway: it reads the config the gateway
runs (from Ray's Serve REST API) and sets new routes on it (weights, stable, shadows), nothing
else. :func:`lineage_rules` and :func:`lineage_reference`
derive each candidate's thresholds and drift reference from its registry evaluation, so the
bar a candidate must clear comes from its own lineage; :func:`lineage_claims` reads from the same
lineage which configured variants a candidate descends from (what the speed gate holds it to).
:func:`run` is the loop behind ``slimgate controller run``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from serving import ray_rest
from serving.config import GatewayConfig, parse_config
from serving.controller.candidate import CandidateState, Phase, Policy
from serving.controller.routes import Routes
from serving.controller.rules import Rule, default_rules
from serving.controller.runner import INTERVAL_OUTCOMES, Controller, Source
from serving.controller.store import AuditEntry, StateStore
from serving.deployer import running_gateway
from serving.metrics import (
    CONTROLLER_INTERVALS,
    CONTROLLER_PHASE,
    CONTROLLER_PROMOTIONS,
    CONTROLLER_ROLLBACKS,
    CONTROLLER_SOURCE_ERRORS,
    CONTROLLER_SOURCE_UP,
    CONTROLLER_WEIGHT,
    SPECS,
    MetricSpec,
)
from serving.translation import serve_config

log = logging.getLogger("slimgate.controller")


class RayGateway:
    def __init__(self, dashboard: str = ray_rest.DEFAULT_DASHBOARD) -> None:
        self.dashboard = dashboard

    def current(self) -> GatewayConfig:
        _, found = running_gateway(self.dashboard)
        if found is None:
            raise ray_rest.ControlError(f"no slimgate gateway is running behind {self.dashboard}")
        return parse_config(found[0], "the running gateway")

    def set_routes(self, routes: Routes) -> None:
        sc = serve_config(routes.applied_to(self.current()))
        ray_rest.deploy(sc, self.dashboard)
        ray_rest.wait_running(sc, self.dashboard)


@lru_cache(maxsize=256)
def _lineage(registry: str | None, ref: str) -> dict:
    """A registered version's evaluation; versions are immutable, so this is cached by ref."""
    from variants import Registry

    m = Registry(registry).lookup(ref)
    if m is None:  # no lineage just means default thresholds
        return {}
    out = dict(m.metrics or {})
    if m.backend == "cascade" and m.calibration is not None:
        out["expected_escalation"] = m.calibration.get("expected_escalation")
        out["calibration_samples"] = m.calibration.get("examples")
    return out


def expected_agreement(candidate: float | None, stable: float | None) -> float | None:
    """How often a candidate should agree with the stable variant, from their lineage.

    Each records its offline agreement with the teacher. Two models can disagree only where at
    least one of them disagrees with the teacher, so they agree on at least
    ``candidate + stable - 1`` of inputs; with only the candidate's known, that is the bar.
    """
    if candidate is None:
        return None
    return candidate if stable is None else max(0.0, candidate + stable - 1.0)


def _lineage_of(cfg: GatewayConfig, key: str) -> dict:
    return _lineage(str(cfg.registry) if cfg.registry else None, cfg.variants[key].ref)


def lineage_rules(cfg: GatewayConfig, key: str) -> list[Rule]:
    """Default rules whose shadow-agreement bar derives from candidate's and stable's teacher agreement."""
    cand = _lineage_of(cfg, key).get("agreement")
    stable = _lineage_of(cfg, cfg.routing.stable).get("agreement")
    lineage = _lineage_of(cfg, key)
    cascade = cfg.variants[key].cascade
    # The calibrated escalation rate belongs to the calibrated threshold: a cascade whose config
    # sets its own threshold has no offline expectation to be held to.
    calibrated = cascade is not None and cascade.threshold is None
    return default_rules(
        expected_agreement(cand, stable),
        expected_escalation=lineage.get("expected_escalation") if calibrated else None,
        calibration_samples=lineage.get("calibration_samples"),
    )


# A registered version's ref (name@version) and its parents' refs; None when it is not registered.
ManifestOf = Callable[[str], tuple[str, tuple[str, ...]] | None]


def descends_from(cfg: GatewayConfig, key: str, manifest_of: ManifestOf) -> list[str]:
    """The configured variants whose registered version is an ancestor of ``key``'s, sorted."""
    own = manifest_of(cfg.variants[key].ref)
    if own is None:
        return []
    seen: set[str] = set()
    todo = list(own[1])
    while todo:
        ref = todo.pop()
        if ref in seen or ref == own[0]:
            continue
        seen.add(ref)
        found = manifest_of(ref)
        todo.extend(found[1] if found else ())
    out = []
    for other, spec in cfg.variants.items():
        found = None if other == key else manifest_of(spec.ref)
        if found is not None and found[0] in seen:
            out.append(other)
    return sorted(out)


def _manifest_of(registry: str | None) -> ManifestOf:
    def of(ref: str) -> tuple[str, tuple[str, ...]] | None:
        from variants import Registry

        m = Registry(registry).lookup(ref)
        if m is None:  # an unregistered ref claims nothing
            return None
        return m.ref, tuple(m.parents)

    return of


def lineage_claims(cfg: GatewayConfig, key: str) -> list[str]:
    """What ``key`` claims to be cheaper than: the configured variants it descends from."""
    return descends_from(cfg, key, _manifest_of(str(cfg.registry) if cfg.registry else None))


def lineage_reference(cfg: GatewayConfig, key: str) -> Mapping[str, float] | None:
    """The predicted-label profile recorded at evaluation time: the drift reference."""
    return _lineage_of(cfg, key).get("label_distribution")


class ControllerMetrics:
    """The controller's own metrics (prometheus_client), recorded through serving.metrics' specs."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self._m: dict[MetricSpec, Any] = {}
        for s in SPECS.values():
            if s.exporter == "controller":
                cls = Counter if s.kind == "counter" else Gauge
                self._m[s] = cls(s.name, s.help, list(s.labels), registry=self.registry)

    def _child(self, spec: MetricSpec, kind: str, **labels: str) -> Any:
        metric = self._m[spec]
        values = spec.label_values(kind, labels)
        return metric.labels(*values) if values else metric

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def observe(self, states: Mapping[str, CandidateState], source_ok: bool) -> None:
        self._child(CONTROLLER_SOURCE_UP, "gauge").set(1 if source_ok else 0)
        if not source_ok:
            self._child(CONTROLLER_SOURCE_ERRORS, "counter").inc()
        for key, st in states.items():
            # Counters start at 0 for every label set a candidate can produce: Prometheus'
            # increase() cannot see a counter's first step from nothing, so without the 0 the
            # first rollback would never show as an annotation.
            for actor in ("controller", "operator"):
                self._child(CONTROLLER_ROLLBACKS, "counter", variant=key, actor=actor)
                self._child(CONTROLLER_PROMOTIONS, "counter", variant=key, actor=actor)
            for outcome in INTERVAL_OUTCOMES:
                self._child(CONTROLLER_INTERVALS, "counter", variant=key, outcome=outcome)
            for ph in Phase:
                phase = self._child(CONTROLLER_PHASE, "gauge", variant=key, phase=ph.value)
                phase.set(1 if st.phase is ph else 0)
            self._child(CONTROLLER_WEIGHT, "gauge", variant=key).set(st.weight)

    def interval(self, key: str, outcome: str) -> None:
        self._child(CONTROLLER_INTERVALS, "counter", variant=key, outcome=outcome).inc()

    def record(self, entry: AuditEntry) -> None:
        actor = "controller" if entry.actor == "controller" else "operator"
        if entry.action in _ROLLBACKS:
            self._child(CONTROLLER_ROLLBACKS, "counter", variant=entry.variant, actor=actor).inc()
        elif entry.action in _PROMOTIONS:
            self._child(CONTROLLER_PROMOTIONS, "counter", variant=entry.variant, actor=actor).inc()


_ROLLBACKS = frozenset({"rollback"})
_PROMOTIONS = frozenset({"advance", "promote"})


def build(
    source: Source | None,
    state_path: Path,
    *,
    window_s: float | None = None,
    policy: Policy | None = None,
    dashboard: str = ray_rest.DEFAULT_DASHBOARD,
    metrics: ControllerMetrics | None = None,
) -> Controller:
    """A controller on the running gateway, judging with lineage-derived rules; policy from its config."""
    gateway = RayGateway(dashboard)
    metrics = metrics or ControllerMetrics()
    return Controller(
        gateway,
        source,  # type: ignore[arg-type]  # operator-only controllers judge nothing
        StateStore(state_path),
        policy,
        rules_for=lineage_rules,
        reference_for=lineage_reference,
        claims_for=lineage_claims,
        window_s=window_s,
        on_record=metrics.record,
        on_interval=metrics.interval,
    )


def run(
    ctl: Controller,
    metrics: ControllerMetrics,
    *,
    interval_s: float | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Tick every interval (the config's ``rollout.interval_s`` unless given) until ``stop`` is set."""
    stop = stop or threading.Event()
    while not stop.is_set():
        started = time.monotonic()
        try:
            states = ctl.tick()
            metrics.observe(states, all(s.consecutive_source_errors == 0 for s in states.values()))
            for key, st in states.items():
                log.info("%s: %s at %d%% (%s)", key, st.phase.value, st.weight, st.last_reason)
        except ray_rest.ControlError as err:
            # The gateway itself is unreachable: nothing to judge, nothing to change; keep trying.
            log.warning("gateway unreachable: %s", err)
        every = interval_s or (ctl.last_config.rollout.interval_s if ctl.last_config else 5.0)
        stop.wait(max(0.0, every - (time.monotonic() - started)))
