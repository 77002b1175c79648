"""The replica's warm-up self-measurement with a fake predictor and a fake clock: bounded, and right."""

from __future__ import annotations

import pytest
from support import FakeClock

from serving.warmup import MAX_BATCHES, MAX_CALLS, SAMPLE, measure


class TimedPredictor:
    """Each call moves the clock by ``per_call + per_text * len(texts)`` and is remembered."""

    def __init__(self, clock: FakeClock, per_call: float, per_text: float = 0.0, jitter=()):
        self.clock, self.per_call, self.per_text = clock, per_call, per_text
        self.jitter = list(jitter)
        self.calls: list[list[str]] = []

    def predict_proba(self, texts):
        extra = self.jitter[len(self.calls)] if len(self.calls) < len(self.jitter) else 0.0
        self.calls.append(list(texts))
        self.clock.advance(self.per_call + self.per_text * len(texts) + extra)
        return [[1.0]] * len(texts)


def _measure(pred, clock, **kw):
    return measure(pred, clock, batch_size=kw.pop("batch_size", 8), hardware="Test CPU, 2 cores", **kw)


def test_p50_is_the_median_of_batch1_calls_and_throughput_counts_texts_per_second():
    clock = FakeClock(0.0)
    # Batch-1 calls take 10 ms, one outlier 100 ms: the median ignores it.
    pred = TimedPredictor(clock, per_call=0.008, per_text=0.002, jitter=[0.09])
    fig = _measure(pred, clock, flags=("avx2",), device="cpu")
    assert fig.p50_s == pytest.approx(0.010)
    # Batches of 8 take 8 + 16 = 24 ms: 8 / 0.024 texts per second.
    assert fig.texts_per_s == pytest.approx(8 / 0.024)
    assert fig.batch_size == 8 and fig.flags == ("avx2",) and fig.hardware == "Test CPU, 2 cores"
    singles = [c for c in pred.calls if len(c) == 1]
    batches = [c for c in pred.calls if len(c) == 8]
    assert len(singles) + len(batches) == len(pred.calls) == fig.calls
    # The texts come from the fixed sample, so every replica is timed on the same inputs.
    assert {t for c in pred.calls for t in c} <= set(SAMPLE)


def test_it_stops_within_its_time_budget():
    clock = FakeClock(0.0)
    pred = TimedPredictor(clock, per_call=0.01)
    fig = _measure(pred, clock, budget_s=0.4)
    # The last call may start just before the end: at most one call's time past the budget.
    assert fig.elapsed_s <= 0.4 + 0.01 + 1e-9
    assert fig.elapsed_s >= 0.4 - 1e-9
    # Batch-1 calls take the first half of the budget, batched calls the rest.
    singles = sum(1 for c in pred.calls if len(c) == 1)
    assert singles == pytest.approx(20, abs=1)


def test_a_model_slower_than_the_budget_still_gets_a_few_calls():
    clock = FakeClock(0.0)
    pred = TimedPredictor(clock, per_call=0.5)
    fig = _measure(pred, clock, budget_s=0.4, min_calls=3)
    assert [len(c) for c in pred.calls] == [1, 1, 1, 8]
    assert fig.p50_s == pytest.approx(0.5) and fig.texts_per_s == pytest.approx(8 / 0.5)


def test_a_clock_that_does_not_move_still_ends_with_finite_figures():
    clock = FakeClock(0.0)
    pred = TimedPredictor(clock, per_call=0.0)
    fig = _measure(pred, clock)
    assert len(pred.calls) == MAX_CALLS + MAX_BATCHES
    assert fig.p50_s == 0.0 and fig.texts_per_s < float("inf")


def test_figures_are_plain_data_for_info():
    clock = FakeClock(0.0)
    fig = _measure(TimedPredictor(clock, per_call=0.05), clock, flags=("avx2", "avx512_vnni"))
    d = fig.as_dict()
    assert d["flags"] == ["avx2", "avx512_vnni"] and d["hardware"] == "Test CPU, 2 cores"
    assert set(d) == {
        "p50_s",
        "texts_per_s",
        "batch_size",
        "calls",
        "elapsed_s",
        "hardware",
        "flags",
        "device",
    }


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"budget_s": 0}, {"sample": ()}, {"min_calls": 0}])
def test_bad_arguments_are_refused(kw):
    clock = FakeClock(0.0)
    with pytest.raises(ValueError):
        _measure(TimedPredictor(clock, 0.01), clock, **kw)
