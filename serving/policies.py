"""The gateway's routing and shadowing policies: small, pure, and separately testable.

This module owns the decisions the router makes per request: which variant serves a caller
(:class:`WeightedSplit`), whether a request is mirrored to the shadow variants
(:class:`ShadowSampler`, :class:`InFlightLimiter`), how a shadow answer is compared with the
served one (:func:`compare`, :func:`compare_batch`) and which disagreements are kept for people
to read (:class:`DisagreementLog`). Nothing here imports Ray or does I/O; randomness and clocks
are injected, so every policy can be tested exactly.

Why the split lays out cumulative ranges instead of using rendezvous hashing
-------------------------------------------------------------------------------
A sticky key is hashed (BLAKE2b, salted) to a point in ``[0, 1)``; the variants own consecutive
ranges of that interval, sized by weight and laid out in a fixed order (variant names, sorted),
so the layout depends on nothing but the weights. In the canary case -- two variants, weight
moving from stable to canary, e.g. 95/5 -> 75/25 -- the boundary between the two ranges moves
from 0.95 to 0.75 (or from 0.05 to 0.25, depending on the name order) and exactly the keys in the
moved interval change variant: 20% of the hash space, every one of them stable -> canary and
none back. 20% is the lower bound, since the canary's share must grow by 20 points. The result is
deterministic, not merely true in expectation, and the proportions are exact (weights are integer
percents and the hash is cut into ``total`` equal buckets with integer arithmetic).

Weighted rendezvous hashing is also minimal for two variants, but not better with more: when
weight moves from A to B, a key of an untouched variant C moves to B whenever B's raised score
now beats C's, and C refills from A, so C's callers churn although C's weight did not change.
The cumulative layout has a bounded cost instead: a transfer between two variants moves the ranges
of the variants named between them by the transferred amount. No stateless scheme can be minimal
for every change among three or more variants (C's set would have to depend on C's weight alone,
and the sets of three variants cannot all nest and stay disjoint), so this module takes the
scheme that is exact for the canary case and simple to reason about; :func:`moved_fraction` says
exactly how many keys a proposed change moves. Zero-weight variants own empty ranges, so adding
or removing one moves nothing. Changing which variant is *stable* does not change the layout.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in [0, 1): ``random.Random``, ``numpy.random.Generator``."""

    def random(self) -> float: ...


# -- which variant serves ----------------------------------------------------------------------
_HASH_BITS = 64


def key_point(key: str, salt: str = "slimgate-split") -> int:
    """A sticky key's 64-bit position in the hash space; stable across processes and versions."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=salt.encode("utf-8")[:16]).digest()
    return int.from_bytes(digest, "big")


class WeightedSplit:
    """Traffic split by integer weights, sticky when the request carries a key.

    With a key, the variant is a pure function of (key, weights): see the module docstring for
    the layout and why. Without a key (``None`` or empty), the variant is drawn by weight from
    ``rng``. A variant with weight 0 is never chosen.
    """

    def __init__(
        self, weights: Mapping[str, int], *, rng: RandomSource | None = None, salt: str = "slimgate-split"
    ) -> None:
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int) or w < 0:
                raise ValueError(f"weight of {name!r} must be a non-negative integer, got {w!r}")
        self.weights = dict(sorted(weights.items()))
        self.total = sum(self.weights.values())
        if self.total <= 0:
            raise ValueError("at least one variant needs a positive weight")
        self.salt = salt
        self._rng = rng if rng is not None else random.Random()
        self._names = [n for n, w in self.weights.items() if w > 0]
        self._bounds: list[int] = []  # cumulative weight at the end of each variant's range
        acc = 0
        for n in self._names:
            acc += self.weights[n]
            self._bounds.append(acc)

    def _variant_at(self, bucket: int) -> str:
        for name, bound in zip(self._names, self._bounds, strict=True):
            if bucket < bound:
                return name
        raise AssertionError(f"bucket {bucket} outside [0, {self.total})")  # pragma: no cover

    def bucket(self, key: str) -> int:
        """The key's bucket in ``[0, total)``: ``floor(point * total)`` in exact integer arithmetic."""
        return (key_point(key, self.salt) * self.total) >> _HASH_BITS

    def choose(self, key: str | None = None, rng: RandomSource | None = None) -> str:
        if key:
            return self._variant_at(self.bucket(key))
        u = (rng if rng is not None else self._rng).random()
        # min() guards the float edge case u * total == total.
        return self._variant_at(min(int(u * self.total), self.total - 1))

    def ranges(self) -> dict[str, tuple[Fraction, Fraction]]:
        """Each positive-weight variant's share of the hash space as ``[start, end)``."""
        out, start = {}, 0
        for name, end in zip(self._names, self._bounds, strict=True):
            out[name] = (Fraction(start, self.total), Fraction(end, self.total))
            start = end
        return out


def moved_fraction(old: Mapping[str, int], new: Mapping[str, int], salt: str = "slimgate-split") -> float:
    """Exact share of sticky keys whose variant differs between two weight tables."""
    a, b = WeightedSplit(old, salt=salt).ranges(), WeightedSplit(new, salt=salt).ranges()
    kept = Fraction(0)
    for name, (s1, e1) in a.items():
        if name in b:
            s2, e2 = b[name]
            kept += max(Fraction(0), min(e1, e2) - max(s1, s2))
    return float(1 - kept)


# -- whether a request is mirrored -------------------------------------------------------------
class ShadowSampler:
    """Decides per request whether to mirror it to the shadow variants."""

    def __init__(self, fraction: float, rng: RandomSource | None = None) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        self.fraction = fraction
        self._rng = rng if rng is not None else random.Random()

    def should_mirror(self) -> bool:
        # random() < 1.0 always holds, so fraction 1 mirrors everything and 0 nothing.
        return self.fraction > 0.0 and self._rng.random() < self.fraction


