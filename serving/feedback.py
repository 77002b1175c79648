"""Joining delayed ground truth to served predictions: ``POST /v1/feedback`` -> live accuracy.

The router remembers what it answered for each request (variant and predicted labels) for a
bounded time and a bounded number of requests; feedback that arrives within that window is
scored against the remembered answer, later or unknown feedback is refused with a named
error. Memory is bounded by ``max_entries`` whatever the traffic; each router replica keeps
its own window, so feedback must reach the replica that served (one router replica by
default; several need session affinity or a shared store).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Served:
    """One remembered answer; kept small, since ``max_entries`` of them live in every router replica."""

    variant: str
    labels: tuple[str, ...]
    at: float
    scored: set[int] | None = None  # the input indices feedback arrived for (most answers get none)

    def score(self, index: int) -> bool:
        """Record feedback for input ``index``; False if it was already recorded."""
        if self.scored is None:
            self.scored = set()
        elif index in self.scored:
            return False
        self.scored.add(index)
        return True


class FeedbackJoin:
    def __init__(
        self, max_entries: int, retention_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1 or retention_s <= 0:
            raise ValueError("max_entries must be >= 1 and retention_s > 0")
        self.max_entries = max_entries
        self.retention_s = retention_s
        self._clock = clock
        self._served: OrderedDict[str, Served] = OrderedDict()

    def record(self, request_id: str, variant: str, labels: list[str]) -> None:
        now = self._clock()
        self._expire(now)
        self._served[request_id] = Served(variant, tuple(labels), now)
        self._served.move_to_end(request_id)
        while len(self._served) > self.max_entries:
            self._served.popitem(last=False)

    def lookup(self, request_id: str) -> Served | None:
        self._expire(self._clock())
        return self._served.get(request_id)

    def _expire(self, now: float) -> None:
        # Entries are in arrival order, so the expired ones are all at the front.
        while self._served:
            first = next(iter(self._served.values()))
            if now - first.at <= self.retention_s:
                break
            self._served.popitem(last=False)

    def __len__(self) -> int:
        return len(self._served)
