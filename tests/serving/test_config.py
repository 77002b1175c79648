import copy
import json

import pytest
import yaml

from serving.config import (
    DEFAULT_CONFIG,
    Change,
    ConfigError,
    GatewayConfig,
    check_against_registry,
    config_revision,
    diff,
    json_schema,
    load_config,
    parse_config,
    path_change,
    pin_refs,
)
from variants.registry import Gate, Registry


def _base() -> dict:
    # Variants with deployments of their own (what restarts, rescales, has resources); the
    # router placement has tests of its own below.
    return {
        "variants": {
            "stable": {"ref": "student-int8@1", "placement": "deployment"},
            "canary": {"ref": "student-int8-qat@1", "placement": "deployment"},
            "shadow": {"ref": "teacher-onnx@1", "placement": "deployment"},
        },
        "routing": {"stable": "stable", "weights": {"stable": 95, "canary": 5}},
        "shadow": {"variants": ["shadow"], "fraction": 0.2},
    }


def _with(path: str, value, data: dict | None = None) -> dict:
    """A copy of ``data`` (default: the base config) with the dotted ``path`` set to ``value``."""
    d = copy.deepcopy(data or _base())
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return d


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    return str(info.value)


# -- validation --------------------------------------------------------------------------------
def test_base_config_validates_with_defaults():
    cfg = parse_config(_base())
    assert cfg.variants["stable"].batching.max_batch_size == 16
    assert cfg.variants["stable"].batching.batch_wait_timeout_s == 0.0  # no added latency when idle
    assert cfg.variants["stable"].resources.num_cpus == 1.0
    assert cfg.routing.pin_header == "x-slimgate-variant"
    assert cfg.shadow.max_in_flight == 32 and cfg.shadow.disagreement_samples == 200
    assert (cfg.limits.max_inputs, cfg.limits.max_chars, cfg.limits.max_body_bytes) == (64, 2000, 1 << 20)
    assert (cfg.limits.request_timeout_s, cfg.limits.top_k) == (10.0, 3)
    assert cfg.admin.token_env == "SLIMGATE_ADMIN_TOKEN"
    assert (cfg.http.host, cfg.http.port, cfg.registry) == ("127.0.0.1", 8000, None)
    assert cfg.traffic_variants() == ["canary", "stable"]


