"""Fault drills: the deliberate degradation a variant's ``faults`` settings ask for.

One implementation for both places a variant can run (its own replica, or inside the router),
so that a drill means the same thing wherever the variant is placed: ``delay_ms`` before the
call, ``error_rate`` of calls failing with :class:`InjectedFault`, ``flip_rate`` of answers
replaced by the next label (wrong but well-formed).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import numpy as np


class InjectedFault(RuntimeError):
    """An error the variant's fault settings asked for (drills only)."""


class Faults:
    def __init__(self, spec: Mapping[str, float] | None = None, rng: random.Random | None = None) -> None:
        spec = spec or {}
        self.delay_s = float(spec.get("delay_ms", 0.0)) / 1000
        self.error_rate = float(spec.get("error_rate", 0.0))
        self.flip_rate = float(spec.get("flip_rate", 0.0))
        self._rng = rng if rng is not None else random.Random()

    @property
    def active(self) -> bool:
        return bool(self.delay_s or self.error_rate or self.flip_rate)

    async def before_call(self, key: str) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error_rate and self.error_rate > self._rng.random():
            raise InjectedFault(f"injected failure of variant {key}")

    def after_call(self, probs: np.ndarray) -> np.ndarray:
        if not self.flip_rate:
            return probs
        flip = np.array([self._rng.random() < self.flip_rate for _ in range(len(probs))], dtype=bool)
        # Rolling the probability vector by one label makes the answer wrong but well-formed.
        probs = probs.copy()
        probs[flip] = np.roll(probs[flip], 1, axis=1)
        return probs
