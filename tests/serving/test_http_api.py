"""The HTTP surface over the dataplane, with exact status codes and error bodies (no Ray)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import tritonclient.http as httpclient
from starlette.requests import Request
from starlette.testclient import TestClient
from support import INTERNALS, LABELS, FakeVariant, MemorySink

from serving.admission import AdmissionControl
from serving.config import parse_config
from serving.dataplane import Dataplane, RouteTable
from serving.errors_and_auth import AdminToken
from serving.http_api import HttpApi
from serving.metrics_recording import GatewayMetrics

TOKEN = "s3cret"


def _config(**admission):
    return parse_config(
        {
            "variants": {"stable": {"ref": "a@1"}, "canary": {"ref": "b@1"}},
            "routing": {
                "stable": "stable",
                "weights": {"stable": 50, "canary": 50},
                "sticky_key": {"header": "x-user-id"},
            },
            "limits": {"max_inputs": 4, "max_chars": 50, "max_body_bytes": 16384},
            "admission": {"max_in_flight": 8, **admission},
        }
    )


class App:
    """HttpApi behind a Starlette-compatible ASGI callable, as Ray's ingress calls it."""

    def __init__(self, cfg=None, stable=None, canary=None) -> None:
        cfg = cfg or _config()
        self.sink = MemorySink()
        metrics = GatewayMetrics(self.sink)
        self.dp = Dataplane(metrics, rng=random.Random(0))
        self.variants = {
            "stable": stable or FakeVariant("stable", 0),
            "canary": canary or FakeVariant("canary", 1),
        }
        self.dp.configure(RouteTable.build(cfg, "rev1", self.dp.rng), self.variants)
        self.admission = AdmissionControl(cfg.admission)
        self.api = HttpApi(
            self.dp,
            self.admission,
            metrics,
            admin_token=lambda: AdminToken(TOKEN, "SLIMGATE_ADMIN_TOKEN"),
            admin_state=lambda: {"variants": {}},
        )

    async def __call__(self, scope, receive, send):
        response = await self.api.handle(Request(scope, receive))
        await response(scope, receive, send)


@pytest.fixture
def app():
    return App()


@pytest.fixture
def client(app):
    return TestClient(app)