def test_models_are_frozen():
    cfg = parse_config(_base())
    with pytest.raises(ValueError, match="frozen"):
        cfg.routing.stable = "canary"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("routing.weights", {"stable": 85, "canary": 5}, "routing.weights: must sum to 100, got 90"),
        (
            "routing.weights",
            {"stable": 95, "canary": 0, "ghost": 5},
            "routing.weights.ghost: 'ghost' is not a configured variant",
        ),
        (
            "routing.weights",
            {"stable": 0, "canary": 100},
            "routing.weights: the stable variant 'stable' must carry",
        ),
        ("routing.weights", {"canary": 100}, "routing.weights: the stable variant 'stable' must carry"),
        (
            "routing.weights",
            {"stable": 105, "canary": -5},
            "routing.weights.stable: Input should be less than",
        ),
        ("routing.stable", "ghost", "routing.stable: 'ghost' is not a configured variant"),
        ("shadow.variants", ["stable"], "shadow.variants: 'stable' is the stable variant"),
        ("shadow.variants", ["ghost"], "shadow.variants: 'ghost' is not a configured variant"),
        ("shadow.variants", ["shadow", "shadow"], "shadow.variants: listed more than once: shadow"),
        ("shadow.fraction", 1.5, "shadow.fraction: Input should be less than or equal to 1"),
        ("shadow.max_in_flight", 0, "shadow.max_in_flight: Input should be greater than 0"),
        ("variants.stable.replicas", 2, None),  # fine on its own
        (
            "variants.stable.autoscaling",
            {"min_replicas": 3, "max_replicas": 2},
            "max_replicas: must be >= min",
        ),
        ("variants.stable.ref", "Student@1", "variants.stable.ref: bad variant name 'Student'"),
        ("variants.stable.ref", "student@x", "variants.stable.ref: bad variant reference"),
        ("variants.stable.ref", "student@0", "variants.stable.ref: version must be >= 1"),
        ("variants.stable.backend", "tflite", "variants.stable.backend: Input should be 'torch'"),
        ("variants.stable.threads", 0, "variants.stable.threads: Input should be greater than 0"),
        (
            "variants.stable.batching.max_bach_size",
            8,
            "variants.stable.batching.max_bach_size: unknown field",
        ),
        ("variants.stable.resources.num_cpus", "one", "variants.stable.resources.num_cpus: Input should be"),
        (
            "variants.stable.timeout_s",
            30.0,
            "variants.stable.timeout_s: 30.0 exceeds limits.request_timeout_s",
        ),
        ("variants.shadow.timeout_s", 30.0, None),  # a shadow serves no request: it may wait longer
        ("routing.sticky_key", {}, "routing.sticky_key.header: set exactly one of header or json_field"),
        (
            "routing.sticky_key",
            {"header": "x-user-id", "json_field": "user"},
            "routing.sticky_key.header: set exactly one",
        ),
        ("routing.sticky_key", {"cookie": "id"}, "routing.sticky_key.cookie: unknown field"),
        ("limits.max_inputs", "64", "limits.max_inputs: Input should be a valid integer"),
        ("limits.top_k", True, "limits.top_k: Input should be a valid integer"),
        ("limits.max_body_bytes", 1.5, "limits.max_body_bytes: Input should be a valid integer"),
        ("http.port", 70000, "http.port: Input should be less than or equal to 65535"),
        ("http.request_read_timeout_s", 0, "http.request_read_timeout_s: Input should be greater than 0"),
        ("http.request_read_timeout_s", "10", "http.request_read_timeout_s: Input should be a valid integer"),
        (
            "http.request_read_timeout_s",
            301,
            "http.request_read_timeout_s: Input should be less than or equal",
        ),
        ("http.idle_timeout_s", -1, "http.idle_timeout_s: Input should be greater than 0"),
        ("http.max_connections", 100, "http.max_connections: Input should be greater than or equal to 256"),
        ("http.max_connections_per_client", 0, "http.max_connections_per_client: Input should be greater"),
        ("http.max_connections_per_client", None, None),  # off: behind a proxy that hides addresses
        ("admin.token_env", "not a name", "admin.token_env: String should match pattern"),
        ("routing.shadow", ["x"], "routing.shadow: unknown field"),
        ("extra", 1, "extra: unknown field"),
    ],
)
def test_each_rule_names_its_field(path, value, expected):
    data = _with(path, value)
    if expected is None:
        parse_config(data)
        return
    msg = _error(data)
    assert msg.startswith("invalid gateway config test.yaml:")
    assert expected in msg, msg


def test_replicas_and_autoscaling_are_exclusive():
    data = _with("variants.stable.autoscaling", {"min_replicas": 1, "max_replicas": 4})
    parse_config(data)
    msg = _error(_with("variants.stable.replicas", 2, data))
    assert "variants.stable.replicas: set either replicas or autoscaling, not both" in msg


def test_several_problems_are_reported_together():
    data = _with("routing.weights", {"stable": 95, "ghost": 5})
    data = _with("shadow.variants", ["stable"], data)
    msg = _error(data)
    assert "routing.weights.ghost:" in msg and "shadow.variants: 'stable' is the stable variant" in msg


def test_top_level_must_be_a_mapping_and_sections_are_required():
    assert "top level must be a mapping, got list" in _error([1])  # type: ignore[arg-type]
    assert "routing: Field required" in _error({"variants": _base()["variants"]})
    assert "variants: Dictionary should have at least 1 item" in _error(_with("variants", {}))


