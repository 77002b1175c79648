"""The gateway for real: Ray Serve over HTTP, started and changed through the slimgate CLI."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import poll_until
from support.e2e import GRPC_PORT, METRICS_PORT, TEXT_POOL, TOKEN, slimgate

TEXT = "a tall perennial woody plant having a main trunk and branches"


def test_predict_answers_with_variant_version_and_request_id(gateway):
    r = gateway.predict([TEXT, "a person who plays the violin"], top_k=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variant"] in ("stable", "canary")
    assert body["route"] in ("split", "sticky")
    assert isinstance(body["version"], int) and body["model"] in ("student-int8", "student-int8-qat")
    # (Ray's proxy may repeat the header; every copy carries the same id.)
    assert set(r.headers.get_list("x-request-id")) == {body["request_id"]} and len(body["request_id"]) >= 32
    chosen = gateway.predict([TEXT], headers={"x-request-id": "client-chosen-id-1"})
    assert chosen.json()["request_id"] == "client-chosen-id-1"
    assert set(chosen.headers.get_list("x-request-id")) == {"client-chosen-id-1"}
    assert r.headers["x-slimgate-variant"] == body["variant"]
    assert r.headers["x-slimgate-model-version"] == str(body["version"])
    assert len(body["outputs"]) == 2
    for out in body["outputs"]:
        assert out["label"].startswith("noun.") and len(out["top_k"]) == 2
        assert out["top_k"][0]["label"] == out["label"]
        assert out["top_k"][0]["probability"] >= out["top_k"][1]["probability"]


def test_weighted_split_proportions(gateway):
    n = 400
    served = [gateway.predict([TEXT]).json()["variant"] for _ in range(n)]
    canary = served.count("canary") / n
    # 30% configured; binomial sd = sqrt(.3*.7/400) = 0.023 -> 4 sd band.
    assert abs(canary - 0.30) < 0.092, canary


def test_sticky_users_keep_their_variant_and_few_move_on_weight_change(gateway):
    users = [f"user-{i}" for i in range(200)]

    def assignment():
        return {u: gateway.predict([TEXT], headers={"x-user-id": u}).json()["variant"] for u in users}

    before = assignment()
    assert assignment() == before  # same caller, same variant
    gateway.apply(**{"routing.weights": {"stable": 50, "canary": 50}})
    after = assignment()
    moved = [u for u in users if before[u] != after[u]]
    # Only callers in the moved 20% of the hash space change, and only towards the canary.
    assert all(before[u] == "stable" and after[u] == "canary" for u in moved)
    assert 0.08 < len(moved) / len(users) < 0.32
    gateway.apply()


def test_pin_header_forces_a_variant_and_rejects_unknown_ones(gateway):
    r = gateway.predict([TEXT], headers={"x-slimgate-variant": "canary"})
    assert r.status_code == 200 and r.json()["variant"] == "canary" and r.json()["route"] == "pinned"
    r = gateway.predict([TEXT], headers={"x-slimgate-variant": "nope"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unknown_variant"
    assert "x-slimgate-variant" in r.json()["error"]["message"]


def test_failing_candidate_falls_back_to_stable(gateway):
    gateway.apply(**{"variants.canary.faults": {"error_rate": 1.0}})
    try:
        bodies = []
        for i in range(60):
            r = gateway.predict([TEXT], headers={"x-user-id": f"fb-{i}"})
            assert r.status_code == 200, r.text
            bodies.append(r.json())
        fallbacks = [b for b in bodies if b["route"] == "fallback"]
        assert fallbacks, "some callers hash to the canary and must have fallen back"
        assert all(b["variant"] == "stable" for b in bodies)
    finally:
        gateway.apply()


def _p50(gateway, n=30):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = gateway.predict([TEXT], headers={"x-slimgate-variant": "stable"})
        times.append(time.perf_counter() - t)
        assert r.status_code == 200
    return statistics.median(times), r.json()


def test_stalled_shadow_changes_neither_answer_nor_latency(gateway):
    base_p50, base = _p50(gateway)
    gateway.apply(**{"shadow.fraction": 1.0, "variants.shadow.faults": {"delay_ms": 3000.0}})
    try:
        p50, shadowed = _p50(gateway)
        assert shadowed["outputs"] == base["outputs"]
        # The shadow sleeps 3 s per call; the client must not wait for it.
        assert p50 < base_p50 + 0.1, (p50, base_p50)
        stats = gateway.admin("/admin/config").json()["shadow_in_flight"]
        assert stats["dropped"] > 0 and stats["in_flight"] <= 4  # capped, never queued
    finally:
        gateway.apply()


def test_shadow_disagreements_are_sampled_for_admins(gateway):
    gateway.apply(**{"shadow.fraction": 1.0, "variants.shadow.faults": {"flip_rate": 1.0}})
    try:
        # Mirrors beyond shadow.max_in_flight are dropped (a stalled shadow of the previous test may
        # still hold slots), so keep sending until five disagreements are in.
        sent = [0]

        def five_disagreements():
            r = gateway.predict([f"{TEXT} {sent[0]}"], headers={"x-slimgate-variant": "stable"})
            assert r.status_code == 200
            sent[0] += 1
            body = gateway.admin("/admin/disagreements").json()
            return body if body["total"] >= 5 else None

        body = poll_until(
            five_disagreements,
            timeout_s=30,
            every_s=0.2,
            what="five shadow disagreements",
            diagnose=lambda: f"{sent[0]} requests sent, {gateway.admin('/admin/disagreements').text}",
        )
        assert body["total"] >= 5
        sample = body["samples"][-1]
        assert sample["served_variant"] == "stable" and sample["shadow_variant"] == "shadow"
        assert sample["served_label"] != sample["shadow_label"] and TEXT in sample["text"]
    finally:
        gateway.apply()


def test_reconfiguration_under_load_fails_no_request(gateway):
    failures, done, stop = [], [0], threading.Event()

    def client(i):
        while not stop.is_set():
            try:
                r = gateway.predict([TEXT], headers={"x-user-id": f"load-{i}-{done[0]}"})
                if r.status_code != 200:
                    failures.append(r.text)
            except Exception as err:  # noqa: BLE001 - any failure counts
                failures.append(repr(err))
            done[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        start = replica_ids()
        gateway.apply(**{"routing.weights": {"stable": 40, "canary": 60}})
        gateway.apply(**{"shadow.fraction": 0.5})
        assert replica_ids() == start  # weights and shadow are applied in place
        # A changed artifact for a variant in the router: swapped in live, nothing restarts.
        gateway.apply(**{"variants.canary.ref": "teacher-onnx"})
        assert replica_ids() == start
        pinned = gateway.predict([TEXT], headers={"x-slimgate-variant": "canary"}).json()
        assert pinned["model"] == "teacher-onnx"
        # A changed artifact for a variant with its own deployment: only its replicas restart.
        gateway.apply(**{"variants.canary.ref": "teacher-onnx", "variants.shadow.ref": "student-int8"})
        after = replica_ids()
        assert after["variant-shadow"] != start["variant-shadow"]
        assert {k: v for k, v in after.items() if k != "variant-shadow"} == {
            k: v for k, v in start.items() if k != "variant-shadow"
        }
        gateway.apply()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done[0] > 50
    assert failures == []


def test_a_variant_added_under_load_gets_traffic_only_once_its_replicas_are_up(gateway):
    routes, stop = [], threading.Event()

    def client(i):
        n = 0
        while not stop.is_set():
            r = gateway.predict([TEXT], headers={"x-user-id": f"add-{i}-{n}"})
            routes.append((r.status_code, r.json().get("variant"), r.json().get("route")))
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        gateway.apply(
            **{
                "variants.fresh": {
                    "ref": "teacher-onnx",
                    "placement": "deployment",
                    "resources": {"num_cpus": 0.3},
                },
                "routing.weights": {"stable": 40, "canary": 30, "fresh": 30},
            }
        )
        poll_until(
            lambda: any(variant == "fresh" for _, variant, _ in routes),
            timeout_s=30,
            every_s=0.2,
            what="the added variant to answer",
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
        gateway.apply()
    assert {status for status, _, _ in routes} == {200}
    # Its share went to stable while it started (or it was up by the time the router had the
    # config); never to a variant that could not answer, so nothing fell back.
    assert "fallback" not in {route for _, _, route in routes}, routes
    assert any(variant == "fresh" for _, variant, _ in routes)


def replica_ids() -> dict[str, set[str]]:
    from serving import ray_rest

    apps = ray_rest.status()["applications"]
    return {
        name: {r["replica_id"] for d in app["deployments"].values() for r in d["replicas"]}
        for name, app in apps.items()
    }


BAD = [
    ("malformed JSON", b'{"inputs": [', {}, 400, "malformed_json"),
    ("nested 5,000 deep", b'{"inputs": ' + b"[" * 1500 + b"]" * 1500 + b"}", {}, 400, "malformed_json"),
    ("not UTF-8", b'{"inputs": ["\xff\xfe"]}', {}, 400, "invalid_encoding"),
    ("empty body", b"", {}, 400, "empty_body"),
    ("not an object", b'["a"]', {}, 422, "invalid_body"),
    ("missing inputs", b'{"texts": ["a"]}', {}, 422, "missing_field"),
    ("inputs not a list", b'{"inputs": "a"}', {}, 422, "invalid_field"),
    ("non-string input", b'{"inputs": ["a", 3]}', {}, 422, "invalid_field"),
    ("empty inputs", b'{"inputs": []}', {}, 422, "empty_inputs"),
    ("blank text", b'{"inputs": ["   "]}', {}, 422, "empty_text"),
    ("too many inputs", b'{"inputs": ["a","b","c","d","e","f","g","h","i"]}', {}, 422, "too_many_inputs"),
    ("over-long text", b'{"inputs": ["' + b"x" * 301 + b'"]}', {}, 422, "text_too_long"),
    ("bad top_k", b'{"inputs": ["a"], "top_k": 0}', {}, 422, "invalid_field"),
    ("oversized body", b'{"inputs": ["' + b"x" * 5000 + b'"]}', {}, 413, "body_too_large"),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_named_4xx(gateway, case, body, headers, status, code):
    r = gateway.client.post(
        "/v1/predict", content=body, headers={"content-type": "application/json", **headers}
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]


def test_bad_input_harms_nothing(gateway):
    before = slimgate("status", "--json").stdout
    for _case, body, *_ in BAD:
        gateway.client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert gateway.predict([TEXT]).status_code == 200
    assert slimgate("status", "--json").stdout == before  # no replica restarted or changed


def test_unknown_model_and_route(gateway):
    r = gateway.client.post("/v2/models/ghost/infer", json={"inputs": []})
    # The inference protocol's error shape on /v2, slimgate's envelope elsewhere.
    assert r.status_code == 404 and r.json()["error"].startswith("model 'ghost' not found")
    r = gateway.client.get("/v3/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_admin_endpoints_need_the_token(gateway):
    assert gateway.client.get("/admin/config").status_code == 401
    r = gateway.client.get("/admin/config", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = gateway.admin("/admin/config")
    assert r.status_code == 200
    assert r.json()["config"]["routing"]["stable"] == "stable"
    assert TOKEN not in r.text
    # A variant placed in the router timed itself on the router's hardware when it loaded.
    warm = r.json()["variants"]["stable"]["warmup"]
    assert warm["p50_s"] > 0 and warm["texts_per_s"] > 0 and "cores" in warm["hardware"]


def test_invalid_apply_is_rejected_and_the_gateway_untouched(gateway):
    before = slimgate("status", "--json").stdout
    proc = slimgate(
        "apply", str(gateway.write_config(**{"routing.weights": {"stable": 70, "canary": 20}})), check=False
    )
    assert proc.returncode == 2
    assert "routing.weights: must sum to 100, got 90" in proc.stderr
    proc = slimgate(
        "apply", str(gateway.write_config(**{"variants.canary.ref": "student-int8@99"})), check=False
    )
    assert proc.returncode == 2 and "canary" in proc.stderr
    assert slimgate("status", "--json").stdout == before
    assert gateway.predict([TEXT]).status_code == 200


def test_status_shows_variants_weights_and_revision(gateway):
    out = slimgate("status").stdout
    assert "config revision" in out
    for key in ("stable", "canary", "shadow"):
        assert key in out
    assert "1/1" in out


def test_open_inference_protocol_round_trip_with_a_real_client(gateway):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(gateway.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("slimgate") and client.is_model_ready("canary")
    meta = client.get_model_metadata("slimgate")
    assert meta["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    texts = np.array([TEXT.encode(), b"a person who plays the violin"], dtype=object)
    inp = triton.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(texts, binary_data=False)
    outs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer("stable", [inp], outputs=outs)
    labels = result.as_numpy("label")
    probs = result.as_numpy("probabilities")
    client.close()
    assert probs.shape[0] == 2 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    direct = gateway.predict(
        [TEXT, "a person who plays the violin"], headers={"x-slimgate-variant": "stable"}
    )
    assert [x.decode() if isinstance(x, bytes) else x for x in labels] == [
        o["label"] for o in direct.json()["outputs"]
    ]


def test_tritonclient_at_its_defaults_gets_answers_and_readable_errors(gateway):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(gateway.url.removeprefix("http://"))
    inp = triton.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([TEXT, "a person who plays the violin"], dtype=object))
    result = client.infer("slimgate", [inp])  # binary tensors both ways, as the client defaults to
    assert result.as_numpy("probabilities").shape[0] == 2
    assert all(x.decode().startswith("noun.") for x in result.as_numpy("label"))
    with pytest.raises(InferenceServerException) as err:
        client.infer("ghost", [inp])
    assert "model 'ghost' not found" in err.value.message()  # the client could read the error
    client.close()


def test_metrics_are_exported_for_prometheus(gateway):
    import httpx

    from serving.metrics import PROMETHEUS_NAMES

    for _ in range(5):
        assert gateway.predict([TEXT]).status_code == 200
    wanted = [PROMETHEUS_NAMES[n] for n in ("slimgate_requests", "slimgate_batch_size", "slimgate_weight")]
    scraped = [""]

    def exported() -> str | None:
        scraped[0] = httpx.get("http://127.0.0.1:18080/metrics", timeout=10).text
        return scraped[0] if all(w in scraped[0] for w in wanted) else None

    text = poll_until(
        exported,
        timeout_s=60,
        every_s=1,
        what="the metrics to be exported",
        diagnose=lambda: "missing: " + ", ".join(w for w in wanted if w not in scraped[0]),
    )
    for w in wanted:
        assert w in text, w
    requests = [line for line in text.splitlines() if line.startswith(PROMETHEUS_NAMES["slimgate_requests"])]
    assert any('variant="stable"' in line and 'route="' in line for line in requests)


def test_feedback_is_joined_to_the_served_answer(gateway):
    r = gateway.predict([TEXT, "a person who plays the violin"])
    body = r.json()
    rid, served = body["request_id"], body["outputs"][1]["label"]
    ok = gateway.client.post("/v1/feedback", json={"request_id": rid, "label": served, "index": 1})
    assert ok.status_code == 202 and ok.json()["correct"] is True and ok.json()["variant"] == body["variant"]
    again = gateway.client.post("/v1/feedback", json={"request_id": rid, "label": served, "index": 1})
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_feedback"
    wrong = gateway.client.post("/v1/feedback", json={"request_id": rid, "label": "noun.nothing"})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "unknown_label"
    unknown = gateway.client.post("/v1/feedback", json={"request_id": "nope", "label": served})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_request"
    missing = gateway.client.post("/v1/feedback", json={"label": served})
    assert missing.status_code == 422 and "request_id is required" in missing.json()["error"]["message"]


def test_nothing_of_the_gateway_listens_beyond_loopback(gateway):
    """TCP listeners and UDP sockets alike (HAProxy's log once held UDP sockets on 0.0.0.0), and
    HAProxy's admin socket is its owner's only."""
    import ipaddress
    import re
    import socket
    import stat

    import psutil

    serve = psutil.Process(gateway.pid)
    processes = [serve, *serve.children(recursive=True)]
    bound, haproxy_configs = [], set()
    for proc in processes:
        try:
            conns = proc.net_connections(kind="inet")
            if "haproxy" in proc.name():
                args = proc.cmdline()
                haproxy_configs.add(args[args.index("-f") + 1])
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr):
                bound.append((proc.name(), c.type.name, c.laddr.ip, c.laddr.port))
    assert len(bound) > 10  # Ray, its agents, the replicas, HAProxy: all found
    names = {name for name, *_ in bound}
    assert any("haproxy" in n for n in names), names
    public = [b for b in bound if not ipaddress.ip_address(b[2].removeprefix("::ffff:")).is_loopback]
    assert public == []
    assert haproxy_configs
    for config in haproxy_configs:
        text = Path(config).read_text()
        assert "log ring@slimgate-log" in text
        (admin,) = re.findall(r"stats socket (\S+)", text)
        assert stat.S_IMODE(os.stat(admin).st_mode) & 0o077 == 0, (admin, oct(os.stat(admin).st_mode))


def same_answers(got: list[dict], want: list[dict]) -> bool:
    def labels(outputs):
        return [(o["label"], [t["label"] for t in o["top_k"]]) for o in outputs]

    def probabilities(outputs):
        return [p for o in outputs for p in [o["probability"], *(t["probability"] for t in o["top_k"])]]

    return labels(got) == labels(want) and probabilities(got) == pytest.approx(probabilities(want), rel=1e-5)


def test_overload_is_shed_fast_and_every_admitted_request_is_answered(gateway):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    reference = gateway.predict([TEXT], headers={"x-slimgate-variant": "stable"}).json()["outputs"]
    gateway.apply(
        **{
            "admission": {"max_in_flight": 3, "latency_objective_s": None},
            "variants.stable.faults": {"delay_ms": 300.0},
        }
    )
    try:

        def one(i):
            with httpx.Client(base_url=gateway.url, timeout=30) as c:
                start = time.perf_counter()
                r = c.post("/v1/predict", json={"inputs": [TEXT]}, headers={"x-slimgate-variant": "stable"})
                return r, time.perf_counter() - start

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(32)))
    finally:
        gateway.apply()
    shed = [(r, s) for r, s in results if r.status_code == 503]
    served = [(r, s) for r, s in results if r.status_code == 200]
    assert len(shed) + len(served) == len(results)  # nothing but answers and shedding
    assert shed and served
    for r, seconds in shed:
        assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded"
        assert seconds < 0.3  # refused at once, not after waiting behind the admitted ones
    # Admitted = answered by the stable model: the same labels, and probabilities equal up to float
    # rounding (under load the coalescer batches the copies of the text, and on some CPUs a batch
    # runs through other kernels than one text does: a CI machine with AVX-512 answered a copy
    # differently, though copies share the dynamic int8 scale, so only rounding can differ there).
    for r, _ in served:
        assert same_answers(r.json()["outputs"], reference)


def test_the_inference_protocol_over_grpc_with_tritonclient_at_its_defaults(gateway):
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    client = tgrpc.InferenceServerClient(f"127.0.0.1:{GRPC_PORT}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("canary")
    assert client.get_model_metadata("slimgate").inputs[0].name == "text"
    inp = tgrpc.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([TEXT, "a person who plays the violin"], dtype=object))
    result = client.infer("stable", [inp])
    labels = [x.decode() for x in result.as_numpy("label")]
    direct = gateway.predict(
        [TEXT, "a person who plays the violin"], headers={"x-slimgate-variant": "stable"}
    )
    assert labels == [o["label"] for o in direct.json()["outputs"]]
    with pytest.raises(InferenceServerException) as err:
        client.infer("ghost", [inp])
    assert "NOT_FOUND" in str(err.value.status()) and "ghost" in err.value.message()
    # What perf_analyzer asks for first, and a method slimgate does not serve: a plain UNIMPLEMENTED.
    config = client.get_model_config("stable").config
    assert config.name == "stable" and config.max_batch_size == 0 and config.input[0].name == "text"
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("stable")
    assert "UNIMPLEMENTED" in str(err.value.status())
    assert err.value.message() == "slimgate does not implement ModelStatistics"
    client.close()


def test_a_variant_that_cannot_load_gets_no_traffic_and_its_apply_is_undone(gateway):
    import json
    import shutil

    from serving import ray_rest
    from variants import Registry

    reg = Registry(gateway.registry)
    source = reg.get("student-int8")
    broken = gateway.registry / "student-int8-broken" / "v1"
    shutil.copytree(reg.path(source.name, source.version), broken)
    try:
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["name"] = "student-int8-broken"
        (broken / "manifest.json").write_text(json.dumps(manifest))
        model = broken / "model.onnx"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte: its checksum no longer verifies
        model.write_bytes(bytes(data))

        failures, done, stop = [], [0], threading.Event()

        def client(i):
            while not stop.is_set():
                r = gateway.predict([TEXT], headers={"x-user-id": f"broken-{i}-{done[0]}"})
                if r.status_code != 200:
                    failures.append(r.text)
                done[0] += 1

        before = ray_rest.status()["applications"]["slimgate"]["deployed_app_config"]
        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            proc = slimgate(
                "apply",
                str(gateway.write_config(**{"variants.canary.ref": "student-int8-broken@1"})),
                check=False,
            )
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "variants.canary (student-int8-broken@1) is not ready" in proc.stderr
        assert "ChecksumMismatch" in proc.stderr  # the router's reason, read with the admin token
        assert "put back the previous revision" in proc.stdout
        assert ray_rest.status()["applications"]["slimgate"]["deployed_app_config"] == before
        assert failures == [] and done[0] > 20  # stable answered throughout
        audit = slimgate("audit").stdout
        assert "apply-failed" in audit
        canary = gateway.predict([TEXT], headers={"x-slimgate-variant": "canary"}).json()
        assert canary["model"] == "student-int8-qat"  # the canary serves what it served before
    finally:
        shutil.rmtree(broken.parent, ignore_errors=True)


def test_a_cascade_escalates_per_text_names_each_stage_and_never_waits_past_its_budget(gateway):
    import httpx

    from serving.metrics import PROMETHEUS_NAMES

    cascade = {"first": "stable", "then": "shadow", "threshold": 1.0, "budget_ms": 10_000.0}
    pin = {"x-slimgate-variant": "both"}
    texts = TEXT_POOL[:4]
    gateway.apply(**{"variants.both": {"cascade": cascade}})
    try:
        # Threshold 1: every text goes on to the second stage (teacher-onnx, a deployment of its own).
        body = poll_until(
            lambda: (r := gateway.predict(texts, headers=pin)).status_code == 200 and r.json(),
            timeout_s=60,
            what="the cascade to answer",
        )
        assert body["variant"] == "both" and body["model"] == "cascade-student-int8-to-teacher-onnx"
        assert [o["stage"] for o in body["outputs"]] == ["then"] * 4
        direct = gateway.predict(texts, headers={"x-slimgate-variant": "shadow"}).json()
        assert [o["label"] for o in body["outputs"]] == [o["label"] for o in direct["outputs"]]
        # Threshold 0: nothing escalates; the answers are the first stage's.
        gateway.apply(**{"variants.both": {"cascade": {**cascade, "threshold": 0.0}}})
        body = gateway.predict(texts, headers=pin).json()
        assert [o["stage"] for o in body["outputs"]] == ["first"] * 4
        first = gateway.predict(texts, headers={"x-slimgate-variant": "stable"}).json()
        assert [o["label"] for o in body["outputs"]] == [o["label"] for o in first["outputs"]]
        # The fault drill: the second stage 3 s slow, a 200 ms budget. Degraded, not late.
        gateway.apply(
            **{
                "variants.both": {"cascade": {**cascade, "budget_ms": 200.0}},
                "variants.shadow.faults": {"delay_ms": 3000.0},
            }
        )
        start = time.perf_counter()
        r = gateway.predict(texts, headers=pin)
        took = time.perf_counter() - start
        assert r.status_code == 200
        assert [o["stage"] for o in r.json()["outputs"]] == ["degraded"] * 4
        assert took < 2.0, took  # the budget, not the 3 s the second stage takes
        name = PROMETHEUS_NAMES["slimgate_cascade_texts"]

        def counted() -> bool:
            text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
            lines = [line for line in text.splitlines() if line.startswith(name) and 'variant="both"' in line]
            return all(any(f'stage="{s}"' in line for line in lines) for s in ("first", "then", "degraded"))

        poll_until(counted, timeout_s=60, every_s=1, what="every cascade stage counted in the metrics")
    finally:
        gateway.apply()


def test_an_overloaded_variant_browns_out_to_a_cheaper_one_and_takes_its_share_back(gateway):
    """The SLO guard on real load: the fp32 teacher, placed in the router with one thread and sent
    eight long texts per request by six callers at once, breaks its objective; its share moves to
    a cheaper deployable variant within seconds, every request is answered, and once the load is
    gone the share comes back."""
    import httpx

    from serving.metrics import PROMETHEUS_NAMES

    long_texts = [(t + " ") * 6 for t in TEXT_POOL][:8]
    long_texts = [t[:290] for t in long_texts]
    gateway.apply(
        **{
            "variants.fp32": {"ref": "teacher-onnx", "threads": 1, "progressive": False},
            "routing.weights": {"stable": 10, "canary": 0, "fp32": 90},
            "slo": {
                "objective_s": 0.15,
                "react_s": 1.0,
                "recover_s": 2.0,
                "min_requests": 4,
                "min_concurrency": 2.0,
            },
        }
    )
    users = [f"slo-{i}" for i in range(40)]
    failures, brownouts, stop = [], [], threading.Event()

    def caller(i: int) -> None:
        n = 0
        while not stop.is_set():
            user = users[(i + 6 * n) % len(users)]
            r = gateway.predict(long_texts, headers={"x-user-id": user})
            n += 1
            if r.status_code != 200:
                failures.append(r.text)
            elif r.json()["route"] == "brownout":
                brownouts.append((user, r.json()["variant"]))

    def guard():
        return gateway.admin("/admin/config").json()["slo_guard"]

    try:
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        try:
            poll_until(
                lambda: len(brownouts) >= 5,
                timeout_s=60,
                every_s=0.5,
                what="the guard to brown the overloaded fp32 teacher out",
                diagnose=lambda: guard(),
            )
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert failures == []  # browned out, not shed
        state = guard()
        assert state["enabled"] and state["brownouts"]["fp32"]["target"] in ("stable", "canary")
        assert {v for _, v in brownouts} == {state["brownouts"]["fp32"]["target"]}
        first = next(c for c in state["changes"] if c["variant"] == "fp32")
        assert first["before"] == 0 and first["after"] > 0 and "overloaded" in first["reason"]
        assert first["figures"]["latency_s"] > 0.15 and first["figures"]["concurrency"] >= 2.0
        assert 0 < state["expected_accuracy"] <= 1

        # Light load: one short text every half second, well below the capacity the guard measured
        # on any machine (back to back, four callers offered more than a slow CPU's measured
        # capacity, and the guard rightly kept a share browned out). The share comes back after
        # the healthy hold.
        sent = iter(range(10_000))

        def recovered() -> bool:
            user = users[next(sent) % 4]
            assert gateway.predict([TEXT_POOL[0]], headers={"x-user-id": user}).status_code == 200
            return guard()["brownouts"]["fp32"]["fraction"] == 0

        poll_until(recovered, timeout_s=60, every_s=0.5, what="the share to come back", diagnose=guard)
        kinds = [c["kind"] for c in guard()["changes"] if c["variant"] == "fp32"]
        assert kinds[0] == "brownout" and kinds[-1] == "recovery"
        diverted_user = brownouts[0][0]
        body = gateway.predict([TEXT_POOL[0]], headers={"x-user-id": diverted_user}).json()
        assert body["route"] != "brownout"

        name = PROMETHEUS_NAMES["slimgate_brownout_changes"]

        def exported() -> bool:
            text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
            return f"{name}{{" in text and 'kind="recovery"' in text

        poll_until(exported, timeout_s=60, every_s=1, what="the guard's moves in the gateway's metrics")
    finally:
        gateway.apply()