def test_predict_answers_with_variant_route_and_top_k(client):
    r = client.post(
        "/v1/predict", json={"inputs": ["a tree", "a cat"], "top_k": 2}, headers={"x-user-id": "u1"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["route"] == "sticky" and body["variant"] in ("stable", "canary")
    assert (
        r.headers["x-slimgate-variant"] == body["variant"]
        and r.headers["x-slimgate-config-revision"] == "rev1"
    )
    out = body["outputs"][0]
    assert len(body["outputs"]) == 2 and len(out["top_k"]) == 2 and out["label"] in LABELS
    assert out["top_k"][0]["probability"] >= out["top_k"][1]["probability"]
    assert r.headers["x-request-id"] == body["request_id"]
    chosen = client.post("/v1/predict", json={"inputs": ["x"]}, headers={"x-request-id": "mine-1"})
    assert chosen.json()["request_id"] == "mine-1"


BAD = [
    ("malformed JSON", b'{"inputs": [', {}, 400, "malformed_json"),
    ("nested too deep", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400, "malformed_json"),
    ("not UTF-8", b'{"inputs": ["\xff\xfe"]}', {}, 400, "invalid_encoding"),
    ("empty body", b"", {}, 400, "empty_body"),
    ("not an object", b'["a"]', {}, 422, "invalid_body"),
    ("missing inputs", b'{"texts": ["a"]}', {}, 422, "missing_field"),
    ("too many inputs", b'{"inputs": ["a","b","c","d","e"]}', {}, 422, "too_many_inputs"),
    ("bad top_k", b'{"inputs": ["a"], "top_k": 0}', {}, 422, "invalid_field"),
    ("oversized body", b'{"inputs": ["' + b"x" * 20000 + b'"]}', {}, 413, "body_too_large"),
    ("unknown pin", b'{"inputs": ["a"]}', {"x-slimgate-variant": "ghost"}, 400, "unknown_variant"),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_named_4xx(client, case, body, headers, status, code):
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json", **headers})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_unknown_routes_and_methods(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json() == {
        "error": {"code": "not_found", "message": "no such endpoint: GET /v1/nope"}
    }
    r = client.get("/v1/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"  # RFC 9110: a 405 names what the path allows
    r = client.get("/v2/models/slimgate/infer")
    assert r.status_code == 405 and "error" in r.json() and isinstance(r.json()["error"], str)
    assert r.headers["allow"] == "POST"
    for path in ("/v2/health/live", "/v2/models/slimgate", "/v2/models/slimgate/versions/1/ready"):
        r = client.request("TRACE", path)
        assert r.status_code == 405 and r.headers["allow"] == "GET", path


def test_the_server_metadata_path_answers_with_its_trailing_slash(client):
    plain, slashed = client.get("/v2"), client.get("/v2/")
    assert plain.status_code == slashed.status_code == 200 and plain.json() == slashed.json()
    from importlib.metadata import version

    assert plain.json() == {
        "name": "slimgate",
        "version": version("slimgate"),  # the installed package's, not a literal
        "extensions": ["binary_tensor_data", "model_configuration"],
    }


def test_v2_errors_use_the_protocols_shape(client):
    r = client.get("/v2/models/ghost")
    assert r.status_code == 404
    assert r.json() == {"error": "model 'ghost' not found (known: slimgate, canary, stable)"}
    r = client.post("/v2/models/slimgate/infer", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


def test_v2_metadata_ready_and_infer_json(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models").json() == {"models": ["slimgate", "canary", "stable"]}
    meta = client.get("/v2/models/canary").json()
    assert meta["name"] == "canary" and meta["versions"] == ["1"] and meta["outputs"][1]["shape"] == [-1, 3]
    # The task's label table, in the order of the probabilities' columns (a map of strings).
    assert json.loads(meta["properties"]["labels"]) == list(LABELS)
    assert client.get("/v2/models/canary/versions/1/ready").json() == {"name": "canary", "ready": True}
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a tree"]}]}
    r = client.post("/v2/models/canary/infer", json=body)
    assert r.status_code == 200 and r.headers["x-slimgate-variant"] == "canary"
    assert r.json()["outputs"][0]["data"] == [LABELS[1]] and r.json()["model_version"] == "1"


def test_the_model_configuration_is_what_triton_tools_ask_for(client):
    """perf_analyzer stops before its first inference without it."""
    routed = client.get("/v2/models/slimgate/config")
    assert routed.status_code == 200
    cfg = routed.json()
    assert cfg["name"] == "slimgate" and cfg["max_batch_size"] == 0
    assert cfg["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert [o["name"] for o in cfg["output"]] == ["label", "probabilities"] and cfg["output"][1]["dims"] == [
        -1,
        3,
    ]
    assert "coalesced_batch_size" not in cfg["parameters"] and cfg["parameters"]["max_inputs"]["string_value"]
    assert json.loads(cfg["parameters"]["labels"]["string_value"]) == list(LABELS)
    variant = client.get("/v2/models/canary/versions/1/config").json()
    assert variant["name"] == "canary" and "coalesced_batch_size" in variant["parameters"]
    assert client.get("/v2/models/ghost/config").status_code == 404


def test_v2_infer_with_tritonclients_binary_defaults(client):
    from tritonclient.http._utils import _get_inference_request

    inp = httpclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array(["a tree", "a cat"], dtype=np.object_))  # binary_data=True
    body, length = _get_inference_request([inp], "", None, 0, False, False, 0, None, None)
    r = client.post(
        "/v2/models/stable/infer",
        content=body,
        headers={"inference-header-content-length": str(length), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200
    result = httpclient.InferResult.from_response_body(
        r.content, header_length=int(r.headers["inference-header-content-length"])
    )
    assert list(result.as_numpy("label")) == [LABELS[0].encode()] * 2
    assert result.as_numpy("probabilities").shape == (2, 3)


def test_admin_needs_the_token(client):
    assert client.get("/admin/config").status_code == 401
    r = client.get("/admin/config", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    ok = client.get("/admin/config", headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["revision"] == "rev1"
    assert (
        client.get("/admin/disagreements", headers={"authorization": f"Bearer {TOKEN}"}).json()["total"] == 0
    )


def test_feedback_joins_the_served_answer(client):
    served = client.post(
        "/v1/predict", json={"inputs": ["a"]}, headers={"x-slimgate-variant": "canary"}
    ).json()
    rid = served["request_id"]
    r = client.post("/v1/feedback", json={"request_id": rid, "label": LABELS[1]})
    assert r.status_code == 202 and r.json()["correct"] is True
    assert client.post("/v1/feedback", json={"request_id": rid, "label": LABELS[1]}).status_code == 409
    assert client.post("/v1/feedback", json={"request_id": "nope", "label": LABELS[1]}).status_code == 404
    bad = client.post("/v1/feedback", json={"request_id": rid, "label": "noun.ghost", "index": 0})
    assert bad.status_code in (409, 422)


def test_an_internal_error_is_a_content_free_500():
    class Broken(FakeVariant):
        @property
        def info(self):
            raise KeyError("secret internals")

    client = TestClient(App(stable=Broken("stable", 0)))
    r = client.get("/v2/models/stable")
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    r = client.post("/v1/predict", json={"inputs": ["a"]})
    assert r.status_code == 500 and r.json() == {"error": {"code": "internal", "message": "internal error"}}


def test_overload_is_shed_with_503_and_retry_after(app, client):
    for _ in range(app.admission.max_in_flight):  # fill the replica as concurrent requests would
        assert app.admission.try_admit() is None
    r = client.post("/v1/predict", json={"inputs": ["a"]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"
    r = client.post("/v2/models/slimgate/infer", json={"inputs": []})
    assert r.status_code == 503 and isinstance(r.json()["error"], str)
    app.dp.metrics.flush()
    assert app.sink.total("slimgate_shed") == 2
    app.admission.done(app.admission.now())
    assert client.post("/v1/predict", json={"inputs": ["a"]}).status_code == 200


def test_a_client_error_is_counted_but_a_served_request_is_not(app, client):
    client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"})
    client.post("/v1/predict", json={"inputs": ["a"]})
    app.dp.metrics.flush()
    assert app.sink.count("slimgate_errors", variant="none", kind="client_error") == 1


def test_no_error_on_any_http_path_names_python_internals(client):
    bodies = [
        (method, path, body)
        for method, path, body in (
            ("POST", "/v1/predict", b'{"inputs": ['),
            ("POST", "/v1/predict", b'{"inputs": ["\xff"]}'),
            ("POST", "/v1/predict", b'{"inputs": [1]}'),
            ("POST", "/v1/feedback", b'{"request_id": 3}'),
            ("GET", "/v1/predict", b""),
            ("GET", "/v1/nope", b""),
            ("GET", "/v2/models/ghost", b""),
            ("GET", "/v2/models/ghost/config", b""),
            (
                "POST",
                "/v2/models/slimgate/infer",
                b'{"inputs": [{"name": "text", "shape": [], "data": "x"}]}',
            ),
            (
                "POST",
                "/v2/models/slimgate/infer",
                b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}',
            ),
            ("TRACE", "/v2/health/live", b""),
            ("GET", "/admin/config", b""),
        )
    ]
    for method, path, body in bodies:
        r = client.request(method, path, content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (method, path, r.status_code)
        error = r.json()["error"]
        message = error if isinstance(error, str) else error["message"]
        assert not INTERNALS.search(message), (path, message)