def test_omitted_weights_mean_all_traffic_to_stable():
    data = _base()
    del data["routing"]["weights"]
    implicit = parse_config(data)
    assert implicit.routing.weights == {"stable": 100}
    assert config_revision(implicit) == config_revision(
        parse_config(_with("routing.weights", {"stable": 100}))
    )


def test_header_names_are_case_insensitive():
    cfg = parse_config(_with("routing.sticky_key", {"header": "X-User-Id"}))
    assert cfg.routing.sticky_key.header == "x-user-id"
    assert parse_config(_with("routing.pin_header", None)).routing.pin_header is None


# -- the default config, loading, schema -------------------------------------------------------
def test_default_config_validates():
    cfg = load_config()
    assert load_config(DEFAULT_CONFIG) == cfg
    assert cfg.routing.stable == "student-int8"
    assert cfg.routing.weights == {"student-int8": 90, "teacher-int8": 10}
    assert cfg.shadow.variants == ["teacher-onnx"] and cfg.shadow.fraction == 0.2
    assert cfg.variants["student-int8"].ref == "student-int8"


def test_load_config_errors_and_relative_registry(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "sub" / "gw.yaml"
    good.parent.mkdir()
    good.write_text(yaml.safe_dump({**_base(), "registry": "../reg"}), encoding="utf-8")
    assert load_config(good).registry == (tmp_path / "reg").resolve()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(_with("routing.weights", {"stable": 50})), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)wrong\.yaml.*routing\.weights: must sum to 100, got 50"):
        load_config(wrong)


def test_json_schema_is_generated_and_documents_every_field():
    schema = json_schema()
    json.dumps(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"variants", "routing"}
    # weights may be omitted (all traffic to stable), so the schema must not require it.
    assert schema["$defs"]["RoutingConfig"]["required"] == ["stable"]
    undocumented = [
        f"{name}.{field}"
        for name, model in schema["$defs"].items()
        for field, spec in model.get("properties", {}).items()
        if "description" not in spec
    ]
    undocumented += [f for f, spec in schema["properties"].items() if "description" not in spec]
    assert undocumented == []


def test_revision_changes_iff_content_changes():
    a = parse_config(_base())
    assert len(config_revision(a)) == 12 and int(config_revision(a), 16) >= 0
    # Same content, written differently: explicit defaults, other key order, other list order.
    same = _with("limits", {"top_k": 3, "max_inputs": 64})
    same["routing"]["weights"] = {"canary": 5, "stable": 95}
    same["variants"] = dict(reversed(list(same["variants"].items())))
    assert config_revision(parse_config(same)) == config_revision(a)
    for path, value in [
        ("routing.weights", {"stable": 94, "canary": 6}),
        ("limits.top_k", 4),
        ("variants.canary.ref", "student-int8-qat@2"),
        ("shadow.fraction", 0.25),
        ("http.port", 8001),
    ]:
        assert config_revision(parse_config(_with(path, value))) != config_revision(a), path


def test_revision_does_not_depend_on_the_inline_token():
    a = parse_config(_with("admin.token", "s3cret-one"))
    b = parse_config(_with("admin.token", "s3cret-two"))
    assert config_revision(a) == config_revision(b) == config_revision(parse_config(_base()))
    assert "s3cret" not in repr(a)
    assert diff(a, b).paths == ("admin.token",) and diff(a, b).lightweight


# -- diff --------------------------------------------------------------------------------------
def test_weight_change_is_lightweight():
    old = parse_config(_base())
    new = parse_config(_with("routing.weights", {"stable": 75, "canary": 25}))
    change = diff(old, new)
    assert change.lightweight and change.restart == set() and change.rescale == set()
    assert change.paths == ("routing.weights.canary", "routing.weights.stable")
    assert diff(old, old).unchanged and diff(old, old).lightweight


