"""What each controller signal means, defined once: as PromQL, and as the math every source shares.

This module owns the definition of every :data:`~serving.controller.rules.Signal` of one variant
over one window (:func:`definition`), its rendering as PromQL that can be pasted into Grafana or
the Prometheus UI (:func:`promql`), and the arithmetic that turns window increases into a
:class:`~serving.controller.rules.Measurement`: counter increases across resets
(:func:`counter_increase`), Prometheus's ``histogram_quantile`` interpolation
(:func:`bucket_quantile`), ratios and the population stability index (:func:`psi`). Both metrics
sources (:mod:`.sources`) evaluate the same definitions, so a Prometheus server and the embedded
scraper reach the same decisions on the same traffic.

Only exported names from :data:`serving.metrics.PROMETHEUS_NAMES` are used (plus the feedback
counters below, while that table may still lack them). The signals, for variant ``X``:

* ``latency_p99_s``: p99 of ``slimgate_request_latency_seconds{variant=X}`` over every route;
  samples = observations. The window's bucket counts come with it, for the rule's binomial test.
* ``error_rate``: failed calls to X (``kind`` ``variant_error`` or ``timeout``) / all calls to X
  (answered + failed). Answers X gave as the fallback of another variant are calls to X too.
  Failures are counted in the denominator so that a variant failing every call reads 1.0, not
  infinity, and not "no data" because its request series was never created.
* ``fallback_rate``: requests routed to X that the stable variant answered after X failed /
  requests routed to X (answered by X on any route but ``fallback``, plus those fallbacks).
* ``shadow_agreement``: per-text agreements / (agreements + disagreements) of X as a shadow.
* ``shadow_distance``: mean total-variation distance of X's shadow answers (sum / count).
* ``drift_psi``: PSI of X's predicted-label distribution in the window against a reference
  distribution the caller passes in; computed client-side from per-label increases.
* ``live_accuracy``: feedback labels that matched X's answer / feedback labels joined to X.
* ``escalation_rate``: texts cascade X sent to its second stage (answered there, or degraded when
  it was late) / all texts X answered.

The warm-up figures of the speed gate (:mod:`.speed`) are gauges, read as they stand, not over a
window: :func:`speed_selectors` selects every replica's series of a variant and :func:`speed_of`
reduces them, in both sources, to the slowest replica's figures.

Every term of a ratio is ``sum(increase(...)) or vector(0)``: Ray creates a series on its first
increment, so "no fallback yet" is a missing series, and without ``or vector(0)`` a missing
numerator would turn a 0% fallback rate into no data. 0/0 is NaN, which both sources report as
no data (``Measurement(None, 0)``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import get_args

from serving.controller.rules import QUANTILES, Measurement, Signal
from serving.controller.speed import Speed
from serving.metrics import PROMETHEUS_NAMES, MetricSpec

SIGNALS: tuple[str, ...] = get_args(Signal)
# Calls that count against a variant. client_error is the caller's fault; unavailable and
# internal are recorded for the gateway as a whole (variant "none"), never for a variant.
VARIANT_ERROR_KINDS = ("variant_error", "timeout")
# Added to every share before PSI so that a label seen on one side only gives a large finite
# value instead of infinity (the usual PSI smoothing); small against any share that matters.
PSI_EPSILON = 1e-4

# The feedback counters the router records when a ground-truth label is joined to a served answer
# (POST /v1/feedback): every joined label, and those matching the served one. Their specs are
# repeated here so that live_accuracy has a definition, with names derived by the same rule as
# every other metric, even where serving.metrics does not list them (yet); its entries win.
FEEDBACK_SPECS = {
    "slimgate_feedback": MetricSpec(
        "slimgate_feedback", "counter", "Ground-truth labels joined to a served answer.", ("variant",)
    ),
    "slimgate_feedback_correct": MetricSpec(
        "slimgate_feedback_correct",
        "counter",
        "Joined ground-truth labels that matched the served answer (live accuracy numerator).",
        ("variant",),
    ),
}


def exported_name(key: str) -> str:
    """The scraped name of metric ``key`` (``slimgate_errors`` -> ``ray_slimgate_errors_total``)."""
    if key in PROMETHEUS_NAMES:
        return PROMETHEUS_NAMES[key]
    return FEEDBACK_SPECS[key].prometheus_name


FEEDBACK_TOTAL = exported_name("slimgate_feedback")
FEEDBACK_CORRECT = exported_name("slimgate_feedback_correct")


# -- definitions --------------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Selector:
    """One exported series name with label matchers (``=``, ``!=`` or ``=~``), as in PromQL."""

    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()

    def render(self) -> str:
        inner = ",".join(f'{label}{op}"{_escape(value)}"' for label, op, value in self.matchers)
        return f"{self.name}{{{inner}}}"

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        """PromQL semantics: a missing label is the empty string; regexes are fully anchored."""
        if name != self.name:
            return False
        for label, op, value in self.matchers:
            got = labels.get(label, "")
            if op == "=":
                ok = got == value
            elif op == "!=":
                ok = got != value
            else:
                ok = re.fullmatch(value, got) is not None
            if not ok:
                return False
        return True


@dataclass(frozen=True)
class Ratio:
    """Summed increases of ``numerator`` / of ``denominator``; samples = the denominator."""

    numerator: tuple[Selector, ...]
    denominator: tuple[Selector, ...]


@dataclass(frozen=True)
class Quantile:
    """``q``-quantile of the summed bucket increases of a histogram; samples = its ``_count``."""

    q: float
    buckets: Selector
    count: Selector


@dataclass(frozen=True)
class Distribution:
    """Increases of ``counter`` summed by label ``by``, compared with a reference by PSI."""

    counter: Selector
    by: str


Definition = Ratio | Quantile | Distribution


def definition(signal: str, variant: str) -> Definition:
    """What ``signal`` of ``variant`` is computed from (see the module docstring)."""
    v = (("variant", "=", variant),)
    errors = Selector(exported_name("slimgate_errors"), (*v, ("kind", "=~", "|".join(VARIANT_ERROR_KINDS))))
    if signal == "latency_p99_s":
        base = exported_name("slimgate_request_latency_seconds")
        return Quantile(QUANTILES[signal], Selector(f"{base}_bucket", v), Selector(f"{base}_count", v))
    if signal == "error_rate":
        return Ratio((errors,), (Selector(exported_name("slimgate_requests"), v), errors))
    if signal == "fallback_rate":
        fallbacks = Selector(exported_name("slimgate_fallbacks"), v)
        routed = Selector(exported_name("slimgate_requests"), (*v, ("route", "!=", "fallback")))
        return Ratio((fallbacks,), (routed, fallbacks))
    if signal == "shadow_agreement":
        agree = Selector(exported_name("slimgate_shadow_agreements"), v)
        disagree = Selector(exported_name("slimgate_shadow_disagreements"), v)
        return Ratio((agree,), (agree, disagree))
    if signal == "shadow_distance":
        base = exported_name("slimgate_shadow_distance")
        return Ratio((Selector(f"{base}_sum", v),), (Selector(f"{base}_count", v),))
    if signal == "drift_psi":
        return Distribution(Selector(exported_name("slimgate_predictions"), v), "label")
    if signal == "escalation_rate":
        texts = exported_name("slimgate_cascade_texts")
        escalated = Selector(texts, (*v, ("stage", "=~", "then|degraded")))
        return Ratio((escalated,), (Selector(texts, v),))
    if signal == "live_accuracy":
        return Ratio((Selector(FEEDBACK_CORRECT, v),), (Selector(FEEDBACK_TOTAL, v),))
    raise ValueError(f"unknown signal {signal!r} (known: {', '.join(SIGNALS)})")


# -- PromQL -------------------------------------------------------------------------------------
def duration(window_s: float) -> str:
    """A PromQL range duration; Prometheus accepts integers only, so fractions go to milliseconds."""
    if not window_s > 0 or not math.isfinite(window_s):
        raise ValueError(f"window must be a positive number of seconds, got {window_s}")
    ms = round(window_s * 1000)
    if ms < 1:
        raise ValueError(f"window must be at least 1 ms, got {window_s}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _sum(selectors: tuple[Selector, ...], w: str) -> str:
    terms = [f"(sum(increase({s.render()}[{w}])) or vector(0))" for s in selectors]
    return terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"


def promql(signal: str, variant: str, window_s: float) -> tuple[str, str]:
    """(value query, sample-count query) of ``signal`` for ``variant`` over the last ``window_s``.

    For ``drift_psi`` the value query is the per-label distribution in the window; the PSI
    against a reference is computed client-side by :func:`psi`.
    """
    d, w = definition(signal, variant), duration(window_s)
    if isinstance(d, Ratio):
        return f"{_sum(d.numerator, w)} / {_sum(d.denominator, w)}", _sum(d.denominator, w)
    if isinstance(d, Quantile):
        value = f"histogram_quantile({d.q:g}, sum by (le) (rate({d.buckets.render()}[{w}])))"
        return value, f"sum(increase({d.count.render()}[{w}]))"
    return (
        f"sum by ({d.by}) (increase({d.counter.render()}[{w}]))",
        f"sum(increase({d.counter.render()}[{w}]))",
    )


# -- the math both sources share -----------------------------------------------------------------
def counter_increase(values: Iterable[float | None]) -> float:
    """Increase of one counter across successive snapshots, the first being the window's start.

    ``None`` = the series was absent from that snapshot. Absent at the start means it was born
    inside the window, so it counted up from 0; absent later is skipped (a scrape that lacked it).
    A drop is a counter reset (a restarted process), after which the counter counted up from 0,
    so the new value is all increase: Prometheus's ``increase()`` without its extrapolation.
    """
    it = iter(values)
    prev = next(it, None) or 0.0
    total = 0.0
    for cur in it:
        if cur is None:
            continue
        total += cur if cur < prev else cur - prev
        prev = cur
    return total


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus's ``histogram_quantile`` on classic buckets: (upper bound ``le``, cumulative count).

    Linear interpolation within the bucket holding rank ``q * observations``, from 0 in the lowest
    bucket; a rank in the +Inf bucket returns the highest finite bound. NaN with no observations,
    without a +Inf bucket, or with fewer than two buckets. Equal bounds are merged and counts made
    monotonic, as Prometheus does.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    bs = sorted(merged.items())
    if not bs or bs[-1][0] != math.inf or len(bs) < 2:
        return math.nan
    # Prometheus first drops float-noise decreases (relative 1e-12), then takes the envelope.
    fixed: list[tuple[float, float]] = []
    top = bs[0][1]
    for le, count in bs:
        if count < top or (count > 0 and abs(count - top) / count <= 1e-12):
            count = top
        top = count
        fixed.append((le, count))
    observations = fixed[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i, (_, c) in enumerate(fixed[:-1]) if c >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, below = (fixed[b - 1][0], fixed[b - 1][1]) if b > 0 else (0.0, 0.0)
    end, count = fixed[b]
    return start + (end - start) * ((rank - below) / (count - below))


def psi(observed: Mapping[str, float], reference: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum((p - q) * ln(p / q)) of ``observed`` against ``reference``.

    Both are counts or shares by label (each is normalised); labels on either side count, and
    every share gets ``epsilon`` added (then renormalised) so that a label missing on one side
    is finite. 0 for identical distributions, larger the further apart.
    """
    labels = sorted(set(observed) | set(reference))
    p, q = _shares(observed, labels, epsilon, "observed"), _shares(reference, labels, epsilon, "reference")
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q, strict=True))


