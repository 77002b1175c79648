"""The SLO guard and its plan: brownout under load, recovery with hysteresis, sticky diversion."""

from __future__ import annotations

import asyncio
import random

import pytest
from support import FakeClock, FakeVariant, MemorySink

from serving.brownout_plan import Offline, brownout_targets
from serving.config import ConfigError, SloConfig, parse_config
from serving.dataplane import Dataplane, RouteTable
from serving.metrics_recording import GatewayMetrics
from serving.slo_guard import SloGuard

OBJECTIVE = 0.1
LABELS = ("a", "b")


def _guard(**slo):
    clock = FakeClock(start=0.0)
    changes = []
    guard = SloGuard(clock=clock, rng=random.Random(0), on_change=changes.append)
    cfg = SloConfig(**{"objective_s": OBJECTIVE, "recover_s": 4.0, **slo})
    guard.configure(cfg, {"big": "small"}, {"big": 0.87, "small": 0.81})
    return guard, clock, changes


class Model:
    """``big`` answers at most ``capacity`` calls a second; past 80% of it its queue makes it late."""

    def __init__(self, capacity: float = 100.0) -> None:
        self.capacity = capacity

    def interval(self, guard: SloGuard, clock: FakeClock, offered: int, users: int = 10_000) -> dict:
        routed = {"big": 0, "small": 0}
        for i in range(offered):
            to = guard.route("big", f"user-{(i * 7919) % users}", lambda _k: True)
            routed[to or "big"] += 1
        kept = routed["big"]
        served = int(min(kept, self.capacity))
        late = kept > 0.8 * self.capacity
        for _ in range(served):
            guard.observe("big", 0.4 if late else 0.02)
        for _ in range(routed["small"]):
            guard.observe("small", 0.01)
        clock.advance(1.0)
        guard.decide(clock())
        return routed


def test_an_overloaded_variant_browns_out_within_an_interval_to_what_its_capacity_leaves():
    guard, clock, changes = _guard()
    model = Model(capacity=100)
    for _ in range(3):
        model.interval(guard, clock, offered=50)
    assert changes == []  # half its capacity: nothing to do
    model.interval(guard, clock, offered=200)  # load doubles past capacity
    assert len(changes) == 1
    c = changes[0]
    assert (c.variant, c.target, c.before, c.kind) == ("big", "small", 0.0, "brownout")
    # It answered 100/s of the 200 offered: it keeps 80% of that capacity, 80 of 200.
    assert c.after == pytest.approx(0.6)
    assert c.figures["capacity_rps"] == pytest.approx(100) and c.figures["latency_s"] == 0.4
    assert "overloaded" in c.reason and "p99" in c.reason
    routed = model.interval(guard, clock, offered=200)
    assert 50 <= routed["big"] <= 95  # about 80: the callers below the fraction are diverted
    assert len(changes) == 1  # healthy at its new share: held, no flapping
    for _ in range(30):
        model.interval(guard, clock, offered=200)
    assert len(changes) == 1 and guard.states["big"].fraction == pytest.approx(0.6)


def test_when_load_falls_the_share_comes_back_after_a_healthy_hold():
    guard, clock, changes = _guard()
    model = Model(capacity=100)
    model.interval(guard, clock, offered=200)
    assert guard.states["big"].fraction > 0
    seconds = 0
    while guard.states["big"].fraction > 0:
        model.interval(guard, clock, offered=50)
        seconds += 1
        assert seconds < 30
    assert 4 <= seconds <= 6  # recover_s of healthy intervals, then all the way back at once
    assert changes[-1].kind == "recovery" and changes[-1].after == 0.0
    routed = model.interval(guard, clock, offered=50)
    assert routed == {"big": 50, "small": 0}


def test_an_interval_that_drains_a_backlog_does_not_make_the_variant_look_weaker():
    guard, clock, changes = _guard()
    model = Model(capacity=100)
    model.interval(guard, clock, offered=200)  # overloaded: 100/s answered
    model.capacity = 12  # the next interval answers a backlog's tail, late
    model.interval(guard, clock, offered=200)
    assert guard.states["big"].capacity_rps == 100
    model.capacity = 100
    seconds = 0
    while guard.states["big"].fraction > 0:
        model.interval(guard, clock, offered=50)
        seconds += 1
        assert seconds < 30
    assert changes[-1].after == 0.0  # all the way back, not stuck at a sliver