def test_routing_shadow_limits_admin_timeouts_are_lightweight():
    old = parse_config(_base())
    for path, value in [
        ("shadow.fraction", 0.5),
        ("shadow.variants", []),
        ("limits.max_chars", 100),
        ("routing.sticky_key", {"json_field": "user"}),
        ("routing.pin_header", None),
        ("admin.token_env", "OTHER"),
        ("variants.shadow.timeout_s", 3.0),
    ]:
        change = diff(old, parse_config(_with(path, value)))
        assert change.lightweight and not change.restart and not change.unchanged, path


def test_ref_change_restarts_only_that_variant():
    old = parse_config(_base())
    change = diff(old, parse_config(_with("variants.canary.ref", "student-int8-qat@2")))
    assert change.restart == {"canary"} and not change.lightweight
    assert change.paths == ("variants.canary.ref",)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("variants.canary.backend", "onnxruntime"),
        ("variants.canary.threads", 2),
        ("variants.canary.resources", {"num_cpus": 2.0}),
    ],
)
def test_what_a_replica_loads_or_runs_with_restarts_it(path, value):
    assert diff(parse_config(_base()), parse_config(_with(path, value))).restart == {"canary"}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("variants.canary.batching", {"max_batch_size": 32}),
        ("variants.canary.faults", {"delay_ms": 50.0}),
    ],
)
def test_batching_and_faults_reconfigure_running_replicas(path, value):
    change = diff(parse_config(_base()), parse_config(_with(path, value)))
    assert change.lightweight and not change.restart and not change.rescale


def test_fault_values_are_validated():
    with pytest.raises(ConfigError, match=r"variants.canary.faults.error_rate"):
        parse_config(_with("variants.canary.faults", {"error_rate": 1.5}))


@pytest.mark.parametrize(("field", "value"), [("retention_s", -1.0), ("max_entries", 0), ("window", 3)])
def test_feedback_values_are_validated(field, value):
    with pytest.raises(ConfigError, match=rf"feedback.{field}"):
        parse_config(_with("feedback", {field: value}))


def test_scaling_changes_rescale_in_place():
    change = diff(parse_config(_base()), parse_config(_with("variants.stable.replicas", 3)))
    assert change.rescale == {"stable"} and change.restart == set() and change.lightweight


def test_added_removed_variants_registry_and_http():
    old = parse_config(_base())
    grown = _with("variants.extra", {"ref": "student@1", "placement": "deployment"})
    change = diff(old, parse_config(grown))
    assert change.restart == {"extra"} and change.added == {"extra"} and change.removed == set()
    change = diff(parse_config(grown), old)
    assert change.restart == {"extra"} and change.removed == {"extra"}
    assert diff(old, parse_config(_with("registry", "/elsewhere"))).restart == {"stable", "canary", "shadow"}
    change = diff(old, parse_config(_with("http.port", 9100)))
    assert change.http and not change.restart and not change.lightweight


# -- the registry ------------------------------------------------------------------------------
def _register(reg: Registry, tmp_path, name: str, *, passed: bool = True, labels=("a", "b"), fmt="onnx"):
    stage = tmp_path / f"stage-{name}"
    stage.mkdir()
    artifact = "model.onnx" if fmt == "onnx" else "model.safetensors"
    (stage / artifact).write_bytes(name.encode())
    return reg.register(
        stage,
        name=name,
        task="t",
        labels=list(labels),
        backend="onnxruntime" if fmt == "onnx" else "torch",
        format=fmt,
        precision="int8-dynamic",
        max_length=16,
        inputs_key=name,
        code_version="test",
        gate=Gate(status="passed" if passed else "rejected", reason=None if passed else "retention 0.80"),
        deployable=passed,
    )


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "reg")
    _register(reg, tmp_path, "student-int8")
    _register(reg, tmp_path, "student-int8-qat")
    _register(reg, tmp_path, "teacher-onnx")
    return reg


def test_registry_check_passes_and_resolves(registry):
    manifests = check_against_registry(parse_config(_base()), registry)
    assert {k: m.ref for k, m in manifests.items()} == {
        "stable": "student-int8@1",
        "canary": "student-int8-qat@1",
        "shadow": "teacher-onnx@1",
    }
    latest = _with("variants.canary.ref", "student-int8-qat")
    assert check_against_registry(parse_config(latest), registry)["canary"].version == 1


