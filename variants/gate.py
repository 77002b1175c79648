"""The accuracy gate's decision: does a variant keep ``min_retention`` of the teacher's accuracy?

A point estimate of retention on a few thousand texts moves by most of a point between two
builds, two seeds or two CPUs, so a variant that sits near the bar would pass or fail on noise.
The gate therefore decides on a paired test against the teacher on the *same* texts, as the
cascade's threshold choice does (:func:`variants.cascade.select`):

- Per text, ``d = right_variant - bar * right_teacher``. Its mean is ``acc_v - bar * acc_t``,
  which is >= 0 exactly when retention >= bar, and its standard error comes from the paired
  texts (mostly the texts where one model is right and the other wrong, as in McNemar's test).
- ``above`` when the one-sided lower bound of that mean clears 0, ``below`` when the upper bound
  is under it, ``inconclusive`` otherwise. The retention interval (Fieller's, for a ratio of two
  paired means) is the set of bars the test would not separate from the variant.
- Every look at the data spends part of the error budget: with two looks (a test subset, then
  the full split for what the subset left undecided) each uses ``(1 - confidence) / 2``, so the
  promise holds over both (Bonferroni).

What the gate promises, for ``confidence`` c: a variant whose true retention is below the bar
passes with probability at most ``1 - c``; one whose true retention is above the bar by at least
its recorded ``resolution`` (``2 z`` standard errors) is rejected with at most ``1 - c``. In between,
after the last look, the benefit of the doubt goes to the teacher: inconclusive is rejected.
Pure numpy; :mod:`variants.assessment` runs the looks and records the evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

Verdict = Literal["above", "below", "inconclusive"]


@dataclass(frozen=True)
class RetentionEvidence:
    """What ``n`` paired texts say about a variant's retention against one bar."""

    n: int
    retention: float
    low: float  # the interval's ends (may be -inf / inf when the texts are too few to bound it)
    high: float
    bar: float
    z: float
    verdict: Verdict
    resolution: float  # retention above the bar at which rejection has probability <= the error rate

    def describe(self) -> str:
        return (
            f"retention {self.retention:.4f}, interval [{_fmt(self.low)}, {_fmt(self.high)}] "
            f"on {self.n} paired test texts, {self.verdict} {self.bar:g}"
        )


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def z_per_look(confidence: float, looks: int) -> float:
    """The one-sided normal quantile each of ``looks`` looks uses, so that all of them together
    err with probability at most ``1 - confidence``."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / looks)


def retention_evidence(
    variant_right: np.ndarray, teacher_right: np.ndarray, bar: float, z: float
) -> RetentionEvidence:
    """The paired test of ``retention >= bar`` (see the module docstring)."""
    v = np.asarray(variant_right, dtype=np.float64)
    t = np.asarray(teacher_right, dtype=np.float64)
    if v.shape != t.shape or v.ndim != 1:
        raise ValueError(f"paired answers must be two vectors of one length, got {v.shape} and {t.shape}")
    n = len(v)
    if n < 2:
        raise ValueError(f"the gate needs at least 2 paired test texts, got {n}")
    a, b = float(v.mean()), float(t.mean())
    if b == 0:  # retention is undefined: nothing to decide on, whatever the texts
        verdict: Verdict = "above" if bar <= 0 else "inconclusive"
        return RetentionEvidence(n, math.nan, -math.inf, math.inf, bar, z, verdict, math.inf)
    d = v - bar * t
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    if bar <= 0 or mean - z * se >= 0:  # no retention is below a bar at 0
        verdict = "above"
    elif mean + z * se < 0:
        verdict = "below"
    else:
        verdict = "inconclusive"
    low, high = _fieller(v, t, z)
    return RetentionEvidence(
        n=n,
        retention=a / b,
        low=low,
        high=high,
        bar=bar,
        z=z,
        verdict=verdict,
        resolution=2 * z * se / b,
    )


def _fieller(v: np.ndarray, t: np.ndarray, z: float) -> tuple[float, float]:
    """Every r with |mean(v - r t)| <= z * se(v - r t): a quadratic in r."""
    n = len(v)
    a, b = v.mean(), t.mean()
    cov = np.cov(v, t, ddof=1)
    var_v, var_t, c = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    k = z * z / n
    qa = b * b - k * var_t
    qb = a * b - k * c  # the quadratic is qa r^2 - 2 qb r + qc
    qc = a * a - k * var_v
    disc = qb * qb - qa * qc
    if qa <= 0 or disc < 0:
        return -math.inf, math.inf  # too few texts to bound the ratio
    root = math.sqrt(disc)
    return float((qb - root) / qa), float((qb + root) / qa)
