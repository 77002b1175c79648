"""The controller's record of the SLO guard: readings of its gauges turned into audit entries."""

from __future__ import annotations

from support import FakeClock
from support.controller import FakeGateway, FakeSource, controller_config

from serving.config import parse_config
from serving.controller.brownouts import FIGURES, FRACTION, BrownoutLog, Seen, read
from serving.controller.runner import Controller
from serving.controller.store import StateStore


def _cfg():
    data = controller_config().model_dump(mode="json")
    data["slo"] = {"objective_s": 0.25}
    return parse_config(data)


def _gauges(fractions, figures=()):
    return {
        FRACTION.name: [({"variant": v, "target": t, "replica": r}, f) for v, t, r, f in fractions],
        FIGURES.name: [({"variant": v, "figure": k, "replica": r}, x) for v, k, r, x in figures],
    }


def test_the_largest_share_over_router_replicas_is_read_with_that_replicas_figures():
    g = _gauges(
        [("canary", "stable", "r1", 0.2), ("canary", "stable", "r2", 0.6)],
        [("canary", "latency_s", "r1", 0.1), ("canary", "latency_s", "r2", 0.4)],
    )
    seen = read(lambda sel: g.get(sel.name, []))
    assert seen == {"canary": Seen("canary", "stable", 0.6, {"latency_s": 0.4})}


def test_a_brownout_its_moves_and_its_recovery_are_entries_and_small_moves_are_not():
    log, cfg = BrownoutLog(), _cfg()
    figures = {"latency_s": 0.61, "offered_rps": 200.0, "capacity_rps": 100.0}

    def at(fraction):
        return log.entries({"canary": Seen("canary", "stable", fraction, figures)}, cfg, 1.0)

    assert at(0.0) == []  # watched, never browned out
    (first,) = at(0.6)
    assert (first.actor, first.action, first.variant) == ("slo-guard", "brownout", "canary")
    assert first.signals["fraction_before"] == 0.0 and first.signals["fraction_after"] == 0.6
    assert first.signals["latency_s"] == 0.61 and first.signals["objective_s"] == 0.25
    assert "canary -> stable: 0% -> 60%" in first.reason and "p99 0.610s vs objective 0.25s" in first.reason
    assert first.weights_before == first.weights_after == {"stable": 100}
    assert at(0.65) == []  # within MIN_MOVE of the last entry
    assert [e.action for e in at(0.8)] == ["brownout"]
    assert [e.action for e in at(0.3)] == ["recovery"]
    (back,) = at(0.0)  # back to 0 is always recorded, however small the last step
    assert back.action == "recovery" and back.signals["fraction_after"] == 0.0
    assert log.entries({}, cfg, 2.0) == [] and log.last == {}


def test_the_controller_writes_the_guards_moves_to_the_audit_log_each_interval(tmp_path):
    src = FakeSource()
    ctl = Controller(FakeGateway(_cfg()), src, StateStore(tmp_path / "c.db"), clock=FakeClock())
    ctl.tick()
    src.gauges = _gauges([("canary", "stable", "r1", 0.5)], [("canary", "latency_s", "r1", 0.5)])
    ctl.tick()
    src.gauges = _gauges([("canary", "stable", "r1", 0.0)])
    ctl.tick()
    entries = [e for e in ctl.store.entries() if e.actor == "slo-guard"]
    assert [(e.action, e.signals["fraction_after"]) for e in entries] == [
        ("brownout", 0.5),
        ("recovery", 0.0),
    ]
    src.down = True
    ctl.tick()  # a source that is down records nothing (its intervals count it already)
    assert len([e for e in ctl.store.entries() if e.actor == "slo-guard"]) == 2