def test_pinning_fixes_every_ref_to_the_version_found_now(registry):
    data = _with("variants.canary.ref", "student-int8-qat")
    data["admin"] = {"token": "kept-through-pinning"}
    pinned = pin_refs(parse_config(data), registry)
    assert {k: v.ref for k, v in pinned.variants.items()} == {
        "stable": "student-int8@1",
        "canary": "student-int8-qat@1",
        "shadow": "teacher-onnx@1",
    }
    assert pinned.admin.token is not None and pinned.admin.token.get_secret_value() == "kept-through-pinning"
    assert pinned.routing == parse_config(data).routing


def test_registry_check_names_missing_variants(registry):
    cfg = parse_config(_with("variants.canary.ref", "student-int8-qat@7"))
    with pytest.raises(
        ConfigError, match=r"variants\.canary\.ref: 'student-int8-qat@7' is not in the registry"
    ):
        check_against_registry(cfg, registry)
    cfg = parse_config(_with("variants.shadow.ref", "nobody"))
    with pytest.raises(ConfigError, match=r"variants\.shadow\.ref: 'nobody' is not in the registry"):
        check_against_registry(cfg, registry)


def test_registry_check_refuses_undeployable(tmp_path, registry):
    _register(registry, tmp_path, "student-nokd", passed=False)
    cfg = parse_config(_with("variants.canary.ref", "student-nokd@1"))
    with pytest.raises(
        ConfigError, match=r"variants\.canary\.ref: student-nokd@1 is not deployable \(gate rejected"
    ):
        check_against_registry(cfg, registry)


def test_registry_check_backend_gpu_and_labels(tmp_path, registry):
    with pytest.raises(ConfigError, match=r"variants\.canary\.backend: torch cannot open student-int8-qat@1"):
        check_against_registry(parse_config(_with("variants.canary.backend", "torch")), registry)
    with pytest.raises(ConfigError, match=r"variants\.canary\.resources\.num_gpus: .* needs a GPU"):
        check_against_registry(parse_config(_with("variants.canary.backend", "tensorrt")), registry)
    _register(registry, tmp_path, "other-task", labels=("x", "y"))
    with pytest.raises(ConfigError, match=r"variants\.shadow\.ref: other-task@1 has a different label table"):
        check_against_registry(parse_config(_with("variants.shadow.ref", "other-task@1")), registry)


def test_registry_check_uses_the_configured_root(registry):
    cfg = parse_config(_with("registry", str(registry.root)))
    assert set(check_against_registry(cfg)) == {"stable", "canary", "shadow"}


def test_gateway_config_is_the_schema_source():
    # The schema comes from the same models that validate, so the two cannot drift.
    assert json_schema() == GatewayConfig.model_json_schema()


def test_apply_summary_names_an_added_or_removed_variant_once():
    from serving.deployer import summarize_paths

    old = parse_config(_base())
    data = _with("variants.fresh", {"ref": "student-int8@1"})
    del data["variants"]["canary"]
    data["routing"]["weights"] = {"stable": 95, "fresh": 5}
    new = parse_config(data)
    assert summarize_paths(diff(old, new).paths, old, new) == [
        "variants.fresh (added)",
        "variants.canary (removed)",
        "routing.weights.canary",
        "routing.weights.fresh",
    ]


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("rollout.steps", [25, 5, 100], "rollout.steps"),
        ("rollout.steps", [5, 50], "rollout.steps"),
        ("rollout.interval_s", 0.0, "rollout.interval_s"),
        ("rollout.failures_to_rollback", 0, "rollout.failures_to_rollback"),
        ("rollout.on_source_errors", "panic", "rollout.on_source_errors"),
        ("rollout.cadence", 3, "rollout.cadence"),
        ("rollout.speed_gate.tolerance", 10.5, "rollout.speed_gate.tolerance"),
        ("rollout.speed_gate.tolerance", -0.1, "rollout.speed_gate.tolerance"),
        ("rollout.speed_gate.tolerance", "10%", "rollout.speed_gate.tolerance"),
        ("rollout.speed_gate.enabled", "maybe", "rollout.speed_gate.enabled"),
        ("rollout.speed_gate.slack", 1, "rollout.speed_gate.slack"),
        ("router.replicas", 0, "router.replicas"),
        ("router.num_cpus", -1.0, "router.num_cpus"),
        ("variants.canary.progressive", "yes", "variants.canary.progressive"),
    ],
)
def test_rollout_and_router_mistakes_are_named(path, value, named):
    assert named in _error(_with(path, value))


