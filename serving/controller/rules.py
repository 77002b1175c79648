"""Analysis rules: which signals judge a candidate, and the one function that evaluates a threshold.

This module owns :class:`Rule` (a bound on one signal, absolute or relative to the stable
variant), :class:`Measurement` (a signal's value over one interval and how many samples it rests
on), :func:`evaluate`, the only place a measurement is compared with a bound, and
:func:`default_rules`.

Three outcomes, not two. "No data" is kept apart from "fail": a quiet night, a variant that is
only shadowed, or a metrics query that matched no series must never count against a candidate
(Flagger counts "no values found" as a failure and rolls canaries back when traffic is low), and
must never count for it either. Every rule names its direction explicitly (``max`` or ``min``) so
that one word never means an upper bound in one place and a lower bound in another.

A rule with a ``confidence`` fails on strong evidence and passes only on enough. Its value is
judged by an exact one-sided binomial test, so a large effect is decisive from a handful of
samples (a canary ten times slower than stable completes few requests, and that must not hide
it), while a value on the wrong side of the bound but within sampling noise is no data, and a pass
still needs ``min_samples``. For a share the test is on its count; for a latency quantile it is on
the requests observed above the bound: were the quantile ``q`` within the bound, at most
``1 - q`` of the requests could exceed it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.config.base import StrictFloat, StrictPositiveInt, rule

Signal = Literal[
    "latency_p99_s",
    "error_rate",
    "fallback_rate",
    "shadow_agreement",
    "shadow_distance",
    "drift_psi",
    "live_accuracy",
    "escalation_rate",
]
# What a candidate that serves traffic must show before it may advance (see decide.step).
SERVING_SIGNALS = frozenset({"latency_p99_s", "error_rate"})
# The quantile each quantile signal estimates (its histogram is judged by the count above a bound).
QUANTILES: dict[str, float] = {"latency_p99_s": 0.99}
# Signals that are shares of something; an absolute bound outside [0, 1] on them is a typo
# (5 meant as 5%), which would silently turn the rule into one that always passes.
_FRACTIONS = frozenset(
    {"error_rate", "fallback_rate", "shadow_agreement", "live_accuracy", "escalation_rate"}
)


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Measurement:
    """A signal over one analysis interval. ``value`` None = the source had no series for it.

    ``buckets``, for a quantile signal, are the window's cumulative histogram counts as
    (upper bound, observations at or below it), ending with +Inf: the evidence the binomial test
    counts requests above a bound from.
    """

    value: float | None
    samples: int
    buckets: tuple[tuple[float, float], ...] = ()

    def above(self, bound: float) -> int:
        """Observations certainly above ``bound``: those in buckets whose lower edge is >= it.

        Conservative: the bucket that straddles the bound counts as within it, and so does
        everything when the bound lies beyond the highest finite bucket.
        """
        if not self.buckets:
            return 0
        total = self.buckets[-1][1]
        edge = next((count for le, count in self.buckets if le >= bound and math.isfinite(le)), None)
        return 0 if edge is None else max(0, round(total - edge))


class Rule(BaseModel):
    """A bound on one signal: ``max`` (value must be <= it) or ``min`` (value must be >= it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: Signal = Field(description="The signal this rule judges.")
    max: StrictFloat | None = Field(
        None, description="Upper bound (inclusive); a factor of the stable value when relative_to_stable."
    )
    min: StrictFloat | None = Field(
        None, description="Lower bound (inclusive); a factor of the stable value when relative_to_stable."
    )
    relative_to_stable: bool = Field(
        False,
        description="Bound is a factor of the stable variant's value in the same interval (max 1.5 = at most "
        "1.5x stable's), so a load spike that slows every variant does not fail the candidate.",
    )
    slack: Annotated[StrictFloat, Field(ge=0)] | None = Field(
        None,
        description="For a relative bound: the candidate also passes within this absolute distance of the "
        "stable value (e.g. 0.05 s of latency), so that scheduler noise on fast variants is not a failure.",
    )
    min_samples: Annotated[StrictPositiveInt, Field(le=10_000_000)] = Field(
        20, description="Fewest samples behind a value for it to count; below = no data, never pass or fail."
    )
    confidence: Annotated[StrictFloat, Field(gt=0.5, lt=1.0)] | None = Field(
        None,
        description="For an absolute bound on a share (error_rate, fallback_rate, shadow_agreement, "
        "live_accuracy) or an upper bound on a latency quantile (absolute or relative): fail as soon as "
        "the value is beyond the bound with this confidence (exact one-sided binomial test), even below "
        "min_samples; a value on the wrong side but within sampling noise is no data.",
    )

    @model_validator(mode="after")
    def _one_bound(self) -> Rule:
        if (self.max is None) == (self.min is None):
            raise rule(("max", "set exactly one of max or min"))
        field, bound = ("max", self.max) if self.max is not None else ("min", self.min)
        assert bound is not None
        if not math.isfinite(bound):
            raise rule((field, f"must be a finite number, got {bound}"))
        if self.relative_to_stable and bound <= 0:
            raise rule((field, f"a factor of the stable value must be > 0, got {bound}"))
        if not self.relative_to_stable and self.signal in _FRACTIONS and not 0 <= bound <= 1:
            raise rule((field, f"{self.signal} is a fraction; the bound must be within [0, 1], got {bound}"))
        if self.slack is not None and not self.relative_to_stable:
            raise rule(("slack", "applies only to a bound relative to the stable variant"))
        if self.confidence is not None and not self.testable:
            raise rule(
                (
                    "confidence",
                    "applies only to an absolute bound on a share (a proportion) "
                    "or an upper bound on a latency quantile",
                )
            )
        return self

    @property
    def testable(self) -> bool:
        """Whether a binomial test has a meaning for this rule (see ``confidence``)."""
        if self.signal in QUANTILES:
            return self.max is not None
        return self.signal in _FRACTIONS and not self.relative_to_stable

    @property
    def name(self) -> str:
        """A readable, unique-per-meaning key, e.g. ``latency_p99_s<=1.5x_stable``, ``error_rate<=0.05``."""
        op, bound = ("<=", self.max) if self.max is not None else (">=", self.min)
        suffix = "x_stable" if self.relative_to_stable else ""
        if self.slack is not None:
            suffix += f"+{self.slack:g}"
        return f"{self.signal}{op}{bound:g}{suffix}"


def _has_value(m: Measurement | None) -> bool:
    # NaN is what a Prometheus ratio returns for 0/0 (no requests): that is no data, not a value.
    # +Inf stays data: histogram_quantile returns it when every sample is above the top bucket.
    return m is not None and m.value is not None and not math.isnan(m.value)


def _enough(m: Measurement | None, rule: Rule) -> bool:
    return _has_value(m) and m is not None and m.samples >= rule.min_samples


def bound_of(rule: Rule, stable: Measurement | None = None) -> float | None:
    """The rule's bound in this interval; None when it is relative and stable is too thin to set it."""
    bound = rule.max if rule.max is not None else rule.min
    assert bound is not None
    if not rule.relative_to_stable:
        return bound
    if not _enough(stable, rule):
        return None
    assert stable is not None and stable.value is not None
    bound = stable.value * bound
    if rule.slack is not None:
        within = stable.value + rule.slack if rule.max is not None else stable.value - rule.slack
        bound = max(bound, within) if rule.max is not None else min(bound, within)
    return bound


def evaluate(rule: Rule, candidate: Measurement, stable: Measurement | None = None) -> Outcome:
    """PASS or FAIL against the rule's bound, or NO_DATA when the evidence does not decide.

    A relative rule needs the stable variant's measurement with enough samples too; without it
    the bound itself is unknown, which is no data, not a failure. With a ``confidence``, strong
    evidence fails at any sample count and weak evidence against is no data (module docstring).
    """
    if not _has_value(candidate):
        return Outcome.NO_DATA
    bound = bound_of(rule, stable)
    if bound is None:
        return Outcome.NO_DATA
    # The tolerance keeps evidence exactly at the significance level (one error in one call
    # against a 5% bound at 95%) on the side of no data whatever the float rounding.
    if rule.confidence is not None and p_value(rule, candidate, bound) < (1 - rule.confidence) * (1 - 1e-9):
        return Outcome.FAIL
    if candidate.samples < rule.min_samples:
        return Outcome.NO_DATA
    assert candidate.value is not None
    ok = candidate.value <= bound if rule.max is not None else candidate.value >= bound
    if ok:
        return Outcome.PASS
    return Outcome.NO_DATA if rule.confidence is not None else Outcome.FAIL


def p_value(rule: Rule, candidate: Measurement, bound: float) -> float:
    """How likely evidence at least this far beyond ``bound`` is were the candidate within it.

    For a quantile: the requests above the bound against at most ``1 - q`` of them. For a share:
    its count against the bound's share of the samples.
    """
    n = candidate.samples
    if n <= 0:
        return 1.0
    if rule.signal in QUANTILES:
        return binomial_tail(candidate.above(bound), n, 1 - QUANTILES[rule.signal])
    assert candidate.value is not None
    k = round(min(1.0, max(0.0, candidate.value)) * n)
    if rule.max is not None:
        return binomial_tail(k, n, bound)
    return binomial_tail(n - k, n, 1 - bound)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact where it is below one half; else 1.0.

    Evidence at or below the mean is never significant at any confidence a rule allows (> 0.5),
    so the sum runs only from ``k`` upward, where terms shrink geometrically, and stops once they
    are negligible: cheap even for the hundreds of thousands of samples of a busy window.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1 or k <= n * p:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_c = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    term = math.exp(log_c + k * log_p + (n - k) * log_q)
    total = 0.0
    for j in range(k, n + 1):
        total += term
        if term <= total * 1e-17:
            break
        term *= (n - j) / (j + 1) * p / (1 - p)
    return min(1.0, total)


def evaluate_all(
    rules: list[Rule],
    candidate: Mapping[str, Measurement],
    stable: Mapping[str, Measurement] | None = None,
) -> dict[str, Outcome]:
    """Every rule's outcome keyed by :attr:`Rule.name`; a signal missing from a mapping is no data."""
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"rules listed more than once: {', '.join(dupes)}")
    base = stable or {}
    missing = Measurement(None, 0)
    return {r.name: evaluate(r, candidate.get(r.signal, missing), base.get(r.signal)) for r in rules}


