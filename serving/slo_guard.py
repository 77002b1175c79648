"""The SLO guard: under load, a variant hands part of its traffic to a cheaper one instead of missing
its latency objective, and takes it back when the load falls.

Queueing answers everybody late, and shedding (:mod:`serving.admission`) answers some callers not
at all; switching part of the traffic to a cheaper variant answers all of them in time at a known
cost in accuracy (INFaaS, Proteus, Model-Switching). The guard lives in each router replica,
because it has to react within a second or two, and it is pure: the router feeds it every
routing choice and every answered call, and a fake clock replays every decision in a unit test.

Every ``react_s`` the guard judges each variant that has a brownout target (see
:mod:`serving.brownout_plan`) on the calls of the last interval:

* **loaded**: at least ``min_requests`` answers, their quantile above the objective, and on
  average at least ``min_concurrency`` calls in flight (Little's law: latency x rate). A variant
  slow on its own, with nothing queued, is a fault for the rollout controller, not load. The
  variant's answers per second while loaded are its measured capacity (the most seen in this
  brownout, or answered in time since: an interval that drains a backlog answers fewer). The
  diverted fraction rises to what leaves it ``headroom`` of that capacity, and by at least
  ``RAISE_STEP``, so an overload that admission control hides from the offered rate is still
  worked off within a few intervals.
* **healthy**: the quantile below ``headroom`` x the objective (or nothing to judge). After
  ``recover_s`` of healthy intervals in a row the fraction falls to what the offered load needs
  given the measured capacity: all the way back to 0 once the load is below capacity.
* anything in between holds the fraction.

Hysteresis: raising is immediate, lowering waits for a healthy hold, and the hold doubles (up to
``2**MAX_BACKOFF``) whenever a lowering is followed by a new overload within two holds, so a
variant at the edge of its capacity does not flap. Once the offered load is at most
``LIGHT_LOAD`` of the measured capacity (the burst is over) the plain hold applies again.

Diversion is sticky: a caller's key is hashed to a point in [0, 1), and the callers below the
fraction are diverted, the same ones for as long as the brownout lasts (a growing fraction only
adds callers).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from serving.config import SloConfig
from serving.policies import key_point

RAISE_STEP = 0.2
# Fractions this small are not worth a brownout: rounding them to 0 lets a variant whose capacity
# was measured a little low come all the way back.
MIN_FRACTION = 0.05
MAX_BACKOFF = 3
# Offered load at most this share of the measured capacity gives a share back after the plain hold.
LIGHT_LOAD = 0.6
QUANTILE = {"p99": 0.99, "p95": 0.95}
SALT = "slimgate-brownout"
MIX_INTERVALS = 10  # reaction intervals the expected accuracy of the mix is averaged over
RECENT_CHANGES = 50  # kept for GET /admin/config


@dataclass(frozen=True)
class Change:
    """One move of a variant's diverted fraction, with the figures that decided it."""

    variant: str
    target: str
    before: float
    after: float
    reason: str
    figures: Mapping[str, float]
    at: float  # the guard's clock
    wall: float  # seconds since the epoch, for people and logs

    @property
    def kind(self) -> str:
        return "brownout" if self.after > self.before else "recovery"


@dataclass
class _Interval:
    offered: int = 0  # calls the split chose this variant for (diverted ones included)
    latencies: list[float] = field(default_factory=list)


