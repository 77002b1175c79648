"""Metrics as objects: wrong names, kinds or labels fail here, and counters are summed off the hot path."""

from __future__ import annotations

import pytest
from support import MemorySink

from serving import metrics as m
from serving.metrics import SPECS
from serving.metrics_recording import GatewayMetrics


def test_every_spec_is_a_module_constant_with_unique_names():
    constants = {v.name: v for v in vars(m).values() if isinstance(v, m.MetricSpec)}
    assert constants == SPECS
    assert all(s.kind in ("counter", "histogram", "gauge") for s in SPECS.values())
    assert all(s.buckets for s in SPECS.values() if s.kind == "histogram")


def test_wrong_labels_or_kinds_are_refused():
    g = GatewayMetrics(MemorySink())
    with pytest.raises(ValueError, match="takes labels"):
        g.inc(m.REQUESTS, variant="a")  # route missing
    with pytest.raises(ValueError, match="takes labels"):
        g.inc(m.REQUESTS, variant="a", route="split", user="u1")  # never a request-derived label
    with pytest.raises(TypeError, match="is a histogram"):
        g.inc(m.REQUEST_LATENCY_SECONDS, variant="a", route="split")
    with pytest.raises(TypeError, match="is a counter"):
        g.observe(m.REQUESTS, 1.0, variant="a", route="split")


def test_counters_and_observations_are_summed_then_flushed():
    sink = MemorySink()
    g = GatewayMetrics(sink, flush_interval_s=3600)
    for _ in range(3):
        g.inc(m.REQUESTS, variant="a", route="split")
    g.inc(m.INPUTS, 5, variant="a")
    g.observe(m.BATCH_SIZE, 4, variant="a")
    g.observe(m.BATCH_SIZE, 8, variant="a")
    assert sink.counters == {}  # nothing handed over yet: the request path only touched a dict
    g.flush()
    assert sink.count("slimgate_requests", variant="a", route="split") == 3
    assert sink.count("slimgate_inputs", variant="a") == 5
    assert sink.observations[("slimgate_batch_size", (("variant", "a"),))] == [4, 8]
    g.flush()
    assert sink.count("slimgate_requests", variant="a", route="split") == 3  # not handed over twice
    g.set(m.WEIGHT, 10, variant="a")
    assert sink.gauges[("slimgate_weight", (("variant", "a"),))] == 10
