"""The confidence cascade's arithmetic: how sure the first stage is, and where to draw the line.

A cascade answers with its first stage and sends a text to its second stage only when the first
stage's confidence in that text is below a threshold. This module owns the two confidence
measures (:func:`confidence`), the threshold curve of a pair of stages on labelled texts
(:func:`curve`: accuracy, agreement and escalation at every escalation count), how a threshold
is chosen on the validation split to meet a target (:func:`select`), how well a measure tells
the first stage's right answers from its wrong ones (:func:`separation`, an AUROC) and whether
a measured cascade met its target (:func:`target_met`). Pure numpy: the build step
(:mod:`variants.cascade_step`) and the predictor (:mod:`variants.predictor`) call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

Measure = Literal["max_probability", "margin"]
MEASURES: tuple[Measure, ...] = ("max_probability", "margin")


def confidence(probs: np.ndarray, measure: Measure) -> np.ndarray:
    """Per row: the top probability, or the gap between the top two (both within [0, 1])."""
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"confidence needs [n, labels >= 2] probabilities, got shape {probs.shape}")
    if measure == "max_probability":
        return probs.max(axis=1)
    if measure == "margin":
        top2 = np.partition(probs, -2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    raise ValueError(f"unknown confidence measure {measure!r} (known: {', '.join(MEASURES)})")


@dataclass(frozen=True)
class Curve:
    """A pair of stages on n labelled texts, the k least confident escalated, k = 0..n.

    ``thresholds[k]`` escalates exactly those k texts (``conf < threshold``) when confidences are
    distinct; ``accuracy[k]`` and ``agreement[k]`` (with the reference answers, the teacher's)
    are the cascade's at that point.
    """

    measure: Measure
    thresholds: np.ndarray
    accuracy: np.ndarray
    agreement: np.ndarray
    # Texts not escalated at k on which exactly one stage is right: what the paired accuracy
    # difference between the cascade and the second stage rests on (its noise).
    discordant: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.accuracy) - 1

    def escalation(self, k: int) -> float:
        return k / self.n if self.n else 0.0

    def sampled(self, points: int = 101) -> dict[str, list[float]]:
        """The curve at ``points`` evenly spaced escalation rates, for a manifest or a plot."""
        ks = np.unique(np.round(np.linspace(0, self.n, points)).astype(int))
        return {
            "escalation": [round(self.escalation(int(k)), 6) for k in ks],
            "accuracy": [round(float(self.accuracy[k]), 6) for k in ks],
            "agreement": [round(float(self.agreement[k]), 6) for k in ks],
            "threshold": [round(float(self.thresholds[k]), 6) for k in ks],
        }


def curve(
    first_probs: np.ndarray,
    then_pred: np.ndarray,
    y_true: np.ndarray,
    measure: Measure,
    reference_pred: np.ndarray | None = None,
) -> Curve:
    """The cascade of ``first_probs`` and ``then_pred`` at every escalation count (see :class:`Curve`)."""
    n = len(y_true)
    if first_probs.shape[0] != n or then_pred.shape[0] != n:
        raise ValueError(
            f"stages and labels disagree in length: {first_probs.shape[0]}, {then_pred.shape[0]}, {n}"
        )
    ref = then_pred if reference_pred is None else reference_pred
    conf = confidence(first_probs, measure)
    order = np.argsort(conf, kind="stable")
    first_pred = first_probs.argmax(axis=1)
    # Escalating the k least confident swaps their first-stage answers for the second stage's.
    gain = (then_pred == y_true).astype(np.int64) - (first_pred == y_true)
    agree_gain = (then_pred == ref).astype(np.int64) - (first_pred == ref)
    correct = np.concatenate([[0], np.cumsum(gain[order])]) + int((first_pred == y_true).sum())
    swing = np.abs(gain)
    discordant = int(swing.sum()) - np.concatenate([[0], np.cumsum(swing[order])])
    agreeing = np.concatenate([[0], np.cumsum(agree_gain[order])]) + int((first_pred == ref).sum())
    s = conf[order]
    # Midway between the k-th and (k+1)-th least confident; past both ends, just beyond them.
    thresholds = (
        np.concatenate([[0.0], (s[:-1] + s[1:]) / 2, [np.nextafter(1.0, 2.0)]]) if n else np.array([0.0])
    )
    denom = max(1, n)
    return Curve(measure, thresholds, correct / denom, agreeing / denom, discordant)


TargetKind = Literal["accuracy_margin", "min_agreement", "max_escalation"]


@dataclass(frozen=True)
class Choice:
    """The chosen point of a curve, and whether it met the target on the split it was chosen on."""

    measure: Measure
    threshold: float
    escalation: float
    accuracy: float
    agreement: float
    met: bool


def select(c: Curve, kind: TargetKind, value: float, then_accuracy: float, confidence: float = 0.0) -> Choice:
    """The least escalation that meets the target; where none does, the best the curve offers.

    ``accuracy_margin``: accuracy >= ``then_accuracy - value``. ``min_agreement``: agreement with
    the reference >= ``value``. ``max_escalation``: the most accurate point escalating at most
    ``value`` of the texts. Ties in accuracy go to the lower escalation.

    ``confidence`` (0 = the point estimate): the target must hold with that one-sided confidence,
    not just on this sample. The first escalation at which a noisy curve crosses its bar is an
    optimistic pick (the winner's curse: it was picked because the sample happened to be kind
    there), and it shows on the test split. For an accuracy margin the bound is McNemar's: the
    cascade differs from the second stage only on non-escalated texts where exactly one of them is
    right, so its accuracy deficit has a standard error of sqrt(discordant) / n. For agreement it
    is the binomial standard error of the agreement.
    """
    z = NormalDist().inv_cdf(confidence) if confidence > 0 else 0.0
    if kind == "max_escalation":
        cap = int(np.floor(value * c.n + 1e-9))
        k = int(np.argmax(c.accuracy[: cap + 1]))
        met = True
    else:
        n = max(1, c.n)
        if kind == "accuracy_margin":
            series, bar = c.accuracy, then_accuracy - value
            disc = c.discordant if c.discordant is not None else np.zeros_like(series)
            slack = z * np.sqrt(disc) / n
        else:
            series, bar = c.agreement, value
            slack = z * np.sqrt(series * (1 - series) / n)
        ok = np.flatnonzero(series - slack >= bar - 1e-12)
        met = ok.size > 0
        k = int(ok[0]) if met else int(np.argmax(series - slack))
    return Choice(
        c.measure, float(c.thresholds[k]), c.escalation(k), float(c.accuracy[k]), float(c.agreement[k]), met
    )


def better(a: Choice, b: Choice, kind: TargetKind) -> Choice:
    """Of two measures' choices: one that meets the target, then fewer escalations (or, under an
    escalation cap, higher accuracy), then the first given."""
    if a.met != b.met:
        return a if a.met else b
    if kind == "max_escalation":
        return a if a.accuracy >= b.accuracy else b
    return a if a.escalation <= b.escalation else b


def separation(first_probs: np.ndarray, y_true: np.ndarray, measure: Measure) -> float:
    """AUROC of the confidence as a detector of the first stage's right answers (0.5 = no signal)."""
    conf = confidence(first_probs, measure)
    right = first_probs.argmax(axis=1) == y_true
    pos, neg = conf[right], conf[~right]
    if not len(pos) or not len(neg):
        return float("nan")
    # Mann-Whitney U from ranks, ties at their mean rank.
    ranks = _ranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def target_met(
    kind: TargetKind,
    value: float,
    *,
    accuracy: float,
    agreement: float,
    escalation: float,
    then_accuracy: float,
) -> tuple[bool, str]:
    """Whether measured figures meet the target, and a sentence saying so with the numbers."""
    if kind == "accuracy_margin":
        bar = then_accuracy - value
        ok = accuracy >= bar - 1e-12
        return (
            ok,
            f"accuracy {accuracy:.4f} {'>=' if ok else '<'} second stage {then_accuracy:.4f} - {value:g}",
        )
    if kind == "min_agreement":
        ok = agreement >= value - 1e-12
        return ok, f"agreement {agreement:.4f} {'>=' if ok else '<'} {value:g}"
    ok = escalation <= value + 1e-12
    return ok, f"escalation {escalation:.4f} {'<=' if ok else '>'} {value:g}"
