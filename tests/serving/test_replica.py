"""The variant replica's warm-up self-measurement, without Ray: gauges with the specs' labels, and info()."""

from __future__ import annotations

import pytest
from support import FakeClock, MemorySink

from serving.metrics_recording import GatewayMetrics
from serving.replica import VariantReplica


class FakePredictor:
    label_names = ("noun.plant",)
    precision = "int8-dynamic"
    device = "cpu"
    manifest = type("M", (), {"backend": "onnxruntime"})()

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def predict_proba(self, texts):
        self.clock.advance(0.004 + 0.001 * len(texts))
        return [[1.0]] * len(texts)


def _replica(clock: FakeClock) -> tuple[VariantReplica, MemorySink]:
    # The constructor loads from the registry inside Ray Serve; the measurement needs neither.
    r = object.__new__(VariantReplica)
    sink = MemorySink()
    r.key, r.name, r.version, r.replica = "int8", "teacher-int8", 1, "abc123"
    r.predictor, r.metrics, r.warmup, r._restater = FakePredictor(clock), GatewayMetrics(sink), None, None
    return r, sink


def test_the_replica_exports_its_warmup_figures_and_hardware_and_reports_them_in_info():
    clock = FakeClock(0.0)
    r, sink = _replica(clock)
    r._measure(8, clock)
    labels = (("replica", "abc123"), ("variant", "int8"))
    assert sink.gauges[("slimgate_warmup_p50_seconds", labels)] == r.warmup.p50_s
    assert r.warmup.p50_s == pytest.approx(0.005) and r.warmup.texts_per_s == pytest.approx(8 / 0.012)
    assert sink.gauges[("slimgate_warmup_texts_per_second", labels)] == r.warmup.texts_per_s
    (hw,) = [k for k in sink.gauges if k[0] == "slimgate_replica_hardware"]
    assert dict(hw[1])["device"] == "cpu" and dict(hw[1])["hardware"]
    info = r.info()
    assert info["warmup"]["batch_size"] == 8 and info["warmup"]["hardware"] == dict(hw[1])["hardware"]
