"""The controller's admin API over real HTTP (the gateway behind it is the runner tests' fake)."""

from __future__ import annotations

import httpx
import pytest
from support import TickingClock as Clock
from support.controller import FakeGateway, FakeSource
from support.controller import controller_config as _cfg

from serving.controller.api import ControllerAPI
from serving.controller.candidate import Policy
from serving.controller.rules import Rule
from serving.controller.runner import Controller
from serving.controller.service import ControllerMetrics
from serving.controller.store import StateStore

TOKEN = "test-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMGATE_ADMIN_TOKEN", TOKEN)
    metrics = ControllerMetrics()
    ctl = Controller(
        FakeGateway(_cfg({"stable": 95, "canary": 5})),
        FakeSource(),
        StateStore(tmp_path / "state.db"),
        Policy(passes_per_step=1),
        rules_for=lambda _c, _k: [Rule(signal="error_rate", max=0.05)],
        clock=Clock(),
        on_record=metrics.record,
        on_interval=metrics.interval,
    )
    server = ControllerAPI(ctl, metrics).start()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        yield ctl, client
    server.close()
    ctl.store.close()


def test_admin_api_needs_the_token(api):
    _ctl, client = api
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic x"}):
        r = client.post("/admin/candidates/canary/promote", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"
    assert client.get("/admin/audit").status_code == 401


def test_admin_api_without_a_configured_token_is_disabled(api, monkeypatch):
    monkeypatch.delenv("SLIMGATE_ADMIN_TOKEN")
    _ctl, client = api
    r = client.post("/admin/candidates/canary/abort", headers=AUTH)
    assert r.status_code == 401 and r.json()["error"]["code"] == "admin_disabled"
    assert "SLIMGATE_ADMIN_TOKEN" in r.json()["error"]["message"]


def test_abort_by_api_rolls_back_and_is_audited_with_the_actor(api):
    ctl, client = api
    r = client.post("/admin/candidates/canary/abort", headers=AUTH, json={"actor": "alice"})
    assert r.status_code == 200 and r.json()["candidate"]["phase"] == "rolled_back"
    assert ctl.gateway.cfg.routing.weights["canary"] == 0
    entries = client.get("/admin/audit", headers=AUTH, params={"limit": 5}).json()["entries"]
    assert (entries[-1]["actor"], entries[-1]["action"]) == ("api:alice", "rollback")
    # The rollback wins over a later promote, which is refused as a conflict, not a server error.
    r = client.post("/admin/candidates/canary/promote", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    # ...and the operator's rollback is counted in the controller's metrics.
    text = client.get("/metrics").text
    assert 'slimgate_controller_rollbacks_total{actor="operator",variant="canary"} 1.0' in text


def test_promote_pause_resume_by_api(api):
    ctl, client = api
    assert (
        client.post("/admin/candidates/canary/pause", headers=AUTH).json()["candidate"]["phase"] == "paused"
    )
    assert client.post("/admin/candidates/canary/resume", headers=AUTH).status_code == 200
    r = client.post("/admin/candidates/canary/promote", headers=AUTH)
    assert r.status_code == 200 and ctl.gateway.cfg.routing.stable == "canary"
    states = client.get("/admin/candidates", headers=AUTH).json()["candidates"]
    assert [(s["variant"], s["phase"]) for s in states] == [("canary", "promoted")]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/admin/candidates/nope/promote", {}, 404, "not_a_candidate"),
        ("post", "/admin/candidates/stable/abort", {}, 404, "not_a_candidate"),
        ("post", "/admin/candidates/canary/explode", {}, 404, "not_found"),
        ("get", "/admin/candidates/canary/promote", {}, 405, "method_not_allowed"),
        ("post", "/admin/candidates/canary/pause", {"content": b"{not json"}, 400, "invalid_json"),
        ("post", "/admin/candidates/canary/pause", {"json": {"actor": 7}}, 400, "invalid_field"),
        ("post", "/admin/candidates/canary/pause", {"content": b"x" * 5000}, 413, "body_too_large"),
        ("get", "/admin/audit?limit=-3", {}, 400, "invalid_field"),
        ("get", "/nowhere", {}, 404, "not_found"),
    ],
)
def test_bad_requests_get_clear_4xx_and_change_nothing(api, method, path, kwargs, status, code):
    ctl, client = api
    before = ctl.gateway.cfg
    r = getattr(client, method)(path, headers=AUTH, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert ctl.gateway.cfg == before and ctl.store.entries() == []


def test_metrics_and_health_need_no_token(api):
    ctl, client = api
    ctl.tick()
    assert client.get("/healthz").json() == {"ok": True}
    text = client.get("/metrics").text
    assert 'slimgate_controller_intervals_total{outcome="pass",variant="canary"} 1.0' in text
    assert 'slimgate_controller_promotions_total{actor="controller",variant="canary"} 1.0' in text
