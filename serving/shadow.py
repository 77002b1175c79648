"""Mirroring served requests to shadow variants and comparing their answers with the served ones.

:class:`Mirror` owns the shadow side of the request path: after a request is answered it decides
per shadow variant whether to mirror it (:class:`~serving.policies.ShadowSampler`), starts the
mirrored call without the client waiting, caps the calls in flight
(:class:`~serving.policies.InFlightLimiter`: what does not fit is dropped and counted, never
queued), compares the shadow's answer with the served one (agreement, total-variation distance,
latency difference) into metrics, and keeps recent disagreements for people to read
(:class:`~serving.policies.DisagreementLog`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from serving.config import ShadowConfig
from serving.metrics import (
    SHADOW_AGREEMENTS,
    SHADOW_DISAGREEMENTS,
    SHADOW_DISTANCE,
    SHADOW_DROPPED,
    SHADOW_ERRORS,
    SHADOW_LATENCY_DELTA_SECONDS,
    SHADOW_REQUESTS,
)
from serving.metrics_recording import GatewayMetrics
from serving.policies import DisagreementLog, InFlightLimiter, ShadowSampler, compare_batch

log = logging.getLogger("ray.serve")

# (variant key, texts) -> that variant's probabilities, raising if it cannot answer.
ShadowCall = Callable[[str, list[str]], Awaitable[np.ndarray]]


class Mirror:
    def __init__(
        self, call: ShadowCall, metrics: GatewayMetrics, clock: Callable[[], float] = time.perf_counter
    ):
        self._call = call
        self._metrics = metrics
        self._clock = clock
        self.limiter = InFlightLimiter(1)
        self.disagreements = DisagreementLog(1)
        self._tasks: set[asyncio.Task] = set()

    def configure(self, shadow: ShadowConfig) -> None:
        self.limiter.set_limit(shadow.max_in_flight)
        if self.disagreements.capacity != shadow.disagreement_samples:
            self.disagreements = DisagreementLog(shadow.disagreement_samples)

    def offer(
        self,
        samplers: dict[str, ShadowSampler],
        ready: Callable[[str], bool],
        served_key: str,
        served: np.ndarray,
        served_seconds: float,
        labels: Sequence[str],
        texts: list[str],
        request_id: str,
    ) -> None:
        """Mirror an answered request to each shadow variant its sampler picks (non-blocking)."""
        for key, sampler in samplers.items():
            if key == served_key or not ready(key) or not sampler.should_mirror():
                continue
            if not self.limiter.try_acquire():
                self._metrics.inc(SHADOW_DROPPED, variant=key)
                continue
            self._metrics.inc(SHADOW_REQUESTS, variant=key)
            task = asyncio.ensure_future(
                self._shadow(key, served_key, served, served_seconds, labels, texts, request_id)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _shadow(
        self,
        key: str,
        served_key: str,
        served: np.ndarray,
        served_seconds: float,
        labels: Sequence[str],
        texts: list[str],
        request_id: str,
    ) -> None:
        limiter = self.limiter
        start = self._clock()
        try:
            shadow = await self._call(key, texts)
        except Exception as err:  # noqa: BLE001 - a shadow failure must never reach a client
            self._metrics.inc(SHADOW_ERRORS, variant=key)
            log.info("shadow %s failed: %s", key, type(err).__name__)
            return
        finally:
            limiter.release()
        seconds = self._clock() - start
        if not labels:
            return
        cmp = compare_batch(served, shadow, labels)
        agree = int(cmp.agree.sum())
        self._metrics.inc(SHADOW_AGREEMENTS, agree, variant=key)
        self._metrics.inc(SHADOW_DISAGREEMENTS, len(cmp) - agree, variant=key)
        for i in range(len(cmp)):
            c = cmp[i]
            self._metrics.observe(SHADOW_DISTANCE, c.tv_distance, variant=key)
            if not c.agree:
                self.disagreements.add(
                    text=texts[i],
                    served_variant=served_key,
                    served_label=c.served_label,
                    shadow_variant=key,
                    shadow_label=c.shadow_label,
                    tv_distance=c.tv_distance,
                    request_id=request_id,
                )
        self._metrics.observe(SHADOW_LATENCY_DELTA_SECONDS, max(0.0, seconds - served_seconds), variant=key)

    def stats(self) -> dict[str, Any]:
        return self.limiter.stats()
