"""The controller's record of the SLO guard: every brownout and every recovery, with its evidence.

The guard itself acts in each router replica within a second (:mod:`serving.slo_guard`); the
controller is where decisions are recorded, so each interval it reads the guard's gauges (the
share each variant browns out, what the guard measured) and writes an audit entry whenever a
share starts, moves by at least ``MIN_MOVE``, or comes back to 0. With several router replicas
the largest share is the one recorded: it is what some callers see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from serving.config import GatewayConfig, config_revision
from serving.controller.signals import Selector, exported_name
from serving.controller.store import AuditEntry

MIN_MOVE = 0.1
FRACTION = Selector(exported_name("slimgate_brownout_fraction"))
FIGURES = Selector(exported_name("slimgate_slo_guard_figure"))
Series = list[tuple[dict[str, str], float]]


@dataclass(frozen=True)
class Seen:
    """One variant's brownout as the gauges say now (the largest share over router replicas)."""

    variant: str
    target: str
    fraction: float
    figures: Mapping[str, float] = field(default_factory=dict)


def read(series: Callable[[Selector], Series]) -> dict[str, Seen]:
    """Every variant the guard watches, from a source's ``series`` (SourceError propagates)."""
    best: dict[str, tuple[float, str, str]] = {}
    for labels, value in series(FRACTION):
        key, replica = labels.get("variant", ""), labels.get("replica", "")
        if key and (key not in best or value > best[key][0]):
            best[key] = (value, labels.get("target", ""), replica)
    figures: dict[str, dict[str, float]] = {}
    for labels, value in series(FIGURES):
        key = labels.get("variant", "")
        # The figures of the replica whose share is reported, so that they explain it.
        if key in best and labels.get("replica", "") == best[key][2]:
            figures.setdefault(key, {})[labels.get("figure", "")] = value
    return {k: Seen(k, t, f, figures.get(k, {})) for k, (f, t, _r) in best.items()}


class BrownoutLog:
    """Turns successive readings into audit entries (``actor`` slo-guard, action brownout|recovery)."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def entries(self, seen: Mapping[str, Seen], cfg: GatewayConfig, now: float) -> list[AuditEntry]:
        out = []
        for key, s in sorted(seen.items()):
            before = self.last.get(key, 0.0)
            moved = abs(s.fraction - before)
            if not (moved >= MIN_MOVE or (moved > 0 and (before == 0 or s.fraction == 0))):
                continue
            self.last[key] = s.fraction
            out.append(self._entry(s, before, cfg, now))
        for key in set(self.last) - set(seen):
            self.last.pop(key)  # no longer watched (removed, or the guard turned off)
        return out

    @staticmethod
    def _entry(s: Seen, before: float, cfg: GatewayConfig, now: float) -> AuditEntry:
        slo, f = cfg.slo, s.figures
        action = "brownout" if s.fraction > before else "recovery"
        latency = f.get("latency_s")
        evidence = (
            f"{slo.quantile} {latency:.3f}s vs objective {slo.objective_s}s, "
            f"offered {f.get('offered_rps', 0):.1f}/s, capacity {f.get('capacity_rps', 0):.1f}/s"
            if latency is not None
            else "no figures reported"
        )
        reason = f"{s.variant} -> {s.target}: {before:.0%} -> {s.fraction:.0%} of its traffic ({evidence})"
        signals: dict[str, Any] = {
            "target": s.target,
            "fraction_before": before,
            "fraction_after": s.fraction,
            "objective_s": slo.objective_s,
            "quantile": slo.quantile,
            **{k: v for k, v in sorted(f.items())},
        }
        weights = dict(cfg.routing.weights)
        rev = config_revision(cfg)
        return AuditEntry("slo-guard", action, s.variant, rev, weights, weights, signals, reason, now, rev)
