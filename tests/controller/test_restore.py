"""A restarted gateway starts with the controller's last decisions, not the file's weights."""

from __future__ import annotations

from support.controller import controller_config

from serving.controller.candidate import Policy, revision_of
from serving.controller.decide import abort, track
from serving.controller.restore import restored
from serving.controller.store import StateStore

FILE = controller_config(weights={"stable": 70, "canary": 30})


def test_a_rolled_back_revision_gets_no_traffic_and_no_mirror_whatever_the_file_says(tmp_path):
    with StateStore(tmp_path / "state.db") as store:
        state, _ = track(None, "canary", revision_of(FILE, "canary"), Policy(), 100.0, weight=30)
        state, _ = abort(state, 101.0)
        store.save(state)
        cfg, lines = restored(FILE, store)
    assert cfg.routing.weights == {"stable": 100, "canary": 0}
    assert "canary" not in cfg.shadow.variants
    assert len(lines) == 1 and "rolled back" in lines[0] and revision_of(FILE, "canary") in lines[0]


def test_a_candidate_being_stepped_keeps_the_weight_the_controller_last_set(tmp_path):
    with StateStore(tmp_path / "state.db") as store:
        state, _ = track(None, "canary", revision_of(FILE, "canary"), Policy(), 100.0, weight=5)
        store.save(state)
        cfg, lines = restored(FILE, store)
        assert cfg.routing.weights == {"stable": 95, "canary": 5} and "5%" in lines[0]

        # A new revision in the file is a new candidate: its weights are the file's.
        edited = controller_config(weights={"stable": 70, "canary": 30}).model_dump(mode="json")
        edited["variants"]["canary"]["ref"] = "student-int8-static@1"
        from serving.config import parse_config

        new = parse_config(edited)
        assert restored(new, store) == (new, [])


def test_without_decisions_the_file_serves_as_written(tmp_path):
    with StateStore(tmp_path / "state.db") as store:
        assert restored(FILE, store) == (FILE, [])
