"""Where each variant browns out to: the lineage's offline figures turned into the SLO guard's targets.

A brownout target must be cheaper (more texts per second in the registry's evaluation, measured
by the same harness for every variant), deployable (it passed its gates), answer with the same
label table, and be at least as accurate as the ``slo.accuracy_floor``. Of those, the cheapest
wins: the point of a brownout is capacity, and the floor already bounds what it may cost. A
config's ``slo.brownout_to`` names a target by hand instead. The plan is computed once per
config (reading manifests is I/O), never per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.config import GatewayConfig


@dataclass(frozen=True)
class Offline:
    """What the registry's evaluation says about one configured variant."""

    accuracy: float | None
    throughput_per_s: float | None
    deployable: bool
    labels: tuple[str, ...]


def read_offline(registry: str | None, ref: str) -> Offline | None:
    """The registered version's evaluation (None when the ref does not resolve); blocking I/O."""
    from variants import Registry

    m = Registry(registry).lookup(ref)
    if m is None:  # a variant without lineage simply has no brownout plan
        return None
    metrics = m.metrics or {}
    accuracy, throughput = metrics.get("accuracy"), metrics.get("throughput_per_s")
    return Offline(
        float(accuracy) if accuracy is not None else None,
        float(throughput) if throughput is not None else None,
        bool(m.deployable),
        tuple(m.labels),
    )


def offline_figures(cfg: GatewayConfig) -> dict[str, Offline]:
    """Every configured variant's offline figures, by key (those whose ref resolves)."""
    registry = str(cfg.registry) if cfg.registry else None
    out = {}
    for key, spec in sorted(cfg.variants.items()):
        found = read_offline(registry, spec.ref)
        if found is not None:
            out[key] = found
    return out


def brownout_targets(cfg: GatewayConfig, offline: Mapping[str, Offline]) -> dict[str, str]:
    """Variant key -> the key its traffic browns out to, for every variant that has one.

    Empty when the guard is off. Only variants that can serve traffic have a plan: a variant's
    stages and shadows are reached through others.
    """
    slo = cfg.slo
    if slo.objective_s is None:
        return {}
    out: dict[str, str] = {}
    for key in sorted(cfg.variants):
        if key in slo.brownout_to:
            out[key] = slo.brownout_to[key]
            continue
        own = offline.get(key)
        if own is None or own.throughput_per_s is None:
            continue
        best: tuple[float, str] | None = None
        for other, fig in sorted(offline.items()):
            if other == key or not fig.deployable or fig.labels != own.labels:
                continue
            if fig.throughput_per_s is None or fig.throughput_per_s <= own.throughput_per_s:
                continue
            if slo.accuracy_floor is not None and (fig.accuracy is None or fig.accuracy < slo.accuracy_floor):
                continue
            if best is None or fig.throughput_per_s > best[0]:
                best = (fig.throughput_per_s, other)
        if best is not None:
            out[key] = best[1]
    return out


def accuracies(offline: Mapping[str, Offline]) -> dict[str, float]:
    """Test accuracy by key, for the expected accuracy of the mix served."""
    return {k: v.accuracy for k, v in offline.items() if v.accuracy is not None}
