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

# Seconds. Dense below 50 ms where the int8 students live, sparse up to the request timeout.
# fmt: off
LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                     0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
# fmt: on
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]
DISTANCE_BUCKETS = [0.001, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]

# route: how the request reached its variant.
# "starting": the chosen variant's replicas were not up yet, so stable answered.
# "brownout": the SLO guard sent it to a cheaper variant than the split chose (serving.slo_guard).
ROUTES = ("split", "sticky", "pinned", "fallback", "shadow", "starting", "brownout")
# kind: why a call failed.
ERROR_KINDS = ("timeout", "variant_error", "client_error", "unavailable", "internal")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    exporter: str = "ray"  # ray (slimgate's, via Ray) | controller | ray-serve (Ray Serve's own)

    @property
    def prometheus_name(self) -> str:
        base = f"ray_{self.name}" if self.exporter in ("ray", "ray-serve") else self.name
        return base + "_total" if self.kind == "counter" and not base.endswith("_total") else base

    def label_values(self, kind: str, labels: dict[str, str]) -> tuple[str, ...]:
        """The values of ``labels`` in this metric's label order; TypeError/ValueError when the kind
        or the label names are not this metric's (so a wrong one fails in the first unit test)."""
        if self.kind != kind:
            raise TypeError(f"{self.name} is a {self.kind}, not a {kind}")
        if len(labels) != len(self.labels) or not all(k in labels for k in self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple(labels[k] for k in self.labels)


REQUESTS = MetricSpec(
    "slimgate_requests",
    "counter",
    "Inputs-bearing requests answered, by serving variant and route.",
    ("variant", "route"),
)
INPUTS = MetricSpec("slimgate_inputs", "counter", "Texts classified, by serving variant.", ("variant",))
ERRORS = MetricSpec(
    "slimgate_errors",
    "counter",
    "Failed calls and rejected requests, by variant and kind.",
    ("variant", "kind"),
)
REQUEST_LATENCY_SECONDS = MetricSpec(
    "slimgate_request_latency_seconds",
    "histogram",
    "Router-measured latency of a variant call (including fallback), by variant and route.",
    ("variant", "route"),
    tuple(LATENCY_BUCKETS_S),
)
BATCH_SIZE = MetricSpec(
    "slimgate_batch_size",
    "histogram",
    "Texts per backend call inside a variant replica.",
    ("variant",),
    tuple(BATCH_SIZE_BUCKETS),
)
FALLBACKS = MetricSpec(
    "slimgate_fallbacks",
    "counter",
    "Requests answered by the stable variant after the chosen variant failed.",
    ("variant",),
)
SHADOW_REQUESTS = MetricSpec(
    "slimgate_shadow_requests", "counter", "Requests mirrored to a shadow variant.", ("variant",)
)
SHADOW_DROPPED = MetricSpec(
    "slimgate_shadow_dropped",
    "counter",
    "Mirrors dropped because max_in_flight shadow calls were running.",
    ("variant",),
)
SHADOW_ERRORS = MetricSpec(
    "slimgate_shadow_errors", "counter", "Mirrored calls that failed or timed out.", ("variant",)
)
SHADOW_AGREEMENTS = MetricSpec(
    "slimgate_shadow_agreements",
    "counter",
    "Shadow answers whose label matched the served one (per text).",
    ("variant",),
)
SHADOW_DISAGREEMENTS = MetricSpec(
    "slimgate_shadow_disagreements",
    "counter",
    "Shadow answers whose label differed from the served one (per text).",
    ("variant",),
)
SHADOW_DISTANCE = MetricSpec(
    "slimgate_shadow_distance",
    "histogram",
    "Total-variation distance between served and shadow probabilities (per text).",
    ("variant",),
    tuple(DISTANCE_BUCKETS),
)
SHADOW_LATENCY_DELTA_SECONDS = MetricSpec(
    "slimgate_shadow_latency_delta_seconds",
    "histogram",
    "Shadow latency minus served latency (negative values are counted in the first bucket).",
    ("variant",),
    tuple(LATENCY_BUCKETS_S),
)
PREDICTIONS = MetricSpec(
    "slimgate_predictions",
    "counter",
    "Predicted labels, by serving variant (drift input).",
    ("variant", "label"),
)
FEEDBACK = MetricSpec(
    "slimgate_feedback", "counter", "Ground-truth labels joined to a served answer.", ("variant",)
)
FEEDBACK_CORRECT = MetricSpec(
    "slimgate_feedback_correct",
    "counter",
    "Joined ground-truth labels that matched the served answer (live accuracy numerator).",
    ("variant",),
)
WEIGHT = MetricSpec(
    "slimgate_weight", "gauge", "Configured traffic weight (percent) of each variant.", ("variant",)
)
CONFIG_REVISION = MetricSpec(
    "slimgate_config_revision", "gauge", "1 for the config revision the router runs.", ("revision",)
)
SHED = MetricSpec(
    "slimgate_shed",
    "counter",
    "Requests refused with 503 by admission control, by reason (limit: the adaptive limit that keeps "
    "admitted requests within the latency objective; max_in_flight: the hard cap).",
    ("reason",),
)
# Ray Serve's own count of HTTP responses by status: in HAProxy mode HAProxy reports it, so it
# includes the requests HAProxy sheds at the edge before any router replica sees them. Recorded by
# Ray, never by slimgate; named here so that dashboards and alerts may use it.
INGRESS_RESPONSES = MetricSpec(
    "serve_num_http_requests",
    "counter",
    "HTTP responses of the ingress by status code (Ray Serve's metric; HAProxy's in HAProxy mode).",
    ("application", "status_code"),
    exporter="ray-serve",
)
IN_FLIGHT = MetricSpec(
    "slimgate_in_flight", "gauge", "Requests a router replica is working on now.", ("replica",)
)
ADMISSION_LIMIT = MetricSpec(
    "slimgate_admission_limit",
    "gauge",
    "Requests a router replica admits at once now (adapted to the latency objective).",
    ("replica",),
)
VARIANT_READY = MetricSpec(
    "slimgate_variant_ready",
    "gauge",
    "1 when the router can send a variant traffic (loaded in the router, or its replicas answer), else 0.",
    ("variant",),
)
# stage: which stage of a cascade answered a text. "degraded": the text was escalated, but the
# second stage missed the latency budget or failed, so the first stage's answer was returned.
CASCADE_STAGES = ("first", "then", "degraded")
CASCADE_TEXTS = MetricSpec(
    "slimgate_cascade_texts",
    "counter",
    "Texts a cascade answered, by the stage whose answer was returned (escalation rate = then + degraded).",
    ("variant", "stage"),
)
CASCADE_STAGE_LATENCY_SECONDS = MetricSpec(
    "slimgate_cascade_stage_latency_seconds",
    "histogram",
    "Latency of each stage call inside a cascade (the second's until it answered or its budget ran out).",
    ("variant", "stage"),
    tuple(LATENCY_BUCKETS_S),
)
CASCADE_EXPECTED_ESCALATION = MetricSpec(
    "slimgate_cascade_expected_escalation",
    "gauge",
    "Share of texts the cascade's threshold escalated on its calibration (validation) split.",
    ("variant",),
)
BROWNOUT_FRACTION = MetricSpec(
    "slimgate_brownout_fraction",
    "gauge",
    "Share (0..1) of a variant's traffic the SLO guard of a router replica sends to its cheaper target.",
    ("variant", "target", "replica"),
)
BROWNOUT_KINDS = ("brownout", "recovery")
BROWNOUT_CHANGES = MetricSpec(
    "slimgate_brownout_changes",
    "counter",
    "Moves of the SLO guard: brownout (more traffic to the cheaper target) or recovery (back).",
    ("variant", "target", "kind"),
)
# figure: what the SLO guard measured of a variant over its last reaction interval.
SLO_GUARD_FIGURES = ("latency_s", "served_rps", "offered_rps", "concurrency", "capacity_rps")
SLO_GUARD_FIGURE = MetricSpec(
    "slimgate_slo_guard_figure",
    "gauge",
    "The SLO guard's last measurement of a variant: latency quantile, answered and offered requests/s, "
    "mean calls in flight, and the capacity it measured while the variant was overloaded.",
    ("variant", "figure", "replica"),
)
EXPECTED_ACCURACY = MetricSpec(
    "slimgate_expected_accuracy",
    "gauge",
    "Test accuracy (the registry's) of the mix of variants a router replica answered with lately.",
    ("replica",),
)
# A replica's self-measurement at warm-up (serving.warmup), read by the controller's speed gate.
WARMUP_P50_SECONDS = MetricSpec(
    "slimgate_warmup_p50_seconds",
    "gauge",
    "Median latency of batch-1 calls a variant replica measured at warm-up on its own hardware.",
    ("variant", "replica"),
)
WARMUP_THROUGHPUT = MetricSpec(
    "slimgate_warmup_texts_per_second",
    "gauge",
    "Texts per second a variant replica measured at warm-up at its batch size, on its own hardware.",
    ("variant", "replica"),
)
REPLICA_HARDWARE = MetricSpec(
    "slimgate_replica_hardware",
    "gauge",
    "1 for the machine (CPU model, cores, int8-relevant flags; GPU) and device each replica runs on.",
    ("variant", "replica", "hardware", "flags", "device"),
)
CONTROLLER_PHASE = MetricSpec(
    "slimgate_controller_phase",
    "gauge",
    "1 for the phase each candidate is in.",
    ("variant", "phase"),
    exporter="controller",
)
CONTROLLER_WEIGHT = MetricSpec(
    "slimgate_controller_weight",
    "gauge",
    "Weight the controller last set for a candidate.",
    ("variant",),
    exporter="controller",
)
CONTROLLER_ROLLBACKS = MetricSpec(
    "slimgate_controller_rollbacks",
    "counter",
    "Candidates rolled back, by actor.",
    ("variant", "actor"),
    exporter="controller",
)
CONTROLLER_PROMOTIONS = MetricSpec(
    "slimgate_controller_promotions",
    "counter",
    "Weight steps and promotions, by actor.",
    ("variant", "actor"),
    exporter="controller",
)
CONTROLLER_INTERVALS = MetricSpec(
    "slimgate_controller_intervals",
    "counter",
    "Analysis intervals by outcome.",
    ("variant", "outcome"),
    exporter="controller",
)
CONTROLLER_SOURCE_ERRORS = MetricSpec(
    "slimgate_controller_source_errors",
    "counter",
    "Intervals whose metrics source failed or was unreachable.",
    (),
    exporter="controller",
)
CONTROLLER_SOURCE_UP = MetricSpec(
    "slimgate_controller_source_up",
    "gauge",
    "1 when the last query of the metrics source succeeded, else 0.",
    (),
    exporter="controller",
)

# Every metric above, by name: the module's constants are the single list.
SPECS: dict[str, MetricSpec] = {v.name: v for v in list(globals().values()) if isinstance(v, MetricSpec)}

PROMETHEUS_NAMES = {name: spec.prometheus_name for name, spec in SPECS.items()}
