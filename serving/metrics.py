"""Every metric slimgate exports: names, help, labels and buckets, in one place.

Two exporters: the gateway's replicas (``exporter="ray"``) and the rollout controller, a
separate process that serves its own ``/metrics`` with ``prometheus_client``
(``exporter="controller"``, no prefix).

Metrics are recorded with ``ray.util.metrics`` inside the replicas and exported by Ray's
metrics agent on each node (``--metrics-export-port``), which is how a Prometheus server
scrapes every replica of a Ray cluster: one target per node, discovered from Ray's
``prom_metrics_service_discovery.json`` or, on Kubernetes, by a PodMonitor. Ray prefixes
each name with ``ray_``; :data:`PROMETHEUS_NAMES` gives the scraped names that dashboards,
alert rules and the controller use.

Labels are bounded by configuration (variant keys, route names, error kinds): nothing taken
from a request ever becomes a label value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# Seconds. Dense below 50 ms where the int8 students live, sparse up to the request timeout.
LATENCY_BUCKETS_S = [
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]
DISTANCE_BUCKETS = [0.001, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]

# route: how the request reached its variant.
# "starting": the chosen variant's replicas were not up yet, so stable answered.
ROUTES = ("split", "sticky", "pinned", "fallback", "shadow", "starting")
# kind: why a call failed.
ERROR_KINDS = ("timeout", "variant_error", "client_error", "unavailable", "internal")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    exporter: str = "ray"  # ray | controller

    @property
    def prometheus_name(self) -> str:
        base = f"ray_{self.name}" if self.exporter == "ray" else self.name
        return base + "_total" if self.kind == "counter" and not base.endswith("_total") else base


SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in [
        MetricSpec(
            "slimgate_requests",
            "counter",
            "Inputs-bearing requests answered, by serving variant and route.",
            ("variant", "route"),
        ),
        MetricSpec("slimgate_inputs", "counter", "Texts classified, by serving variant.", ("variant",)),
        MetricSpec(
            "slimgate_errors",
            "counter",
            "Failed calls and rejected requests, by variant and kind.",
            ("variant", "kind"),
        ),
        MetricSpec(
            "slimgate_request_latency_seconds",
            "histogram",
            "Router-measured latency of a variant call (including fallback), by variant and route.",
            ("variant", "route"),
            tuple(LATENCY_BUCKETS_S),
        ),
        MetricSpec(
            "slimgate_batch_size",
            "histogram",
            "Texts per backend call inside a variant replica.",
            ("variant",),
            tuple(BATCH_SIZE_BUCKETS),
        ),
        MetricSpec(
            "slimgate_fallbacks",
            "counter",
            "Requests answered by the stable variant after the chosen variant failed.",
            ("variant",),
        ),
        MetricSpec(
            "slimgate_shadow_requests", "counter", "Requests mirrored to a shadow variant.", ("variant",)
        ),
        MetricSpec(
            "slimgate_shadow_dropped",
            "counter",
            "Mirrors dropped because max_in_flight shadow calls were running.",
            ("variant",),
        ),
        MetricSpec(
            "slimgate_shadow_errors", "counter", "Mirrored calls that failed or timed out.", ("variant",)
        ),
        MetricSpec(
            "slimgate_shadow_agreements",
            "counter",
            "Shadow answers whose label matched the served one (per text).",
            ("variant",),
        ),
        MetricSpec(
            "slimgate_shadow_disagreements",
            "counter",
            "Shadow answers whose label differed from the served one (per text).",
            ("variant",),
        ),
        MetricSpec(
            "slimgate_shadow_distance",
            "histogram",
            "Total-variation distance between served and shadow probabilities (per text).",
            ("variant",),
            tuple(DISTANCE_BUCKETS),
        ),
        MetricSpec(
            "slimgate_shadow_latency_delta_seconds",
            "histogram",
            "Shadow latency minus served latency (negative values are counted in the first bucket).",
            ("variant",),
            tuple(LATENCY_BUCKETS_S),
        ),
        MetricSpec(
            "slimgate_predictions",
            "counter",
            "Predicted labels, by serving variant (drift input).",
            ("variant", "label"),
        ),
        MetricSpec(
            "slimgate_feedback", "counter", "Ground-truth labels joined to a served answer.", ("variant",)
        ),
        MetricSpec(
            "slimgate_feedback_correct",
            "counter",
            "Joined ground-truth labels that matched the served answer (live accuracy numerator).",
            ("variant",),
        ),
        MetricSpec(
            "slimgate_weight", "gauge", "Configured traffic weight (percent) of each variant.", ("variant",)
        ),
        MetricSpec(
            "slimgate_config_revision", "gauge", "1 for the config revision the router runs.", ("revision",)
        ),
        # -- the rollout controller ------------------------------------------------------------
        MetricSpec(
            "slimgate_controller_phase",
            "gauge",
            "1 for the phase each candidate is in.",
            ("variant", "phase"),
            exporter="controller",
        ),
        MetricSpec(
            "slimgate_controller_weight",
            "gauge",
            "Weight the controller last set for a candidate.",
            ("variant",),
            exporter="controller",
        ),
        MetricSpec(
            "slimgate_controller_rollbacks",
            "counter",
            "Candidates rolled back, by actor.",
            ("variant", "actor"),
            exporter="controller",
        ),
        MetricSpec(
            "slimgate_controller_promotions",
            "counter",
            "Weight steps and promotions, by actor.",
            ("variant", "actor"),
            exporter="controller",
        ),
        MetricSpec(
            "slimgate_controller_intervals",
            "counter",
            "Analysis intervals by outcome.",
            ("variant", "outcome"),
            exporter="controller",
        ),
        MetricSpec(
            "slimgate_controller_source_errors",
            "counter",
            "Intervals whose metrics source failed or was unreachable.",
            (),
            exporter="controller",
        ),
        MetricSpec(
            "slimgate_controller_source_up",
            "gauge",
            "1 when the last query of the metrics source succeeded, else 0.",
            (),
            exporter="controller",
        ),
    ]
}

PROMETHEUS_NAMES = {name: spec.prometheus_name for name, spec in SPECS.items()}


class GatewayMetrics:
    """The Ray metric objects, created lazily inside the replica that records them."""

    @cached_property
    def _objects(self) -> dict:
        from ray.util import metrics as rm

        out = {}
        for s in SPECS.values():
            if s.exporter != "ray":
                continue
            if s.kind == "counter":
                out[s.name] = rm.Counter(s.name, description=s.help, tag_keys=s.labels)
            elif s.kind == "gauge":
                out[s.name] = rm.Gauge(s.name, description=s.help, tag_keys=s.labels)
            else:
                out[s.name] = rm.Histogram(
                    s.name, description=s.help, boundaries=list(s.buckets), tag_keys=s.labels
                )
        return out

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if value:
            self._objects[name].inc(value, tags=labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._objects[name].observe(value, tags=labels)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._objects[name].set(value, tags=labels)
