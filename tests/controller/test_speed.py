"""The speed gate: its rules (pure), its transitions in the step, and the controller applying it.

Fakes only: a fake clock, the fake gateway of ``support.controller``, a metrics source that reports
hand-set warm-up figures, and a lineage given as a function.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from support import FakeClock, TickingClock
from support.controller import FakeGateway, FakeSource

from serving.config import parse_config
from serving.controller.candidate import CandidateState, Phase, Policy, Promote, Record, SetWeight
from serving.controller.decide import promotes_next, step
from serving.controller.rules import Outcome, Rule
from serving.controller.runner import Controller
from serving.controller.service import descends_from
from serving.controller.signals import exported_name
from serving.controller.sources import EmbeddedSource, PrometheusSource
from serving.controller.speed import Hold, Speed, judge
from serving.controller.store import StateStore
from serving.metrics import REPLICA_HARDWARE, WARMUP_P50_SECONDS, WARMUP_THROUGHPUT

EPYC = ("AMD EPYC 7B13, 2 cores, flags avx2",)
FAST = Speed(0.010, 800.0, 1, EPYC)


# -- the rules ------------------------------------------------------------------------------------
def test_slower_p50_beyond_tolerance_is_held_with_the_figures_named():
    hold, figures = judge("int8", Speed(0.0129, 800.0, 1, EPYC), {"onnx": FAST}, 0.1)
    assert hold is not None and hold.key == "slower:onnx"
    assert "12.9 ms vs 10 ms (1.29x)" in hold.reason and "AMD EPYC" in hold.reason
    assert figures["verdict"] == "hold" and figures["tolerance"] == 0.1
    assert figures["candidate"]["int8"]["p50_s"] == 0.0129
    assert figures["references"]["onnx"]["hardware"] == list(EPYC)


def test_lower_throughput_beyond_tolerance_is_held():
    hold, _ = judge("int8", Speed(0.010, 700.0), {"onnx": FAST}, 0.1)
    assert hold is not None and "throughput 700/s vs 800/s" in hold.reason


def test_within_tolerance_passes():
    hold, figures = judge("int8", Speed(0.0109, 730.0), {"onnx": FAST}, 0.1)
    assert hold is None and figures["verdict"] == "pass"
    # Exactly zero tolerance: any slower is held, equal is not.
    assert judge("int8", FAST, {"onnx": FAST}, 0.0)[0] is None
    assert judge("int8", Speed(0.0101, 800.0), {"onnx": FAST}, 0.0)[0] is not None


def test_slower_than_either_reference_is_held_naming_each():
    parent, stable = Speed(0.008, 900.0), Speed(0.020, 300.0)
    hold, _ = judge("int8", FAST, {"parent": parent, "stable": stable}, 0.1)
    assert hold is not None and hold.key == "slower:parent" and "stable" not in hold.reason


def test_a_candidate_that_claims_nothing_is_not_held():
    assert judge("int8", None, {}, 0.1) == (None, {})


def test_unmeasured_candidate_or_references_are_held_as_not_measured():
    hold, _ = judge("int8", None, {"onnx": FAST}, 0.1)
    assert hold is not None and hold.key == "unmeasured" and "not measured on this hardware" in hold.reason
    hold, _ = judge("int8", FAST, {"onnx": None}, 0.1)
    assert hold is not None and hold.key == "unmeasured-reference"
    # One unmeasured reference among measured ones is left out of the comparison.
    assert judge("int8", FAST, {"onnx": None, "stable": FAST}, 0.1)[0] is None


def test_tolerance_is_checked():
    with pytest.raises(ValueError, match="tolerance"):
        judge("int8", FAST, {"onnx": FAST}, 11)


# -- the step -------------------------------------------------------------------------------------
POLICY = Policy(passes_per_step=1)
PASS = {"error_rate<=0.05": Outcome.PASS}
HOLD = Hold("slower:stable", "int8 measures slower", {"verdict": "hold"})


def _at(weight: int, **kw) -> CandidateState:
    return CandidateState("int8", "r1", Phase.PROGRESSING, 2, weight, since=0.0, **kw)


def test_promotes_next_only_at_the_last_step_below_100():
    assert [promotes_next(_at(w), POLICY) for w in (0, 5, 25, 50)] == [False, False, False, True]


def test_a_hold_stops_promotion_keeps_the_weight_and_records_once():
    s, actions = step(_at(50), PASS, POLICY, 10.0, hold=HOLD)
    assert s.phase is Phase.PROGRESSING and s.weight == 50 and s.held == "slower:stable"
    assert "held before promotion: int8 measures slower" in s.last_reason
    assert [type(a) for a in actions] == [Record]
    assert actions[0].event == "hold" and actions[0].detail["signals"] == {"speed_gate": {"verdict": "hold"}}
    assert actions[0].detail["weight_after"] == 50
    # The next interval, held for the same reason: no second entry.
    s2, actions2 = step(s, PASS, POLICY, 15.0, hold=HOLD)
    assert actions2 == [] and s2.held == "slower:stable" and s2.consecutive_passes == 2
    # Held for another reason: news, recorded.
    other = Hold("unmeasured", "int8 is not measured on this hardware yet")
    _, actions3 = step(s2, PASS, POLICY, 20.0, hold=other)
    assert [a.event for a in actions3 if isinstance(a, Record)] == ["hold"]


def test_the_hold_lifting_promotes_on_the_next_passing_interval():
    s, _ = step(_at(50), PASS, POLICY, 10.0, hold=HOLD)
    s, actions = step(s, PASS, POLICY, 15.0, hold=None)
    assert s.phase is Phase.PROMOTED and s.held == ""
    assert any(isinstance(a, Promote) for a in actions)


def test_a_held_candidate_is_still_rolled_back_on_failures():
    s, _ = step(_at(50), PASS, POLICY, 10.0, hold=HOLD)
    fail = {"error_rate<=0.05": Outcome.FAIL}
    s, _ = step(s, fail, POLICY, 15.0, hold=HOLD)
    s, actions = step(s, fail, POLICY, 20.0, hold=HOLD)
    assert s.phase is Phase.ROLLED_BACK and any(isinstance(a, SetWeight) and a.weight == 0 for a in actions)


def test_a_hold_does_not_stop_canary_steps():
    s, actions = step(_at(5), PASS, POLICY, 10.0, hold=HOLD)
    assert s.weight == 25 and [a.event for a in actions if isinstance(a, Record)] == ["advance"]


# -- the controller -------------------------------------------------------------------------------
class SpeedSource(FakeSource):
    def __init__(self):
        super().__init__()
        self.speeds: dict[str, Speed | None] = {}
        self.asked: list[str] = []

    def speed(self, variant):
        self.asked.append(variant)
        return self.speeds.get(variant)


def _cfg(gate=None):
    data = {
        "variants": {"stable": {"ref": "teacher-onnx@1"}, "canary": {"ref": "teacher-int8@1"}},
        "routing": {"stable": "stable", "weights": {"stable": 100}},
        "shadow": {"variants": ["canary"], "fraction": 0.5},
        "rollout": {"passes_per_step": 1, **({"speed_gate": gate} if gate is not None else {})},
    }
    return parse_config(data)


def _controller(tmp_path, cfg, claims=("stable",)):
    gw, src = FakeGateway(cfg), SpeedSource()
    ctl = Controller(
        gw,
        src,
        StateStore(tmp_path / "state.db"),
        rules_for=lambda _c, _k: [Rule(signal="error_rate", max=0.05)],
        claims_for=lambda _c, _k: list(claims),
        clock=TickingClock(),
    )
    return gw, src, ctl


def _run(ctl, ticks=8):
    for _ in range(ticks):
        ctl.tick()
    return ctl.store.load("canary")


def test_a_slower_descendant_is_held_at_the_last_canary_step_with_one_audited_hold(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg())
    src.speeds = {"canary": Speed(0.0129, 620.0, 2, EPYC), "stable": FAST}
    state = _run(ctl)
    assert state.phase is Phase.PROGRESSING and state.weight == 50 and state.held == "slower:stable"
    assert gw.cfg.routing.stable == "stable"
    actions = [e.action for e in ctl.store.entries()]
    assert actions == ["track", "advance", "advance", "advance", "hold"]
    hold = ctl.store.entries()[-1]
    # The audit keeps the figures beside the rule evidence, and names them in its reason.
    assert hold.signals["speed_gate"]["candidate"]["canary"]["p50_s"] == 0.0129
    assert hold.signals["speed_gate"]["references"]["stable"]["texts_per_s"] == 800.0
    assert "error_rate<=0.05" in hold.signals and "1.29x" in hold.reason
    # The gate was asked only where it could matter: before promotion, not at earlier steps.
    assert src.asked.count("canary") == 5


def test_a_descendant_measured_fast_enough_is_promoted(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg())
    src.speeds = {"canary": Speed(0.005, 1500.0), "stable": FAST}
    assert _run(ctl).phase is Phase.PROMOTED and gw.cfg.routing.stable == "canary"


def test_the_gate_does_not_apply_to_a_candidate_that_descends_from_no_configured_variant(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg(), claims=())
    src.speeds = {"canary": Speed(1.0, 1.0), "stable": FAST}
    assert _run(ctl).phase is Phase.PROMOTED and src.asked == []


def test_the_gate_disabled_by_config_holds_nothing(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg({"enabled": False}))
    src.speeds = {"canary": Speed(1.0, 1.0), "stable": FAST}
    assert _run(ctl).phase is Phase.PROMOTED and src.asked == []


def test_the_tolerance_comes_from_config(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg({"tolerance": 0.5}))
    src.speeds = {"canary": Speed(0.0129, 620.0), "stable": FAST}
    assert _run(ctl).phase is Phase.PROMOTED


def test_an_unmeasured_descendant_is_held_until_measured(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg())
    src.speeds = {"stable": FAST}
    state = _run(ctl)
    assert state.held == "unmeasured" and "not measured on this hardware yet" in state.last_reason
    src.speeds["canary"] = Speed(0.009, 900.0)
    assert _run(ctl, 1).phase is Phase.PROMOTED


def test_an_operator_promote_overrides_the_hold_and_audits_what_it_overrode(tmp_path):
    gw, src, ctl = _controller(tmp_path, _cfg())
    src.speeds = {"canary": Speed(0.0129, 620.0, 1, EPYC), "stable": FAST}
    _run(ctl)
    state = ctl.operate("canary", "promote", actor="alice")
    assert state.phase is Phase.PROMOTED and gw.cfg.routing.stable == "canary"
    last = ctl.store.entries()[-1]
    assert last.action == "promote" and last.actor == "alice"
    assert "overriding the speed gate" in last.reason
    assert last.signals["speed_gate"]["verdict"] == "hold"


def test_a_configured_parent_is_the_reference_and_an_unrelated_stable_is_not(tmp_path):
    cfg = parse_config(
        {
            "variants": {
                "stable": {"ref": "teacher-onnx@1"},
                "parent": {"ref": "student@1"},
                "canary": {"ref": "student-int8@1"},
            },
            "routing": {"stable": "stable", "weights": {"stable": 100}},
            "shadow": {"variants": ["canary"], "fraction": 0.5},
            "rollout": {"passes_per_step": 1},
        }
    )
    gw, src, ctl = _controller(tmp_path, cfg, claims=("parent",))
    # Slower than the parent it was quantised from: held, whatever the unrelated stable measures.
    src.speeds = {"canary": Speed(0.006, 1000.0), "stable": FAST, "parent": Speed(0.003, 2000.0)}
    state = _run(ctl)
    assert state.held == "slower:parent" and set(src.asked) == {"canary", "parent"}


# -- the lineage ------------------------------------------------------------------------------------
def test_descends_from_follows_the_registry_lineage_transitively():
    manifests = {
        "teacher-onnx@1": ("teacher-onnx@1", ("teacher@1",)),
        "teacher-int8@1": ("teacher-int8@1", ("teacher-onnx@1",)),
        "student-int8": ("student-int8@2", ("student@1",)),  # a versionless ref resolves
        "student@1": ("student@1", ("teacher-onnx@1",)),
        "other@1": ("other@1", ()),
    }
    cfg = parse_config(
        {
            "variants": {
                k: {"ref": r}
                for k, r in [
                    ("onnx", "teacher-onnx@1"),
                    ("int8", "teacher-int8@1"),
                    ("si8", "student-int8"),
                    ("other", "other@1"),
                ]
            },
            "routing": {"stable": "onnx"},
        }
    )
    assert descends_from(cfg, "int8", manifests.get) == ["onnx"]
    assert descends_from(cfg, "si8", manifests.get) == ["onnx"]
    assert descends_from(cfg, "other", manifests.get) == []
    assert descends_from(cfg, "onnx", manifests.get) == []
    # Unregistered: claims nothing.
    assert descends_from(cfg, "int8", lambda _ref: None) == []


# -- the sources ------------------------------------------------------------------------------------
def _exposition() -> str:
    reg = CollectorRegistry()
    for spec, values in ((WARMUP_P50_SECONDS, (0.010, 0.012)), (WARMUP_THROUGHPUT, (800.0, 700.0))):
        g = Gauge(exported_name(spec.name), spec.help, [*spec.labels, "WorkerId"], registry=reg)
        for i, v in enumerate(values):
            g.labels(variant="canary", replica=f"r{i}", WorkerId=f"w{i}").set(v)
        g.labels(variant="stable", replica="s0", WorkerId="w9").set(1.0)
    hw = Gauge(
        exported_name(REPLICA_HARDWARE.name), "hw", [*REPLICA_HARDWARE.labels, "WorkerId"], registry=reg
    )
    for i in range(2):
        hw.labels(
            variant="canary", replica=f"r{i}", hardware=EPYC[0], flags="avx2", device="cpu", WorkerId="w"
        ).set(1)
    return generate_latest(reg).decode()


def test_the_embedded_source_reads_the_slowest_replicas_figures():
    src = EmbeddedSource(_exposition, FakeClock(0.0))
    src.scrape()
    assert src.speed("canary") == Speed(0.012, 700.0, 2, EPYC)
    assert src.speed("absent") is None


def test_the_prometheus_source_reads_the_same_from_its_series():
    text = _exposition()

    class Answering(PrometheusSource):
        def query(self, expr, at=None):
            from serving.controller.signals import Selector
            from serving.controller.sources import parse_exposition

            name, rest = expr.split("{", 1)
            variant = rest.split('"')[1]
            sel = Selector(name, (("variant", "=", variant),))
            return [
                (dict(k[1]), v) for k, v in parse_exposition(text).items() if sel.matches(k[0], dict(k[1]))
            ]

    assert Answering("http://prometheus:9090").speed("canary") == Speed(0.012, 700.0, 2, EPYC)
