"""A restarted gateway keeps the controller's decisions: a candidate rolled back before the restart
gets no traffic after it, though the config file still gives it 30% (and no request is routed to
it in between: the decision is in the config before anything is deployed)."""

from __future__ import annotations

from support.e2e import PORT, Gateway, serving

from serving.config import load_config, pin_refs
from serving.controller.candidate import Policy, revision_of
from serving.controller.decide import abort, track
from serving.controller.store import StateStore

TEXT = "a tall perennial woody plant having a main trunk and branches"


def test_a_restart_keeps_a_rolled_back_canary_out(registry_root, tmp_path):
    gw = Gateway(f"http://127.0.0.1:{PORT}", tmp_path, registry_root)
    config = gw.write_config()  # stable 70%, canary 30%
    assert load_config(config).routing.weights == {"stable": 70, "canary": 30}
    state = tmp_path / "controller.db"
    with StateStore(state) as store:  # what the controller left before the gateway stopped
        revision = revision_of(pin_refs(load_config(config)), "canary")
        tracked, _ = track(None, "canary", revision, Policy(), 0.0)
        rolled_back, _ = abort(tracked, 1.0)
        store.save(rolled_back)
    with serving(config, gw, "--state", str(state)):
        served = [gw.predict([TEXT], headers={"x-user-id": f"user-{i}"}) for i in range(40)]
        assert all(r.status_code == 200 for r in served)
        assert {r.json()["variant"] for r in served} == {"stable"}  # 30% of 40 users would be 12
    log = (tmp_path / "serve.log").read_text()
    assert f"variants.canary: its revision {revision} was rolled back by the controller" in log
