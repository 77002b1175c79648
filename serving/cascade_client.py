"""A confidence cascade as one more variant client: the first stage answers every text, the second
only the texts the first is unsure of, within a latency budget.

:class:`CascadeClient` composes two :class:`~serving.variant_clients.VariantClient` objects of the
same router (each placed, batched and scaled as its own config says), so the dataplane routes,
pins, shadows and falls back from a cascade exactly as from any variant. Per request:

1. the first stage answers all the texts;
2. the texts whose confidence (the measure the registry's cascade entry was calibrated with) is
   below the threshold go, and only they, to the second stage in one call;
3. if that call has not answered within ``budget_ms``, or fails, those texts keep the first
   stage's answers and are marked ``degraded``: a cascade is never slower than its first stage plus
   its budget, and never fails because its second stage does.

The answer says which stage answered each text (``first``, ``then`` or ``degraded``), and each is
counted (``slimgate_cascade_texts``), as is each stage's latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.config import VariantSpec
from serving.metrics import CASCADE_STAGE_LATENCY_SECONDS, CASCADE_TEXTS
from serving.metrics_recording import GatewayMetrics
from serving.variant_clients import Answer, VariantClient, VariantInfo
from variants.cascade import Measure, confidence


@dataclass(frozen=True)
class Calibration:
    """What the registry's cascade entry records: its measure, threshold and expected escalation."""

    name: str
    version: int
    measure: Measure
    threshold: float
    expected_escalation: float | None


def read_calibration(registry: str | None, ref: str) -> Calibration:
    """The cascade entry ``ref``, checksums verified (blocking: call it off the event loop)."""
    from variants import Registry
    from variants.predictor import read_cascade
    from variants.registry import parse_ref

    name, version = parse_ref(ref)
    m, spec = read_cascade(Registry(registry), name, version)
    expected = (m.calibration or {}).get("expected_escalation")
    return Calibration(m.name, m.version, spec["measure"], float(spec["threshold"]), expected)


class CascadeClient:
    def __init__(
        self,
        key: str,
        spec: VariantSpec,
        first: VariantClient,
        then: VariantClient,
        calibration: Calibration,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.key = key
        self.first, self.then = first, then
        self.calibration = calibration
        self._metrics = metrics
        self._clock = clock
        self.configure(spec)

    @property
    def identity(self) -> tuple[object, ...]:
        """What this client was built from; a change means building it again."""
        return (self.first, self.then, self.calibration)

    @property
    def info(self) -> VariantInfo | None:
        # The first stage's label table is the cascade's (the registry check made both stages'
        # equal); a second stage with replicas of its own may not have told its precision yet.
        a, b = self.first.info, self.then.info
        if a is None:
            return None
        c = self.calibration
        precision = f"{a.precision}+{b.precision if b is not None else 'unknown'}"
        return VariantInfo(self.key, c.name, c.version, a.labels, "cascade", precision, "router")

    @property
    def ready(self) -> bool:
        # Only the first stage: without the second, answers are degraded, not refused.
        return self.first.ready

    def configure(self, spec: VariantSpec) -> None:
        assert spec.cascade is not None
        self.threshold = (
            spec.cascade.threshold if spec.cascade.threshold is not None else self.calibration.threshold
        )
        self.budget_s = spec.cascade.budget_ms / 1000

    def escalated(self, probabilities: np.ndarray) -> np.ndarray:
        """Which texts go to the second stage: those whose first-stage confidence is below the threshold."""
        return confidence(probabilities, self.calibration.measure) < self.threshold

    async def predict(self, texts: list[str], timeout_s: float) -> Answer:
        start = self._clock()
        first = await self.first.predict(texts, timeout_s)
        asked = self._clock()
        self._observe("first", asked - start)
        probs = first.probabilities
        up = np.flatnonzero(self.escalated(probs))
        outcome = "then"
        if up.size:
            budget = max(0.0, min(self.budget_s, timeout_s - (asked - start)))
            try:
                then = await asyncio.wait_for(self.then.predict([texts[i] for i in up], budget), budget)
                probs = probs.copy()
                probs[up] = then.probabilities
            except Exception:  # noqa: BLE001 - late or failed: the first stage's answer stands
                outcome = "degraded"
            self._observe("then", self._clock() - asked)
        stages = ["first"] * len(texts)
        for i in up:
            stages[i] = outcome
        self._count(len(texts) - up.size, outcome, up.size)
        c = self.calibration
        return Answer(probs, c.name, c.version, tuple(stages))

    def _observe(self, stage: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.observe(CASCADE_STAGE_LATENCY_SECONDS, seconds, variant=self.key, stage=stage)

    def _count(self, answered_first: int, outcome: str, escalated: int) -> None:
        if self._metrics is None:
            return
        if answered_first:
            self._metrics.inc(CASCADE_TEXTS, float(answered_first), variant=self.key, stage="first")
        if escalated:
            self._metrics.inc(CASCADE_TEXTS, float(escalated), variant=self.key, stage=outcome)

    def close(self) -> None:
        """Nothing of its own: its stages belong to the router, which closes them."""