def test_a_share_given_back_too_early_doubles_the_next_hold():
    guard, clock, changes = _guard()
    model = Model(capacity=100)
    model.interval(guard, clock, offered=200)  # brownout at 60%
    for _ in range(6):
        model.interval(guard, clock, offered=50)  # recovered (hold 4 s)
    assert guard.states["big"].fraction == 0
    model.interval(guard, clock, offered=200)  # overloaded again right after giving the share back
    assert guard.states["big"].backoff == 1
    seconds = 0
    while guard.states["big"].fraction > 0:
        model.interval(guard, clock, offered=70)  # near its capacity: the edge it flapped at
        seconds += 1
    assert 8 <= seconds <= 10  # the hold doubled
    model.interval(guard, clock, offered=200)
    assert guard.states["big"].backoff == 2
    seconds = 0
    while guard.states["big"].fraction > 0:
        model.interval(guard, clock, offered=40)  # the burst is over: the plain hold
        seconds += 1
    assert 4 <= seconds <= 6


def test_raising_keeps_going_while_the_variant_stays_overloaded():
    guard, clock, changes = _guard()
    model = Model(capacity=100)
    model.interval(guard, clock, offered=110)
    first = guard.states["big"].fraction
    model.capacity = 40  # say, the cheaper variant now competes with it for the same cores
    model.interval(guard, clock, offered=110)
    model.interval(guard, clock, offered=110)
    assert guard.states["big"].fraction >= first + 0.2
    assert all(c.kind == "brownout" for c in changes)


def test_a_slow_variant_with_nothing_queued_is_not_browned_out():
    guard, clock, changes = _guard(min_requests=5)
    for _ in range(5):
        for i in range(10):
            guard.route("big", f"u{i}", lambda _k: True)
            guard.observe("big", 0.12)  # over the objective, but 10/s x 0.12 s = 1.2 in flight
        clock.advance(1.0)
        guard.decide(clock())
    assert changes == [] and guard.states["big"].fraction == 0


def test_too_few_answers_are_not_judged():
    guard, clock, changes = _guard(min_requests=50)
    Model(capacity=30).interval(guard, clock, offered=40)
    assert changes == []


def test_diversion_is_sticky_and_a_growing_fraction_only_adds_callers():
    guard, _clock, _ = _guard()
    users = [f"user-{i}" for i in range(2000)]
    guard.states["big"].fraction = 0.3
    at_30 = {u for u in users if guard.route("big", u, lambda _k: True)}
    assert {u for u in users if guard.route("big", u, lambda _k: True)} == at_30
    assert len(at_30) == pytest.approx(600, abs=80)
    guard.states["big"].fraction = 0.6
    at_60 = {u for u in users if guard.route("big", u, lambda _k: True)}
    assert at_30 < at_60
    assert guard.route("big", "user-1", lambda _k: False) is None  # target not ready: no diversion
    assert guard.route("small", "user-1", lambda _k: True) is None  # no plan for it


def test_with_the_guard_off_the_dataplane_keeps_nothing_per_call():
    cfg = parse_config(
        {"variants": {"stable": {"ref": "a@1"}}, "routing": {"stable": "stable", "weights": {"stable": 100}}}
    )
    dp = Dataplane(GatewayMetrics(MemorySink()), rng=random.Random(0))
    dp.configure(RouteTable.build(cfg, "rev1", dp.rng), {"stable": FakeVariant("stable", 0)})
    for _ in range(50):
        asyncio.run(dp.serve(dp.current(), ["t"], "r", pinned="stable"))
    assert not dp.guard.enabled and dp.guard._interval == {} and dp.guard._served == {}


def test_pinned_only_traffic_still_ends_the_guards_intervals():
    guard, clock, _ = _guard()
    for _ in range(100):
        guard.observe("big", 0.01)
        clock.advance(0.1)
    assert len(guard._interval["big"].latencies) <= 11


def test_the_expected_accuracy_is_the_answered_mix_weighted_by_registry_accuracy():
    guard, clock, _ = _guard()
    assert guard.expected_accuracy() is None
    for _ in range(3):
        guard.observe("big", 0.01)
    guard.observe("small", 0.01)
    assert guard.expected_accuracy() == pytest.approx((3 * 0.87 + 0.81) / 4)
    guard.observe("unknown", 0.01)  # no registry figure: left out
    assert guard.expected_accuracy() == pytest.approx((3 * 0.87 + 0.81) / 4)