def test_report_refuses_a_bad_range_before_asking_prometheus(capsys):
    from serving.cli import main

    assert main(["report", "--minutes", "0", "--prometheus", "http://127.0.0.1:9"]) == 2
    assert "--minutes must be within" in capsys.readouterr().err
    assert main(["report", "--step", "-5", "--prometheus", "http://127.0.0.1:9"]) == 2
    assert "--step must be positive" in capsys.readouterr().err


# -- variants placed in the router ---------------------------------------------------------------
def _in_router() -> dict:
    d = _base()
    for spec in d["variants"].values():
        del spec["placement"]  # the default: answered inside the router replica
    return d


def test_variants_are_placed_in_the_router_by_default():
    cfg = parse_config(_in_router())
    assert all(v.in_router for v in cfg.variants.values())
    assert cfg.http.ingress == "haproxy" and cfg.http.grpc_port == 9000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replicas", 2),
        ("autoscaling", {"min_replicas": 1, "max_replicas": 3}),
        ("resources", {"num_cpus": 0.5}),
        ("max_queued_requests", 10),
    ],
)
def test_a_variant_in_the_router_refuses_what_only_a_deployment_has(field, value):
    msg = _error(_with(f"variants.canary.{field}", value, _in_router()))
    assert f"variants.canary.{field}: only a variant with placement: deployment" in msg


def test_a_tensorrt_variant_cannot_run_in_the_router():
    msg = _error(_with("variants.canary.backend", "tensorrt", _in_router()))
    assert "variants.canary.placement: a TensorRT variant needs a GPU" in msg


def test_a_dumped_router_config_parses_back_to_itself():
    cfg = parse_config(_in_router())
    assert parse_config(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    ("path", "value"),
    [("variants.canary.ref", "student-int8-qat@2"), ("variants.canary.threads", 2)],
)
def test_an_artifact_change_in_the_router_reloads_instead_of_restarting(path, value):
    change = diff(parse_config(_in_router()), parse_config(_with(path, value, _in_router())))
    assert change.reload == {"canary"} and change.restart == set() and change.lightweight


def test_a_variant_added_to_the_router_is_loaded_not_deployed():
    grown = _with("variants.extra", {"ref": "student@1"}, _in_router())
    change = diff(parse_config(_in_router()), parse_config(grown))
    assert change.reload == {"extra"} and change.restart == set() and change.added == {"extra"}


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("http.ingress", "nginx", "http.ingress: Input should be 'haproxy' or 'proxy'"),
        ("http.grpc_port", 8000, "http.grpc_port: must differ from port (8000)"),
        ("http.grpc_port", 70000, "http.grpc_port: Input should be less than or equal to 65535"),
        ("admission.max_in_flight", 0, "admission.max_in_flight: Input should be greater than 0"),
        ("admission.latency_objective_s", -1.0, "admission.latency_objective_s: Input should be greater"),
        ("admission.retry_after_s", "soon", "admission.retry_after_s: Input should be a valid integer"),
        (
            "variants.stable.batching.max_concurrent_batches",
            0,
            "variants.stable.batching.max_concurrent_batches: Input should be greater than 0",
        ),
    ],
)
def test_ingress_admission_and_batching_values_are_validated(path, value, expected):
    assert expected in _error(_with(path, value))


