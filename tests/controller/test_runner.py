"""The controller loop with hand-written fakes for the gateway and the metrics source."""

from __future__ import annotations

import pytest

from serving.config import parse_config
from serving.controller.decide import InvalidTransition, Phase, Policy, Promote, Rollback, SetWeight
from serving.controller.rules import Measurement, Rule
from serving.controller.runner import Controller, candidates, reweigh
from serving.controller.sources import SourceError
from serving.controller.store import StateStore


def _cfg(weights=None, shadow=("canary",)):
    return parse_config(
        {
            "variants": {"stable": {"ref": "student-int8@1"}, "canary": {"ref": "student-int8-qat@1"}},
            "routing": {"stable": "stable", "weights": weights or {"stable": 100}},
            "shadow": {"variants": list(shadow), "fraction": 0.5},
        }
    )


class FakeGateway:
    def __init__(self, cfg):
        self.cfg = cfg
        self.applied = []

    def current(self):
        return self.cfg

    def apply(self, cfg):
        self.applied.append(cfg)
        self.cfg = cfg


class FakeSource:
    def __init__(self):
        self.error_rate = {"canary": 0.0, "stable": 0.0}
        self.down = False

    def measure(self, variant, signals, window_s, reference):
        if self.down:
            raise SourceError("prometheus unreachable")
        return {"error_rate": Measurement(self.error_rate[variant], 100)}


class Clock:
    t = 1000.0

    def __call__(self):
        self.t += 5
        return self.t


@pytest.fixture
def setup(tmp_path):
    gw, src = FakeGateway(_cfg()), FakeSource()
    ctl = Controller(
        gw,
        src,
        StateStore(tmp_path / "state.db"),
        Policy(passes_per_step=1),
        rules_for=lambda _k: [Rule(signal="error_rate", max=0.05)],
        clock=Clock(),
    )
    return gw, src, ctl


def test_reweigh_keeps_the_split_whole():
    cfg = _cfg({"stable": 95, "canary": 5})
    assert reweigh(cfg, SetWeight("canary", 25, "r")).routing.weights == {"stable": 75, "canary": 25}
    rolled = reweigh(cfg, Rollback("canary", "r"))
    assert rolled.routing.weights == {"stable": 100, "canary": 0} and rolled.shadow.variants == []
    promoted = reweigh(cfg, Promote("canary", "r"))
    assert promoted.routing.stable == "canary" and promoted.routing.weights == {"stable": 0, "canary": 100}


def test_candidates_are_non_stable_variants_with_traffic_or_shadow():
    assert candidates(_cfg()) == ["canary"]
    assert candidates(_cfg(shadow=())) == []


def test_healthy_candidate_is_promoted_step_by_step(setup):
    gw, _src, ctl = setup
    seen = []
    for _ in range(6):
        state = ctl.tick().get("canary")
        if state:
            seen.append(state.weight)
    assert seen[:4] == [5, 25, 50, 100]
    assert gw.cfg.routing.stable == "canary"
    actions = [e.action for e in ctl.store.entries()]
    assert actions == ["track", "advance", "advance", "advance", "promote"]


def test_failing_candidate_is_rolled_back_traffic_first_and_stays_out(setup):
    gw, src, ctl = setup
    ctl.tick()  # 5%
    src.error_rate["canary"] = 0.5
    ctl.tick()
    ctl.tick()  # second failing interval: rollback
    assert gw.cfg.routing.weights["canary"] == 0 and "canary" not in gw.cfg.shadow.variants
    assert ctl.store.load("canary").phase is Phase.ROLLED_BACK
    last = ctl.store.entries()[-1]
    assert last.action == "rollback" and last.weights_after["canary"] == 0 and last.signals
    # Metrics recover, the operator puts the same revision back in the shadow: it stays out.
    src.error_rate["canary"] = 0.0
    gw.cfg = _cfg()
    ctl.tick()
    assert gw.cfg.routing.weights.get("canary", 0) == 0
    assert ctl.store.load("canary").phase is Phase.ROLLED_BACK


def test_unreachable_source_freezes_and_never_promotes(setup):
    gw, src, ctl = setup
    ctl.tick()  # 5%
    src.down = True
    for _ in range(5):
        ctl.tick()
    state = ctl.store.load("canary")
    assert state.phase is Phase.FROZEN and state.weight == 5
    assert gw.cfg.routing.weights["canary"] == 5


def test_state_survives_a_controller_restart(setup, tmp_path):
    gw, src, ctl = setup
    ctl.tick()
    again = Controller(
        gw,
        src,
        StateStore(tmp_path / "state.db"),
        Policy(passes_per_step=1),
        rules_for=lambda _k: [Rule(signal="error_rate", max=0.05)],
        clock=Clock(),
    )
    assert again.tick()["canary"].weight == 25  # continues from 5%, not from scratch


def test_operator_commands_and_rollback_wins(setup):
    gw, src, ctl = setup
    ctl.tick()  # 5%
    assert ctl.operate("canary", "pause").phase is Phase.PAUSED
    ctl.tick()
    assert ctl.store.load("canary").weight == 5  # paused: not advanced on a passing interval
    assert ctl.operate("canary", "resume").phase is Phase.PROGRESSING
    assert ctl.operate("canary", "abort").phase is Phase.ROLLED_BACK
    assert gw.cfg.routing.weights["canary"] == 0
    # A promote racing after the rollback is refused: rollback wins, the state stays consistent.
    with pytest.raises(InvalidTransition, match="rolled_back"):
        ctl.operate("canary", "promote")
    actors = [(e.actor, e.action) for e in ctl.store.entries()][-3:]
    assert actors == [("operator", "pause"), ("operator", "resume"), ("operator", "rollback")]


def test_operator_promote_makes_the_candidate_stable(setup):
    gw, _src, ctl = setup
    assert ctl.operate("canary", "promote").phase is Phase.PROMOTED
    assert gw.cfg.routing.stable == "canary"
    with pytest.raises(InvalidTransition, match="not a candidate"):
        ctl.operate("canary", "pause")  # it is the stable variant now