@dataclass
class Brownout:
    """One variant's brownout state."""

    target: str
    fraction: float = 0.0
    capacity_rps: float = 0.0
    healthy_since: float | None = None
    lowered_at: float | None = None
    backoff: int = 0
    figures: dict[str, float] = field(default_factory=dict)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class SloGuard:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_change: Callable[[Change], None] = lambda _c: None,
    ) -> None:
        self.clock, self.wall_clock = clock, wall_clock
        self.rng = rng if rng is not None else random.Random()
        self.on_change = on_change
        self.cfg = SloConfig()
        self.states: dict[str, Brownout] = {}
        self.accuracy: dict[str, float] = {}
        self._interval: dict[str, _Interval] = {}
        self._mix: deque[dict[str, int]] = deque(maxlen=MIX_INTERVALS)
        self._served: dict[str, int] = {}
        self._started = clock()
        self.recent: deque[Change] = deque(maxlen=RECENT_CHANGES)

    @property
    def enabled(self) -> bool:
        return self.cfg.objective_s is not None and bool(self.states)

    def configure(self, cfg: SloConfig, targets: Mapping[str, str], accuracy: Mapping[str, float]) -> None:
        """New settings; a variant whose target is unchanged keeps its brownout, others start afresh."""
        self.cfg = cfg
        self.accuracy = dict(accuracy)
        keep = {k: s for k, s in self.states.items() if targets.get(k) == s.target}
        self.states = {k: keep.get(k) or Brownout(t) for k, t in targets.items()}

    # -- the request path ------------------------------------------------------------------
    def route(self, key: str, sticky: str | None, ready: Callable[[str], bool]) -> str | None:
        """The variant to answer instead of ``key`` (the split's choice), or None to keep it."""
        self._maybe_decide()
        iv = self._interval.get(key)
        if iv is None:
            iv = self._interval[key] = _Interval()
        iv.offered += 1
        st = self.states.get(key)
        if st is None or st.fraction <= 0:
            return None
        point = key_point(sticky, SALT) / 2.0**64 if sticky else self.rng.random()
        if point >= st.fraction or not ready(st.target):
            return None
        return st.target

    def observe(self, key: str, seconds: float) -> None:
        """A call to ``key`` answered after ``seconds`` (as the router measured it)."""
        self._maybe_decide()  # pinned-only traffic never calls route(): the interval still ends
        iv = self._interval.get(key)
        if iv is None:
            iv = self._interval[key] = _Interval()
        iv.latencies.append(seconds)
        self._served[key] = self._served.get(key, 0) + 1

    def expected_accuracy(self) -> float | None:
        """Test accuracy of the mix answered over the last intervals, weighted by answers."""
        counts: dict[str, int] = {}
        for mix in (*self._mix, self._served):
            for k, n in mix.items():
                counts[k] = counts.get(k, 0) + n
        known = {k: n for k, n in counts.items() if k in self.accuracy}
        total = sum(known.values())
        return sum(self.accuracy[k] * n for k, n in known.items()) / total if total else None

    # -- deciding ---------------------------------------------------------------------------
    def _maybe_decide(self) -> None:
        now = self.clock()
        if now - self._started >= self.cfg.react_s:
            self.decide(now)

    def decide(self, now: float) -> list[Change]:
        """Judge the interval that ends at ``now`` and start the next one; the changes made."""
        elapsed = max(now - self._started, 1e-9)
        intervals, self._interval = self._interval, {}
        self._mix.append(self._served)
        self._served = {}
        self._started = now
        if self.cfg.objective_s is None:
            return []
        made = []
        for key, st in self.states.items():
            change = self._judge(key, st, intervals.get(key) or _Interval(), elapsed, now)
            if change is not None:
                made.append(change)
                self.recent.append(change)
                self.on_change(change)
        return made

    def _hold(self, st: Brownout) -> float:
        return self.cfg.recover_s * 2.0**st.backoff

    def _judge(self, key: str, st: Brownout, iv: _Interval, elapsed: float, now: float) -> Change | None:
        cfg = self.cfg
        objective = cfg.objective_s
        assert objective is not None
        n = len(iv.latencies)
        observed = quantile(iv.latencies, QUANTILE[cfg.quantile]) if n else None
        served_rps, offered_rps = n / elapsed, iv.offered / elapsed
        concurrency = sum(iv.latencies) / elapsed
        st.figures = {
            "latency_s": observed if observed is not None else 0.0,
            "served_rps": served_rps,
            "offered_rps": offered_rps,
            "concurrency": concurrency,
            "capacity_rps": st.capacity_rps,
        }
        what = f"{cfg.quantile} {observed or 0:.3f}s vs objective {objective:g}s"
        load = f"offered {offered_rps:.1f}/s, answered {served_rps:.1f}/s, in flight {concurrency:.1f}"
        if observed is not None and n >= cfg.min_requests and observed > objective:
            if concurrency < cfg.min_concurrency:
                st.healthy_since = None
                return None  # slow, but not loaded: not the guard's to fix
            # The most it answered while overloaded in this brownout: a tick that drains a backlog
            # after a raise answers fewer, and must not make the variant look weaker than it is.
            st.capacity_rps = max(st.capacity_rps, served_rps)
            st.figures["capacity_rps"] = st.capacity_rps
            st.healthy_since = None
            if st.lowered_at is not None and now - st.lowered_at < 2 * self._hold(st):
                st.backoff = min(st.backoff + 1, MAX_BACKOFF)
            needed = 1.0 - cfg.headroom * st.capacity_rps / offered_rps if offered_rps > 0 else 1.0
            new = min(1.0, max(st.fraction + RAISE_STEP, needed))
            return self._move(key, st, new, f"overloaded: {what}; {load}", now)
        if st.fraction <= 0:
            if st.lowered_at is not None and now - st.lowered_at > 4 * self._hold(st):
                st.backoff, st.lowered_at = 0, None
            return None
        if observed is not None and observed > cfg.headroom * objective:
            st.healthy_since = None
            return None
        # Answering more than that, in time, shows more capacity than was measured.
        st.capacity_rps = max(st.capacity_rps, served_rps)
        if st.healthy_since is None:
            st.healthy_since = now - elapsed
        # A load well below the capacity measured is no edge to flap at: the backed-off hold is for
        # giving a share back near capacity, not after the burst is over.
        light = offered_rps <= LIGHT_LOAD * st.capacity_rps
        if now - st.healthy_since < (cfg.recover_s if light else self._hold(st)):
            return None
        # What the load needs now: the share the variant cannot answer within its headroom.
        keep = cfg.headroom * st.capacity_rps / offered_rps if offered_rps > 0 else 1.0
        new = max(0.0, 1.0 - keep)
        if new < MIN_FRACTION:
            new = 0.0
        if new >= st.fraction - MIN_FRACTION / 2 and new > 0:
            return None
        held = f"healthy for {now - st.healthy_since:.0f}s ({what}); {load}"
        change = self._move(key, st, new, held, now)
        st.lowered_at, st.healthy_since = now, None
        if new == 0:
            st.capacity_rps = 0.0  # the next brownout measures afresh
        return change

    def _move(self, key: str, st: Brownout, new: float, reason: str, now: float) -> Change | None:
        new = round(new, 3)
        if new == st.fraction:
            return None
        before, st.fraction = st.fraction, new
        return Change(key, st.target, before, new, reason, dict(st.figures), now, self.wall_clock())