# -- devices: a variant on CUDA needs a GPU of its own, named where it is missing ------------------
def test_a_cuda_variant_cannot_run_in_the_router():
    msg = _error(_with("variants.canary.device", "cuda", _in_router()))
    assert "variants.canary.placement: a variant on device cuda needs a GPU: use placement: deployment" in msg


def test_a_cuda_variant_needs_num_gpus():
    msg = _error(_with("variants.canary.device", "cuda"))
    assert "variants.canary.resources.num_gpus: a variant on device cuda needs a GPU" in msg
    data = _with("variants.canary.resources", {"num_gpus": 1.0}, _with("variants.canary.device", "cuda"))
    spec = parse_config(data).variants["canary"]
    assert (spec.device, spec.resources.num_gpus) == ("cuda", 1.0)


def test_fp16_is_refused_on_cpu_and_bf16_is_not():
    msg = _error(_with("variants.canary.precision", "fp16", _with("variants.canary.device", "cpu")))
    assert "variants.canary.precision: fp16 runs on device cuda only" in msg
    data = _with("variants.canary.precision", "bf16", _with("variants.canary.device", "cpu"))
    assert parse_config(data).variants["canary"].precision == "bf16"
    assert "variants.canary.precision:" in _error(_with("variants.canary.precision", "fp8"))


@pytest.mark.parametrize(("path", "value"), [("device", "cuda"), ("precision", "bf16")])
def test_device_and_precision_are_what_a_replica_loads(path, value):
    assert path_change(GatewayConfig, f"variants.canary.{path}") is Change.ARTIFACT


def _register_torch(reg: Registry, tmp_path, name: str, device: str, precision: str):
    stage = tmp_path / f"stage-{name}"
    stage.mkdir()
    (stage / "model.safetensors").write_bytes(name.encode())
    return reg.register(
        stage,
        name=name,
        task="t",
        labels=["a", "b"],
        backend="torch",
        format="safetensors",
        precision=precision,
        device=device,
        max_length=16,
        inputs_key=name,
        code_version="test",
        gate=Gate(status="passed"),
        deployable=True,
    )


def test_registry_check_places_a_cuda_manifest_on_a_gpu(tmp_path, registry):
    _register_torch(registry, tmp_path, "teacher-cuda-fp16", "cuda", "fp16")
    cuda = _with("variants.canary.ref", "teacher-cuda-fp16@1")
    with pytest.raises(
        ConfigError, match=r"variants\.canary\.resources\.num_gpus: teacher-cuda-fp16@1 runs on"
    ):
        check_against_registry(parse_config(cuda), registry)
    in_router = _with("variants.canary.ref", "teacher-cuda-fp16@1", _in_router())
    with pytest.raises(ConfigError, match=r"variants\.canary\.placement: teacher-cuda-fp16@1 runs on device"):
        check_against_registry(parse_config(in_router), registry)
    with pytest.raises(ConfigError, match=r"variants\.canary\.device: teacher-cuda-fp16@1 in fp16 runs on"):
        check_against_registry(parse_config(_with("variants.canary.device", "cpu", cuda)), registry)
    placed = _with("variants.canary.resources", {"num_gpus": 0.5}, cuda)
    assert check_against_registry(parse_config(placed), registry)["canary"].device == "cuda"
    # The fp16 weights are upcast for a CPU in bf16 or fp32: asked for, that is not a fallback.
    on_cpu = _with("variants.canary.precision", "bf16", _with("variants.canary.device", "cpu", cuda))
    assert check_against_registry(parse_config(on_cpu), registry)["canary"].precision == "fp16"


def test_registry_check_refuses_a_device_or_precision_for_onnx(registry):
    msg = r"variants\.canary\.precision: only a torch variant is placed and cast when loaded"
    with pytest.raises(ConfigError, match=msg):
        check_against_registry(parse_config(_with("variants.canary.precision", "bf16")), registry)
