"""Recording the gateway's metrics: the sinks (Ray's metrics, or a list in tests) and the batching recorder.

What is recorded (names, labels, buckets) is defined in :mod:`serving.metrics`; this module only
moves values to where they are exported, cheaply enough for the request path.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from serving.metrics import SPECS, MetricSpec


class MetricSink(Protocol):
    """Where recorded values go: Ray's metrics in a replica, a list in a unit test."""

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...

    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...


class RaySink:
    """``ray.util.metrics`` objects, created on first use inside the process that records them."""

    def __init__(self) -> None:
        self._objects: dict[str, Any] | None = None

    def _get(self, spec: MetricSpec) -> Any:
        if self._objects is None:
            from ray.util import metrics as rm

            out: dict[str, Any] = {}
            for s in SPECS.values():
                if s.exporter != "ray":
                    continue
                if s.kind == "counter":
                    out[s.name] = rm.Counter(s.name, description=s.help, tag_keys=s.labels)
                elif s.kind == "gauge":
                    out[s.name] = rm.Gauge(s.name, description=s.help, tag_keys=s.labels)
                else:
                    out[s.name] = rm.Histogram(
                        s.name, description=s.help, boundaries=list(s.buckets), tag_keys=s.labels
                    )
            self._objects = out
        return self._objects[spec.name]

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._get(spec).inc(value, tags=tags)

    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._get(spec).observe(value, tags=tags)

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._get(spec).set(value, tags=tags)


class GatewayMetrics:
    """Records the gateway's metrics inside a Ray replica, cheaply enough for the request path.

    Handing a value to ``ray.util.metrics`` costs tens of microseconds, more than a request's
    routing work, so counter increments are summed and histogram observations collected here,
    and a background thread hands them to the sink every ``flush_interval_s`` (well inside Ray's
    own report interval, so nothing is delayed that a scrape could see). Gauges, set about once a
    second, go straight to the sink. Labels are checked against the metric's spec on every call: a
    wrong or missing label, or a counter recorded as a histogram, fails in the first unit test
    that records it rather than silently in a replica.
    """

    def __init__(self, sink: MetricSink | None = None, flush_interval_s: float = 0.5) -> None:
        self.sink: MetricSink = sink if sink is not None else RaySink()
        self._lock = threading.Lock()
        self._counts: dict[tuple[MetricSpec, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[MetricSpec, tuple[str, ...]], list[float]] = {}
        self._flush_interval_s = flush_interval_s
        self._flusher: threading.Thread | None = None

    @staticmethod
    def _values(spec: MetricSpec, kind: str, labels: dict[str, str]) -> tuple[str, ...]:
        return spec.label_values(kind, labels)

    def inc(self, spec: MetricSpec, value: float = 1.0, **labels: str) -> None:
        key = (spec, self._values(spec, "counter", labels))
        if not value:
            return
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + value
        if self._flusher is None:
            self._start_flusher()

    def observe(self, spec: MetricSpec, value: float, **labels: str) -> None:
        key = (spec, self._values(spec, "histogram", labels))
        with self._lock:
            bucket = self._observed.get(key)
            if bucket is None:
                self._observed[key] = [value]
            else:
                bucket.append(value)
        if self._flusher is None:
            self._start_flusher()

    def set(self, spec: MetricSpec, value: float, **labels: str) -> None:
        values = self._values(spec, "gauge", labels)
        self.sink.set(spec, value, dict(zip(spec.labels, values, strict=True)))

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for (spec, values), value in counts.items():
            self.sink.inc(spec, value, dict(zip(spec.labels, values, strict=True)))
        for (spec, values), seen in observed.items():
            tags = dict(zip(spec.labels, values, strict=True))
            for value in seen:
                self.sink.observe(spec, value, tags)

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_forever, name="slimgate-metrics", daemon=True)
        self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self._flush_interval_s)
            self.flush()