def escalation_slack(expected: float, calibration_samples: int | None) -> float:
    """How far above its calibrated escalation rate a cascade may run before that counts as a shift.

    The calibrated rate is itself an estimate from the validation split: three of its standard
    errors (at least one point), so that at high traffic, where the live rate is known precisely,
    the rule does not alarm on the calibration's own sampling error.
    """
    if not calibration_samples:
        return 0.05
    se = math.sqrt(max(expected * (1 - expected), 1e-6) / calibration_samples)
    return max(0.01, 3 * se)


def default_rules(
    lineage_agreement: float | None,
    margin: float = 0.02,
    expected_escalation: float | None = None,
    calibration_samples: int | None = None,
) -> list[Rule]:
    """The rules a candidate is judged by unless configured otherwise.

    ``lineage_agreement`` is the candidate's offline top-1 agreement with the teacher it was
    distilled or compressed from (its registry manifest records it). Live shadow agreement with the
    stable variant is expected to be about that high, so the bar is that number less ``margin``;
    without it, 0.9. ``expected_escalation``, for a cascade, is the share of texts its threshold
    escalated on the ``calibration_samples`` texts of the validation split: live traffic escalating
    significantly more than that (plus :func:`escalation_slack`) has more low-confidence inputs
    than calibration saw, a distribution shift that needs no labels to be seen.
    """
    if lineage_agreement is not None and not 0 <= lineage_agreement <= 1:
        raise ValueError(f"lineage_agreement must be within [0, 1], got {lineage_agreement}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be within [0, 1), got {margin}")
    agreement = 0.9 if lineage_agreement is None else max(0.0, lineage_agreement - margin)
    # Shares fail only when significantly beyond their bound (95%, one side): a healthy candidate
    # near its bar must not be rolled back by sampling noise, a broken one still fails at once.
    sure = 0.95
    return [
        # A p99 from a few samples is just the slowest one, so passing needs 50. Failing needs
        # only evidence: five of sixty requests over a p99 bound is p < 0.001, twenty of twenty
        # is decisive. 99.9% because slow requests come in bursts (a stall delays every request
        # in flight), which a binomial test that assumes independence undercounts. Within 50 ms
        # of stable's p99 is scheduling noise, not a slower model.
        Rule(
            signal="latency_p99_s",
            max=1.5,
            relative_to_stable=True,
            slack=0.05,
            min_samples=50,
            confidence=0.999,
        ),
        Rule(signal="error_rate", max=0.05, confidence=sure),
        Rule(signal="fallback_rate", max=0.05, confidence=sure),
        # Drift is judged against the stable variant's own drift on the same traffic: live traffic
        # rarely matches the test split (every variant's PSI moves with it), a model that answers
        # differently does not. PSI over k labels from n samples of an unchanged distribution is
        # about (k - 1) / n; with 17 labels, 400 samples keep that noise (0.04) under the slack.
        Rule(signal="drift_psi", max=1.5, relative_to_stable=True, slack=0.1, min_samples=400),
        Rule(signal="shadow_agreement", min=agreement, confidence=sure),
    ] + (
        []
        if expected_escalation is None
        else [
            # 99.9%: a shift is worth a rollback only when it is not noise; 100 texts to pass.
            Rule(
                signal="escalation_rate",
                max=round(
                    min(
                        1.0, expected_escalation + escalation_slack(expected_escalation, calibration_samples)
                    ),
                    6,
                ),
                confidence=0.999,
                min_samples=100,
            )
        ]
    )
