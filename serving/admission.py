"""Admission control: refuse at once what the router cannot answer within its latency objective.

An overloaded server that queues everything answers everyone late; one that sheds the excess
answers the requests it admits on time and tells the others to come back (503 + Retry-After)
within a millisecond. :class:`AdmissionControl` admits at most ``limit`` requests at once per
router replica and adapts that limit to the latency objective, the way TCP Vegas and Netflix's
concurrency limiters do (additive increase, multiplicative decrease):

* every ``window`` completed requests it looks at their latency quantile (p99 by default);
* above the objective, the limit shrinks in proportion (objective / observed, between halving and
  ``decrease``): the queue was too long for the rate the variants answer at (Little's law,
  latency = in-flight / throughput), so it converges within a window or two;
* comfortably below it (under ``headroom`` of the objective) while the limit was actually used,
  it grows by one;
* it never leaves ``[min_limit, max_in_flight]``.

Shed requests are refused before their body is read, so shedding costs almost nothing. No
clock or randomness is read here except through the injected ``clock``; every decision can be
replayed in a unit test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from serving.config import AdmissionConfig


class AdmissionControl:
    def __init__(
        self,
        cfg: AdmissionConfig,
        *,
        min_limit: int = 8,
        initial_limit: int = 64,
        window: int = 100,
        quantile: float = 0.99,
        decrease: float = 0.9,
        headroom: float = 0.7,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        self.min_limit = min_limit
        self.window = window
        self.quantile = quantile
        self.decrease = decrease
        self.headroom = headroom
        self.in_flight = 0
        self._peak = 0
        self._latencies: list[float] = []
        self.initial_limit = initial_limit
        self.objective_s: float | None = None
        self.limit = initial_limit
        self.configure(cfg)

    def configure(self, cfg: AdmissionConfig) -> None:
        """Take a new config's settings; the adapted limit carries over (clamped to the new range),
        unless there was nothing adapted to carry (no objective before): then it starts afresh."""
        if self.objective_s is None and cfg.latency_objective_s is not None:
            self.limit = self.initial_limit
            self._latencies = []
        self.objective_s = cfg.latency_objective_s
        self.max_in_flight = cfg.max_in_flight
        self.retry_after_s = cfg.retry_after_s
        self.min_limit = min(self.min_limit, self.max_in_flight)
        if self.objective_s is None:
            self.limit = self.max_in_flight
        self.limit = max(self.min_limit, min(self.limit, self.max_in_flight))

    def try_admit(self) -> str | None:
        """None if admitted (the caller must call :meth:`done` when it answers), else why it is shed."""
        if self.in_flight >= self.max_in_flight:
            return "max_in_flight"
        if self.in_flight >= self.limit:
            return "limit"
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        return None

    def done(self, started: float) -> None:
        """An admitted request finished; ``started`` is the clock reading when it was admitted."""
        self.in_flight -= 1
        if self.objective_s is None:
            return
        self._latencies.append(self._clock() - started)
        if len(self._latencies) >= self.window:
            self._adapt()

    def now(self) -> float:
        return self._clock()

    def _adapt(self) -> None:
        lat = sorted(self._latencies)
        self._latencies = []
        observed = lat[min(len(lat) - 1, math.ceil(self.quantile * len(lat)) - 1)]
        assert self.objective_s is not None
        if observed > self.objective_s:
            factor = min(self.decrease, max(0.5, self.objective_s / observed))
            self.limit = max(self.min_limit, int(self.limit * factor))
        elif observed < self.headroom * self.objective_s and self._peak >= self.limit:
            self.limit = min(self.max_in_flight, self.limit + 1)
        self._peak = self.in_flight
