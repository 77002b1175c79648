"""The controller loop with hand-written fakes for the gateway and the metrics source."""

from __future__ import annotations

import pytest
from support import TickingClock as Clock
from support.controller import FakeGateway, FakeSource
from support.controller import controller_config as _cfg

from serving.config import parse_config
from serving.controller.candidate import InvalidTransition, Phase, Policy, Promote, Rollback, SetWeight
from serving.controller.rules import Rule
from serving.controller.runner import Controller, candidates, reweigh
from serving.controller.store import StateStore


@pytest.fixture
def setup(tmp_path):
    gw, src = FakeGateway(_cfg()), FakeSource()
    ctl = Controller(
        gw,
        src,
        StateStore(tmp_path / "state.db"),
        Policy(passes_per_step=1),
        rules_for=lambda _c, _k: [Rule(signal="error_rate", max=0.05)],
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
    assert last.action == "rollback" and last.weights_after["canary"] == 0
    # The values behind the verdict are kept: what the candidate showed and what stable did.
    assert last.signals["error_rate<=0.05"] == {
        "outcome": "fail",
        "value": 0.5,
        "samples": 100,
        "stable": 0.0,
    }
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
        rules_for=lambda _c, _k: [Rule(signal="error_rate", max=0.05)],
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


def _from_config(tmp_path, cfg, src, **kw):
    """A controller taking its policy from the gateway config (as `slimgate controller run` does)."""
    return Controller(
        FakeGateway(cfg),
        src,
        StateStore(tmp_path / "cfg.db"),
        rules_for=lambda _c, _k: [Rule(signal="error_rate", max=0.05)],
        clock=Clock(),
        **kw,
    )


def _with(cfg, **sections):
    data = cfg.model_dump(mode="json")
    for path, value in sections.items():
        node = data
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse_config(data)


def test_policy_comes_from_the_config_rollout_section(tmp_path):
    cfg = _with(_cfg(), rollout={"steps": [10, 100], "passes_per_step": 1, "window_s": 12.5})
    windows = []

    class Recording(FakeSource):
        def measure(self, variant, signals, window_s, reference):
            windows.append(window_s)
            return super().measure(variant, signals, window_s, reference)

    ctl = _from_config(tmp_path, cfg, Recording())
    assert ctl.tick()["canary"].weight == 10
    assert ctl.tick()["canary"].phase is Phase.PROMOTED
    # Stable is always judged on the whole window; the freshly tracked candidate only on the time
    # since one interval before it was tracked, and on at least two intervals.
    assert windows == [10.0, 12.5, 10.0, 12.5]


def test_non_progressive_candidate_is_judged_and_rolled_back_but_never_advanced(tmp_path):
    cfg = _with(
        _cfg({"stable": 90, "canary": 10}),
        variants__canary__progressive=False,
        rollout={"passes_per_step": 1},
    )
    src = FakeSource()
    outcomes = []
    ctl = _from_config(tmp_path, cfg, src, on_interval=lambda key, o: outcomes.append(o))
    for _ in range(4):
        assert ctl.tick()["canary"].weight == 10  # passing intervals, but it stays where the config put it
    src.error_rate["canary"] = 0.5
    ctl.tick()
    assert ctl.tick()["canary"].phase is Phase.ROLLED_BACK
    assert outcomes == ["pass"] * 4 + ["fail"] * 2
    assert ctl.gateway.cfg.routing.weights["canary"] == 0


def test_interval_outcomes_and_audit_entries_are_reported(setup):
    gw, src, ctl = setup
    outcomes, records = [], []
    ctl.on_interval = lambda key, o: outcomes.append((key, o))
    ctl.on_record = records.append
    ctl.tick()
    src.down = True
    ctl.tick()
    assert outcomes == [("canary", "pass"), ("canary", "source_error")]
    assert [r.action for r in records] == ["track", "advance"]
    # Each entry names the config revision the change produced.
    from serving.config import config_revision

    assert records[-1].config_revision == config_revision(gw.cfg)


def test_config_change_made_outside_the_controller_is_audited(setup):
    gw, _src, ctl = setup
    ctl.tick()  # the controller sets 5% and remembers the revision it produced
    before = dict(gw.cfg.routing.weights)
    gw.cfg = _cfg({"stable": 70, "canary": 30})  # e.g. `helm upgrade` or Ray's REST API directly
    ctl.tick()
    change = next(e for e in ctl.store.entries() if e.action == "config-change")
    assert change.actor == "unknown" and change.weights_before == before
    assert change.weights_after == {"stable": 70, "canary": 30}
    ctl.tick()  # noticed once, not every tick
    assert [e.action for e in ctl.store.entries()].count("config-change") == 1


def test_a_move_the_config_forbids_is_held_not_crashed(tmp_path):
    # A shadow may take longer than a served request; serving traffic it could not, so the
    # config with it at any weight is invalid: the controller holds it, an operator is refused.
    cfg = _with(
        _cfg(),
        variants__canary__timeout_s=20.0,
        limits={"request_timeout_s": 10.0},
        rollout={"passes_per_step": 1},
    )
    ctl = _from_config(tmp_path, cfg, FakeSource())
    state = ctl.tick()["canary"]
    assert state.weight == 0 and "held: the config does not allow SetWeight" in state.last_reason
    assert "timeout_s" in state.last_reason and ctl.gateway.applied == []
    with pytest.raises(InvalidTransition, match="does not allow Promote"):
        ctl.operate("canary", "promote")
    assert ctl.gateway.cfg == cfg and [e.action for e in ctl.store.entries()] == ["track"]
