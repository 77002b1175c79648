"""Analysis rules: one threshold evaluator, three outcomes, and the default rule set."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from serving.controller.rules import Measurement, Outcome, Rule, default_rules, evaluate, evaluate_all

P, F, N = Outcome.PASS, Outcome.FAIL, Outcome.NO_DATA


def m(value: float | None, samples: int = 100) -> Measurement:
    return Measurement(value, samples)


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (Rule(signal="error_rate", max=0.05), 0.01, P),
        (Rule(signal="error_rate", max=0.05), 0.05, P),  # bounds are inclusive
        (Rule(signal="error_rate", max=0.05), 0.051, F),
        (Rule(signal="shadow_agreement", min=0.9), 0.95, P),
        (Rule(signal="shadow_agreement", min=0.9), 0.9, P),
        (Rule(signal="shadow_agreement", min=0.9), 0.89, F),
        (Rule(signal="latency_p99_s", max=0.5), math.inf, F),  # above the top histogram bucket
    ],
)
def test_absolute_bounds(rule: Rule, value: float, expected: Outcome) -> None:
    assert evaluate(rule, m(value)) is expected


@pytest.mark.parametrize(
    "candidate",
    [m(None), m(math.nan), m(0.0, samples=19), m(1.0, samples=0)],
    ids=["no-series", "nan-0/0", "under-sampled-pass", "under-sampled-fail"],
)
def test_no_data_is_neither_pass_nor_fail(candidate: Measurement) -> None:
    for rule in (Rule(signal="error_rate", max=0.05), Rule(signal="live_accuracy", min=0.8)):
        assert evaluate(rule, candidate) is N


def test_min_samples_is_the_threshold_for_data() -> None:
    rule = Rule(signal="error_rate", max=0.05, min_samples=50)
    assert evaluate(rule, m(0.5, samples=49)) is N
    assert evaluate(rule, m(0.5, samples=50)) is F
    assert evaluate(rule, m(0.0, samples=50)) is P


def test_relative_max_is_a_factor_of_stable() -> None:
    rule = Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True)
    assert evaluate(rule, m(0.30), m(0.20)) is P
    assert evaluate(rule, m(0.301), m(0.20)) is F
    # A load spike that slows everything does not fail the candidate.
    assert evaluate(rule, m(2.0), m(1.5)) is P


def test_relative_min_is_a_factor_of_stable() -> None:
    rule = Rule(signal="live_accuracy", min=0.98, relative_to_stable=True)
    assert evaluate(rule, m(0.882), m(0.9)) is P
    assert evaluate(rule, m(0.881), m(0.9)) is F


def test_relative_rule_without_stable_data_is_no_data() -> None:
    rule = Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True, min_samples=10)
    bad = m(100.0)  # would fail against any stable value
    assert evaluate(rule, bad, None) is N
    assert evaluate(rule, bad, m(None)) is N
    assert evaluate(rule, bad, m(0.1, samples=9)) is N
    assert evaluate(rule, bad, m(0.1, samples=10)) is F


@pytest.mark.parametrize(
    ("kwargs", "field", "needle"),
    [
        ({"signal": "error_rate"}, "max", "exactly one of max or min"),
        ({"signal": "error_rate", "max": 0.1, "min": 0.0}, "max", "exactly one of max or min"),
        ({"signal": "error_rate", "max": 5.0}, "max", "within [0, 1]"),
        ({"signal": "shadow_agreement", "min": -0.1}, "min", "within [0, 1]"),
        ({"signal": "latency_p99_s", "max": 0.0, "relative_to_stable": True}, "max", "must be > 0"),
        ({"signal": "latency_p99_s", "max": math.inf}, "max", "finite"),
    ],
)
def test_bad_rules_name_their_field(kwargs: dict, field: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        Rule(**kwargs)
    (err,) = info.value.errors()
    ((path, msg),) = err["ctx"]["problems"]
    assert path == field and needle in msg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"signal": "p50", "max": 1.0},
        {"signal": "error_rate", "max": 0.1, "threshold": 1},
        {"signal": "error_rate", "max": "0.1"},
        {"signal": "error_rate", "max": 0.1, "min_samples": 0},
    ],
    ids=["unknown-signal", "unknown-field", "string-number", "zero-samples"],
)
def test_rule_schema_is_strict(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        Rule(**kwargs)


def test_rule_names_say_direction() -> None:
    assert Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True).name == "latency_p99_s<=1.5x_stable"
    assert Rule(signal="error_rate", max=0.05).name == "error_rate<=0.05"
    assert Rule(signal="shadow_agreement", min=0.9).name == "shadow_agreement>=0.9"


def test_default_rules() -> None:
    rules = {r.signal: r for r in default_rules(None)}
    assert set(rules) == {"latency_p99_s", "error_rate", "fallback_rate", "drift_psi", "shadow_agreement"}
    lat = rules["latency_p99_s"]
    assert (lat.max, lat.relative_to_stable) == (1.5, True)
    assert rules["error_rate"].max == rules["fallback_rate"].max == 0.05
    assert rules["drift_psi"].relative_to_stable and rules["drift_psi"].slack == 0.1
    assert rules["shadow_agreement"].min == 0.9
    agreement = {r.signal: r for r in default_rules(0.96)}["shadow_agreement"]
    assert agreement.min == pytest.approx(0.94)
    assert {r.signal: r for r in default_rules(0.96, margin=0.1)}["shadow_agreement"].min == pytest.approx(
        0.86
    )
    with pytest.raises(ValueError, match="lineage_agreement"):
        default_rules(1.5)


def test_evaluate_all_keys_by_rule_name_and_treats_missing_as_no_data() -> None:
    rules = default_rules(None)
    out = evaluate_all(
        rules,
        {"latency_p99_s": m(0.2), "error_rate": m(0.2), "shadow_agreement": m(0.95)},
        {"latency_p99_s": m(0.2)},
    )
    assert out == {
        "latency_p99_s<=1.5x_stable+0.05": P,
        "error_rate<=0.05": F,
        "fallback_rate<=0.05": N,
        "drift_psi<=1.5x_stable+0.1": N,
        "shadow_agreement>=0.9": P,
    }
    with pytest.raises(ValueError, match="more than once"):
        evaluate_all([rules[1], rules[1]], {})


def test_confidence_fails_a_share_only_when_significantly_beyond_its_bound():
    rule = Rule(signal="shadow_agreement", min=0.91, confidence=0.95)
    # A healthy candidate at 0.90 agreement over 50 samples is within noise of 0.91: inconclusive.
    assert evaluate(rule, Measurement(0.90, 50)) is Outcome.NO_DATA
    # Half the answers flipped is far below the bar, even from 20 samples: fails at once.
    assert evaluate(rule, Measurement(0.45, 20)) is Outcome.FAIL
    assert evaluate(rule, Measurement(0.95, 20)) is Outcome.PASS
    errors = Rule(signal="error_rate", max=0.05, confidence=0.95)
    assert evaluate(errors, Measurement(0.08, 50)) is Outcome.NO_DATA
    assert evaluate(errors, Measurement(0.5, 20)) is Outcome.FAIL


def test_strong_evidence_fails_below_the_minimum_sample_and_weak_evidence_never_passes():
    errors = Rule(signal="error_rate", max=0.05, confidence=0.95, min_samples=20)
    # Every one of 4 calls failing: P = 0.05^4, decisive although 4 < 20.
    assert evaluate(errors, Measurement(1.0, 4)) is Outcome.FAIL
    # One failed call of one is what a healthy 5% variant does 1 time in 20: not significant.
    assert evaluate(errors, Measurement(1.0, 1)) is Outcome.NO_DATA
    # No errors from 4 calls is not enough to pass.
    assert evaluate(errors, Measurement(0.0, 4)) is Outcome.NO_DATA
    plain = Rule(signal="error_rate", max=0.05, min_samples=20)  # no confidence: no test
    assert evaluate(plain, Measurement(1.0, 4)) is Outcome.NO_DATA


def test_binomial_tail_is_exact():
    from math import comb

    from serving.controller.rules import binomial_tail

    def exact(k: int, n: int, p: float) -> float:
        return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))

    for k, n, p in [(5, 60, 0.01), (2, 2, 0.05), (20, 20, 0.01), (30, 100, 0.2), (3, 10, 0.1)]:
        assert binomial_tail(k, n, p) == pytest.approx(exact(k, n, p), rel=1e-9), (k, n, p)
    assert binomial_tail(0, 10, 0.3) == 1.0 and binomial_tail(11, 10, 0.3) == 0.0
    assert binomial_tail(2, 100, 0.5) == 1.0  # at or below the mean: never significant
    assert binomial_tail(60_000, 100_000, 0.5) < 1e-300 or binomial_tail(60_000, 100_000, 0.5) == 0.0


def _latency(over: int, n: int, bound_le: float = 0.1) -> Measurement:
    """n requests of which ``over`` took 0.5 s, the rest 5 ms; p99 interpolated as Prometheus does."""
    from serving.controller.signals import quantile

    return quantile(0.99, [(0.005, n - over), (bound_le, n - over), (0.5, n), (math.inf, n)])


def test_a_latency_quantile_fails_on_the_requests_counted_above_its_bound():
    rule = default_rules(None)[0]
    assert rule.signal == "latency_p99_s" and rule.confidence is not None
    stable = _latency(0, 500)  # p99 about 5 ms: the bound is stable + 50 ms
    # Twenty of twenty requests over the bound: far fewer than the 50 a pass needs, still decisive.
    assert evaluate(rule, _latency(20, 20), stable) is Outcome.FAIL
    # Five of sixty (8%, where a p99 within the bound allows 1%): p < 0.001.
    assert evaluate(rule, _latency(5, 60), stable) is Outcome.FAIL
    # Two of sixty puts the estimated p99 over the bound, but it is what one burst does: no data.
    two = _latency(2, 60)
    assert two.value is not None and two.value > 0.055
    assert evaluate(rule, two, stable) is Outcome.NO_DATA
    # None over the bound passes once the sample is large enough, not before.
    assert evaluate(rule, _latency(0, 60), stable) is Outcome.PASS
    assert evaluate(rule, _latency(0, 30), stable) is Outcome.NO_DATA
    # Without stable's bound there is nothing to judge against.
    assert evaluate(rule, _latency(20, 20), Measurement(None, 0)) is Outcome.NO_DATA


def test_requests_above_a_bound_are_counted_conservatively():
    m = _latency(7, 100)
    assert m.samples == 100
    assert m.above(0.1) == 7 and m.above(0.05) == 7  # the bucket (5 ms, 100 ms] straddles 50 ms
    assert m.above(0.001) == 7  # the first bucket (0, 5 ms] straddles 1 ms
    assert m.above(0.6) == 0  # beyond the top finite bucket: unknown
    assert Measurement(0.2, 10).above(0.1) == 0  # no buckets, no count


def test_confidence_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="confidence"):
        Rule(signal="latency_p99_s", min=0.5, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        Rule(signal="error_rate", max=1.5, relative_to_stable=True, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        Rule(signal="drift_psi", max=0.2, confidence=0.95)


def test_expected_agreement_bounds_two_students_by_their_teacher_agreement():
    from serving.controller.service import expected_agreement

    assert expected_agreement(None, 0.93) is None
    assert expected_agreement(0.95, None) == 0.95
    # The teacher's own export against a student agreeing 93% with it: at least 93%.
    assert expected_agreement(1.0, 0.93) == pytest.approx(0.93)
    assert expected_agreement(0.93, 0.92) == pytest.approx(0.85)


def test_slack_keeps_noise_on_fast_variants_from_failing_a_relative_bound():
    rule = Rule(signal="latency_p99_s", max=1.5, relative_to_stable=True, slack=0.05, min_samples=5)
    # 63 ms against a stable 42 ms is 1.5x, but only 21 ms apart: noise on a 2-core machine.
    assert evaluate(rule, Measurement(0.063, 50), Measurement(0.042, 150)) is Outcome.PASS
    # 300 ms injected is far beyond both the factor and the slack.
    assert evaluate(rule, Measurement(0.34, 50), Measurement(0.042, 150)) is Outcome.FAIL
    # On slow variants the factor is the wider bound.
    assert evaluate(rule, Measurement(1.4, 50), Measurement(1.0, 150)) is Outcome.PASS
    with pytest.raises(ValueError, match="slack"):
        Rule(signal="error_rate", max=0.05, slack=0.01)


def test_a_cascade_is_judged_on_its_escalation_rate_against_its_calibration():
    from serving.controller.rules import escalation_slack

    assert all(r.signal != "escalation_rate" for r in default_rules(0.9))  # not a cascade
    rule = default_rules(0.9, expected_escalation=0.24, calibration_samples=3000)[-1]
    assert rule.signal == "escalation_rate" and rule.max == pytest.approx(
        0.24 + escalation_slack(0.24, 3000), abs=1e-6
    )
    assert escalation_slack(0.24, 3000) == pytest.approx(3 * math.sqrt(0.24 * 0.76 / 3000))
    assert escalation_slack(0.001, 10**6) == 0.01  # never below a point
    # In-distribution traffic escalating as calibrated passes; a third of it shifted fails.
    assert evaluate(rule, Measurement(0.25, 800)) is Outcome.PASS
    assert evaluate(rule, Measurement(0.33, 800)) is Outcome.FAIL
    # The same shift in 60 texts is not evidence yet, and 60 texts are too few to pass.
    assert evaluate(rule, Measurement(0.33, 60)) is Outcome.NO_DATA
    assert evaluate(rule, Measurement(0.20, 60)) is Outcome.NO_DATA


def test_a_cascade_is_held_to_the_escalation_its_registry_entry_was_calibrated_for(cascade_registry):
    from serving.config import parse_config
    from serving.controller.rules import escalation_slack
    from serving.controller.service import lineage_rules
    from variants import Registry

    cal = Registry(cascade_registry).get("cascade-student-int8-to-teacher").calibration
    assert cal is not None
    raw = {
        "variants": {
            "small": {"ref": "student-int8"},
            "big": {"ref": "teacher"},
            "both": {"cascade": {"first": "small", "then": "big"}},
        },
        "routing": {"stable": "small", "weights": {"small": 90, "both": 10}},
        "registry": str(cascade_registry),
    }
    rules = {r.signal: r for r in lineage_rules(parse_config(raw), "both")}
    expected = cal["expected_escalation"] + escalation_slack(cal["expected_escalation"], cal["examples"])
    assert rules["escalation_rate"].max == pytest.approx(expected, abs=1e-6)
    assert "escalation_rate" not in {r.signal for r in lineage_rules(parse_config(raw), "small")}
    # A threshold of the config's own has no calibrated escalation to be held to.
    raw["variants"]["both"]["cascade"]["threshold"] = 0.5
    assert "escalation_rate" not in {r.signal for r in lineage_rules(parse_config(raw), "both")}
