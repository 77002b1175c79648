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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist
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
]
# What a candidate that serves traffic must show before it may advance (see decide.step).
SERVING_SIGNALS = frozenset({"latency_p99_s", "error_rate"})
# Signals that are shares of something; an absolute bound outside [0, 1] on them is a typo
# (5 meant as 5%), which would silently turn the rule into one that always passes.
_FRACTIONS = frozenset({"error_rate", "fallback_rate", "shadow_agreement", "live_accuracy"})


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Measurement:
    """A signal over one analysis interval. ``value`` None = the source had no series for it."""

    value: float | None
    samples: int


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
        "live_accuracy): fail only when the value is beyond the bound with this confidence (Wilson "
        "score interval); a value on the wrong side but within sampling noise is no data.",
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
        if self.confidence is not None and (self.relative_to_stable or self.signal not in _FRACTIONS):
            raise rule(("confidence", "applies only to an absolute bound on a share (a proportion)"))
        return self

    @property
    def name(self) -> str:
        """A readable, unique-per-meaning key, e.g. ``latency_p99_s<=1.5x_stable``, ``error_rate<=0.05``."""
        op, bound = ("<=", self.max) if self.max is not None else (">=", self.min)
        suffix = "x_stable" if self.relative_to_stable else ""
        if self.slack is not None:
            suffix += f"+{self.slack:g}"
        return f"{self.signal}{op}{bound:g}{suffix}"


def _enough(m: Measurement | None, rule: Rule) -> bool:
    # NaN is what a Prometheus ratio returns for 0/0 (no requests): that is no data, not a value.
    # +Inf stays data: histogram_quantile returns it when every sample is above the top bucket.
    return m is not None and m.value is not None and not math.isnan(m.value) and m.samples >= rule.min_samples


def evaluate(rule: Rule, candidate: Measurement, stable: Measurement | None = None) -> Outcome:
    """PASS or FAIL against the rule's bound, or NO_DATA when either needed measurement is too thin.

    A relative rule needs the stable variant's measurement with enough samples too; without it
    the bound itself is unknown, which is no data, not a failure.
    """
    if not _enough(candidate, rule):
        return Outcome.NO_DATA
    bound = rule.max if rule.max is not None else rule.min
    assert bound is not None and candidate.value is not None
    if rule.relative_to_stable:
        if not _enough(stable, rule):
            return Outcome.NO_DATA
        assert stable is not None and stable.value is not None
        bound = stable.value * bound
        if rule.slack is not None:
            bound = (
                max(bound, stable.value + rule.slack)
                if rule.max is not None
                else min(bound, stable.value - rule.slack)
            )
    ok = candidate.value <= bound if rule.max is not None else candidate.value >= bound
    if ok or rule.confidence is None:
        return Outcome.PASS if ok else Outcome.FAIL
    low, high = wilson_interval(candidate.value, candidate.samples, rule.confidence)
    beyond = low > bound if rule.max is not None else high < bound
    return Outcome.FAIL if beyond else Outcome.NO_DATA


def wilson_interval(share: float, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval of a binomial share; each side holds with ``confidence``."""
    z = NormalDist().inv_cdf(confidence)
    p = min(1.0, max(0.0, share))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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


def default_rules(lineage_agreement: float | None, margin: float = 0.02) -> list[Rule]:
    """The rules a candidate is judged by unless configured otherwise.

    ``lineage_agreement`` is the candidate's offline top-1 agreement with the teacher it was
    distilled or compressed from (its registry manifest records it). Live shadow agreement with the
    stable variant is expected to be about that high, so the bar is that number less ``margin``;
    without it, 0.9.
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
        # A p99 from a few samples is just the slowest one; 50 makes it at least a tail. Within
        # 50 ms of stable's p99 is scheduling noise, not a slower model.
        Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True, slack=0.05, min_samples=50),
        Rule(signal="error_rate", max=0.05, confidence=sure),
        Rule(signal="fallback_rate", max=0.05, confidence=sure),
        # Drift is judged against the stable variant's own drift on the same traffic: live traffic
        # rarely matches the test split (every variant's PSI moves with it), a model that answers
        # differently does not. PSI over k labels from n samples of an unchanged distribution is
        # about (k - 1) / n; with 17 labels, 400 samples keep that noise (0.04) under the slack.
        Rule(signal="drift_psi", max=1.5, relative_to_stable=True, slack=0.1, min_samples=400),
        Rule(signal="shadow_agreement", min=agreement, confidence=sure),
    ]