def test_a_reconfigured_guard_keeps_a_brownout_whose_target_is_unchanged():
    guard, clock, _ = _guard()
    Model().interval(guard, clock, offered=200)
    fraction = guard.states["big"].fraction
    guard.configure(SloConfig(objective_s=0.2), {"big": "small"}, {})
    assert guard.states["big"].fraction == fraction
    guard.configure(SloConfig(objective_s=0.2), {"big": "other"}, {})
    assert guard.states["big"].fraction == 0
    guard.configure(SloConfig(), {}, {})
    assert not guard.enabled


# -- the plan ---------------------------------------------------------------------------------
def _plan_cfg(**slo):
    return parse_config(
        {
            "variants": {k: {"ref": f"{k}@1"} for k in ("teacher", "student", "tiny", "odd", "failed")},
            "routing": {"stable": "teacher", "weights": {"teacher": 100}},
            "slo": {"objective_s": 0.2, **slo},
        }
    )


OFFLINE = {
    "teacher": Offline(0.87, 100.0, True, LABELS),
    "student": Offline(0.85, 400.0, True, LABELS),
    "tiny": Offline(0.70, 900.0, True, LABELS),
    "odd": Offline(0.90, 5000.0, True, ("x", "y")),  # another label table
    "failed": Offline(0.88, 8000.0, False, LABELS),  # not deployable
}


def test_the_plan_takes_the_cheapest_deployable_variant_above_the_accuracy_floor():
    assert brownout_targets(_plan_cfg(), OFFLINE) == {"teacher": "tiny", "student": "tiny"}
    assert brownout_targets(_plan_cfg(accuracy_floor=0.8), OFFLINE) == {"teacher": "student"}
    assert brownout_targets(_plan_cfg(accuracy_floor=0.95), OFFLINE) == {}
    override = _plan_cfg(brownout_to={"teacher": "odd"}, accuracy_floor=0.8)
    assert brownout_targets(override, OFFLINE) == {"teacher": "odd"}
    assert brownout_targets(_plan_cfg(objective_s=None), OFFLINE) == {}


@pytest.mark.parametrize(
    ("brownout_to", "message"),
    [
        ({"teacher": "nope"}, "slo.brownout_to.teacher: 'nope' is not a configured variant"),
        ({"nope": "teacher"}, "slo.brownout_to.nope: 'nope' is not a configured variant"),
        ({"teacher": "teacher"}, "slo.brownout_to.teacher: 'teacher' cannot brown out to itself"),
    ],
)
def test_a_bad_brownout_target_is_refused_with_its_field_named(brownout_to, message):
    with pytest.raises(ConfigError, match=message):
        _plan_cfg(brownout_to=brownout_to)


def test_a_bad_objective_is_refused_with_its_field_named():
    with pytest.raises(ConfigError, match="slo.objective_s"):
        _plan_cfg(objective_s=-1.0)
    with pytest.raises(ConfigError, match="slo.quantile"):
        _plan_cfg(quantile="p50")


# -- in the dataplane -------------------------------------------------------------------------
def test_the_dataplane_routes_a_browned_out_share_to_the_target_and_says_so():
    cfg = parse_config(
        {
            "variants": {"stable": {"ref": "a@1"}, "cheap": {"ref": "b@1"}},
            "routing": {"stable": "stable", "weights": {"stable": 100}},
            "slo": {"objective_s": 0.1},
        }
    )
    sink = MemorySink()
    dp = Dataplane(GatewayMetrics(sink), rng=random.Random(0))
    clients = {"stable": FakeVariant("stable", 0), "cheap": FakeVariant("cheap", 1)}
    dp.configure(RouteTable.build(cfg, "rev1", dp.rng, {"stable": "cheap"}, {"stable": 0.9}), clients)
    dp.guard.states["stable"].fraction = 0.5
    served = [asyncio.run(dp.serve(dp.current(), ["t"], "r", sticky=f"u{i}")) for i in range(200)]
    routes = {(s.key, s.route) for s in served}
    assert routes == {("stable", "sticky"), ("cheap", "brownout")}
    assert sum(s.route == "brownout" for s in served) == pytest.approx(100, abs=25)
    pinned = asyncio.run(dp.serve(dp.current(), ["t"], "r", pinned="stable"))
    assert pinned.route == "pinned"  # a caller who names a variant gets it