def _shares(dist: Mapping[str, float], labels: list[str], epsilon: float, what: str) -> list[float]:
    if any(not math.isfinite(v) or v < 0 for v in dist.values()):
        raise ValueError(f"{what} distribution has a negative or non-finite count")
    total = sum(dist.values())
    if total <= 0:
        raise ValueError(f"{what} distribution is empty")
    return [(dist.get(label, 0.0) / total + epsilon) / (1 + epsilon * len(labels)) for label in labels]


def samples(count: float) -> int:
    """A sample count as an integer (Prometheus's extrapolated increases are fractional)."""
    return 0 if not math.isfinite(count) or count <= 0 else round(count)


def cumulative(buckets: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Bucket increases by ``le`` as sorted cumulative counts ending at +Inf, monotonic (see
    :func:`bucket_quantile`); empty without a +Inf bucket."""
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    out: list[tuple[float, float]] = []
    top = 0.0
    for le, count in sorted(merged.items()):
        top = max(top, count)
        out.append((le, top))
    return tuple(out) if out and out[-1][0] == math.inf else ()


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> Measurement:
    """The ``q``-quantile of a window's bucket increases, samples = observations, buckets kept."""
    cum = cumulative(buckets)
    value = bucket_quantile(q, cum) if cum else math.nan
    if math.isnan(value):
        return Measurement(None, 0)
    return Measurement(value, samples(cum[-1][1]), cum)


def measurement(value: float | None, count: float) -> Measurement:
    """NaN (Prometheus's 0/0 and empty histogram) is no data: value None."""
    if value is None or math.isnan(value):
        return Measurement(None, samples(count))
    return Measurement(value, samples(count))


def ratio(numerator: float, denominator: float) -> Measurement:
    return measurement(numerator / denominator if denominator > 0 else None, denominator)


def drift(counts: Mapping[str, float], reference: Mapping[str, float] | None) -> Measurement:
    """PSI of the window's label counts against ``reference``; no data without either."""
    counts = {k: v for k, v in counts.items() if math.isfinite(v) and v > 0}
    total = sum(counts.values())
    if reference is None or total <= 0:
        return Measurement(None, 0)
    return Measurement(psi(counts, reference), samples(total))


# -- warm-up figures (gauges) -------------------------------------------------------------------
def speed_selectors(variant: str) -> tuple[Selector, Selector, Selector]:
    """(batch-1 p50, throughput, hardware info) series of every replica of ``variant``."""
    v = (("variant", "=", variant),)
    return (
        Selector(exported_name("slimgate_warmup_p50_seconds"), v),
        Selector(exported_name("slimgate_warmup_texts_per_second"), v),
        Selector(exported_name("slimgate_replica_hardware"), v),
    )


def speed_of(p50s: Iterable[float], throughputs: Iterable[float], hardware: Iterable[str]) -> Speed | None:
    """The slowest replica's figures (highest p50, lowest throughput); None without both."""
    p50 = [x for x in p50s if math.isfinite(x) and x >= 0]
    tput = [x for x in throughputs if math.isfinite(x) and x > 0]
    if not p50 or not tput:
        return None
    return Speed(max(p50), min(tput), len(p50), tuple(sorted({h for h in hardware if h})))