class InFlightLimiter:
    """A non-blocking cap on concurrent shadow calls; what does not fit is dropped and counted.

    Shadow traffic must never slow the served path, so a full limiter answers ``False`` at once
    instead of queueing. The lock is held only for a counter update and never across an ``await``,
    so the limiter is safe from threads and from coroutines on an event loop alike.
    """

    def __init__(self, max_in_flight: int) -> None:
        self._check(max_in_flight)
        self._max = max_in_flight
        self._lock = threading.Lock()
        self._in_flight = 0
        self._admitted = 0
        self._dropped = 0

    @staticmethod
    def _check(n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {n!r}")

    def try_acquire(self) -> bool:
        with self._lock:
            if self._in_flight >= self._max:
                self._dropped += 1
                return False
            self._in_flight += 1
            self._admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._in_flight == 0:
                raise RuntimeError("release() without a matching successful try_acquire()")
            self._in_flight -= 1

    def set_limit(self, max_in_flight: int) -> None:
        """Change the cap live (a config apply); calls already in flight are left to finish."""
        self._check(max_in_flight)
        with self._lock:
            self._max = max_in_flight

    @property
    def limit(self) -> int:
        return self._max

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def admitted(self) -> int:
        return self._admitted

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "limit": self._max,
                "in_flight": self._in_flight,
                "admitted": self._admitted,
                "dropped": self._dropped,
            }


# -- comparing answers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    agree: bool  # same top-1 label
    tv_distance: float  # total variation distance, 0.5 * L1, in [0, 1]
    served_label: str
    shadow_label: str


@dataclass(frozen=True)
class BatchComparison:
    agree: np.ndarray  # bool [n]
    tv_distance: np.ndarray  # float64 [n]
    served_labels: tuple[str, ...]
    shadow_labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.agree)

    def __getitem__(self, i: int) -> Comparison:
        return Comparison(
            bool(self.agree[i]), float(self.tv_distance[i]), self.served_labels[i], self.shadow_labels[i]
        )

    @property
    def agreement_rate(self) -> float:
        """Share of inputs with the same top-1 label; 1.0 for an empty batch (nothing disagreed)."""
        return float(self.agree.mean()) if len(self.agree) else 1.0


def compare_batch(
    served_probs: np.ndarray, shadow_probs: np.ndarray, label_names: Sequence[str]
) -> BatchComparison:
    """Compare ``[n, L]`` probability rows of the served and the shadow variant, row by row."""
    p = np.asarray(served_probs, dtype=np.float64)
    q = np.asarray(shadow_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != q.shape or p.shape[1] != len(label_names):
        raise ValueError(
            f"expected two [n, {len(label_names)}] arrays of probabilities, got {p.shape} and {q.shape}"
        )
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("probabilities must be finite")
    # float32 softmax outputs do not sum to exactly 1; clipping keeps the distance in [0, 1].
    tv = np.clip(0.5 * np.abs(p - q).sum(axis=1), 0.0, 1.0)
    ps, qs = p.argmax(axis=1), q.argmax(axis=1)
    return BatchComparison(
        agree=ps == qs,
        tv_distance=tv,
        served_labels=tuple(label_names[i] for i in ps),
        shadow_labels=tuple(label_names[i] for i in qs),
    )


def compare(served_probs: np.ndarray, shadow_probs: np.ndarray, label_names: Sequence[str]) -> Comparison:
    """Compare one input's probability vectors (shape ``[L]``)."""
    p, q = np.asarray(served_probs), np.asarray(shadow_probs)
    if p.ndim != 1 or q.ndim != 1:
        raise ValueError(f"expected two [{len(label_names)}] vectors, got {p.shape} and {q.shape}")
    return compare_batch(p[None, :], q[None, :], label_names)[0]


# -- keeping disagreements ---------------------------------------------------------------------
@dataclass(frozen=True)
class DisagreementSample:
    text: str
    served_variant: str
    served_label: str
    shadow_variant: str
    shadow_label: str
    tv_distance: float | None
    at: float  # seconds since the epoch
    request_id: str | None = None


class DisagreementLog:
    """The last ``capacity`` disagreements between a served and a shadow answer, oldest first.

    Bounded so that a shadow variant that disagrees on everything costs a fixed amount of
    memory; texts are cut to ``max_text_chars`` for the same reason.
    """

    def __init__(
        self, capacity: int, *, max_text_chars: int = 2000, clock: Callable[[], float] = time.time
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = capacity
        self.max_text_chars = max_text_chars
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: deque[DisagreementSample] = deque(maxlen=capacity)
        self._total = 0

    def add(
        self,
        text: str,
        served_variant: str,
        served_label: str,
        shadow_variant: str,
        shadow_label: str,
        tv_distance: float | None = None,
        *,
        at: float | None = None,
        request_id: str | None = None,
    ) -> None:
        sample = DisagreementSample(
            text=text[: self.max_text_chars],
            served_variant=served_variant,
            served_label=served_label,
            shadow_variant=shadow_variant,
            shadow_label=shadow_label,
            tv_distance=None if tv_distance is None else float(tv_distance),
            at=self._clock() if at is None else at,
            request_id=request_id,
        )
        with self._lock:
            self._ring.append(sample)
            self._total += 1

    def snapshot(self) -> list[dict[str, Any]]:
        """JSON-ready copies of the kept samples, oldest first."""
        with self._lock:
            kept = list(self._ring)
        return [asdict(s) for s in kept]

    @property
    def total(self) -> int:
        """Disagreements ever added, including those the ring has since forgotten."""
        return self._total

    def __len__(self) -> int:
        return len(self._ring)
