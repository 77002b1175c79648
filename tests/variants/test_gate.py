"""The accuracy gate's paired decision: verdicts, intervals, and the error rates it promises."""

from __future__ import annotations

import numpy as np
import pytest

from variants.gate import retention_evidence, z_per_look

Z = z_per_look(0.95, 1)


def paired(n: int, teacher_acc: float, variant_acc: float, both: float, seed: int = 0):
    """Per-text right/wrong of a teacher and a variant: ``both`` of the texts right for both, the
    rest split so that each model has its accuracy (a population the test samples from)."""
    rng = np.random.default_rng(seed)
    only_t, only_v = teacher_acc - both, variant_acc - both
    neither = 1 - both - only_t - only_v
    assert min(only_t, only_v, neither) >= 0
    kind = rng.choice(4, size=n, p=[both, only_t, only_v, neither])
    return np.isin(kind, (0, 2)), np.isin(kind, (0, 1))


def test_a_clear_margin_passes_and_a_clear_shortfall_is_rejected():
    v, t = paired(3000, 0.88, 0.87, 0.84)
    above = retention_evidence(v, t, 0.97, Z)
    assert above.verdict == "above"
    assert above.low <= above.retention <= above.high
    assert above.low >= 0.97  # the bar lies below the whole interval

    v, t = paired(3000, 0.88, 0.80, 0.78)
    below = retention_evidence(v, t, 0.97, Z)
    assert below.verdict == "below"
    assert below.high < 0.97


def test_near_the_bar_few_texts_are_inconclusive_and_many_decide():
    # True retention 0.86 / 0.88 = 0.977: 0.7 point above the bar.
    v, t = paired(300, 0.88, 0.86, 0.82, seed=3)
    assert retention_evidence(v, t, 0.97, Z).verdict == "inconclusive"
    v, t = paired(60_000, 0.88, 0.86, 0.82, seed=3)
    many = retention_evidence(v, t, 0.97, Z)
    assert many.verdict == "above"
    # More texts, a narrower interval and a finer resolution.
    assert many.high - many.low < 0.02
    assert many.resolution < 0.01


def test_the_verdict_and_the_interval_agree():
    for seed in range(20):
        v, t = paired(2000, 0.85, 0.83, 0.78, seed=seed)
        for bar in (0.95, 0.97, 0.98, 0.99):
            ev = retention_evidence(v, t, bar, Z)
            if ev.verdict == "above":
                assert ev.low >= bar - 1e-9
            elif ev.verdict == "below":
                assert ev.high < bar + 1e-9
            else:
                assert ev.low - 1e-9 <= bar <= ev.high + 1e-9


def test_a_variant_below_the_bar_passes_at_most_as_often_as_the_confidence_allows():
    # True retention 0.8525 / 0.88 = 0.969: just under 0.97, the hardest case for the promise.
    passes = sum(
        retention_evidence(*paired(3000, 0.88, 0.8525, 0.82, seed=s), 0.97, Z).verdict == "above"
        for s in range(400)
    )
    assert passes / 400 <= 0.05 + 0.03  # 5% promised; 0.03 is three binomial standard errors of 400 draws


def test_a_variant_above_the_bar_by_its_resolution_is_rarely_rejected():
    rejected, resolutions = 0, []
    for s in range(400):
        v, t = paired(3000, 0.88, 0.875, 0.845, seed=s)
        ev = retention_evidence(v, t, 0.97, Z)
        resolutions.append(ev.resolution)
        rejected += ev.verdict != "above"
    # True retention 0.9943 is 2.4 points above the bar, more than the recorded resolution.
    assert max(resolutions) < 0.0243
    assert rejected / 400 <= 0.05 + 0.03


def test_two_looks_ask_more_of_each():
    assert z_per_look(0.95, 2) > z_per_look(0.95, 1)
    assert z_per_look(0.95, 1) == pytest.approx(1.6449, abs=1e-4)


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="one length"):
        retention_evidence(np.ones(3, bool), np.ones(4, bool), 0.97, Z)
    with pytest.raises(ValueError, match="at least 2"):
        retention_evidence(np.ones(1, bool), np.ones(1, bool), 0.97, Z)
    with pytest.raises(ValueError, match="confidence"):
        z_per_look(0.4, 1)


def test_a_teacher_that_is_never_right_decides_nothing_and_a_zero_bar_passes_everything():
    never = retention_evidence(np.ones(5, bool), np.zeros(5, bool), 0.97, Z)
    assert never.verdict == "inconclusive" and np.isnan(never.retention)
    v, t = paired(64, 0.1, 0.02, 0.0)
    assert retention_evidence(v, t, 0.0, Z).verdict == "above"
    assert retention_evidence(np.ones(5, bool), np.zeros(5, bool), 0.0, Z).verdict == "above"
    with pytest.raises(ValueError, match="confidence"):
        z_per_look(1.0, 1)
