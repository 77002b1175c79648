"""The gateway config -> Ray Serve config translation (no Ray cluster needed)."""

from ray.serve.schema import ServeDeploySchema

from serving.config import config_revision, diff, load_config, parse_config
from serving.translation import deployment_options, gateway_from_serve_config, serve_config


def _cfg(**routing):
    base = load_config().model_dump(mode="json")
    base["routing"].update(routing)
    return parse_config(base)


def test_serve_config_is_valid_for_ray_serve():
    cfg = load_config()
    out = serve_config(cfg)
    ServeDeploySchema.model_validate(out)  # Ray Serve's own schema accepts it
    names = [a["name"] for a in out["applications"]]
    own = sorted(k for k, v in cfg.variants.items() if not v.in_router)
    assert own and len(own) < len(cfg.variants)  # the default config has both placements
    # Variants placed in the router have no application of their own.
    assert names == ["slimgate", *[f"variant-{k}" for k in own]]
    router = out["applications"][0]
    assert router["route_prefix"] == "/" and router["import_path"] == "serving.ray_apps:router_app"
    assert all(a["route_prefix"] is None for a in out["applications"][1:])


def test_weight_change_touches_only_user_config():
    a = serve_config(_cfg(weights={"student-int8": 90, "teacher-int8": 10}))
    b = serve_config(_cfg(weights={"student-int8": 50, "teacher-int8": 50}))
    # App args (Ray's code version) are identical, so no replica restarts...
    assert [x["args"] for x in a["applications"]] == [x["args"] for x in b["applications"]]
    # ...and only the router's user_config differs.
    ra, rb = a["applications"][0]["deployments"][0], b["applications"][0]["deployments"][0]
    assert ra["user_config"] != rb["user_config"]
    assert a["applications"][1:] == b["applications"][1:]


def test_serve_config_depends_on_the_config_alone():
    # No registry is read: the Helm chart can mirror this translation for KubeRay.
    cfg = load_config()
    out = serve_config(cfg)
    assert out == serve_config(parse_config(cfg.model_dump(mode="json")))
    args = {a["args"]["key"]: a["args"]["ref"] for a in out["applications"][1:]}
    assert args == {k: v.ref for k, v in cfg.variants.items() if not v.in_router}
    assert out["applications"][0]["deployments"][0]["user_config"].keys() == {"gateway"}


def test_an_artifact_change_in_the_router_restarts_nothing():
    base = load_config().model_dump(mode="json")
    moved = {
        **base,
        "variants": {
            **base["variants"],
            "teacher-int8": {**base["variants"]["teacher-int8"], "ref": "teacher-int8@1"},
        },
    }
    a, b = serve_config(parse_config(base)), serve_config(parse_config(moved))
    # The router's args (Ray's code version) stay; it swaps the artifact in from its user_config.
    assert [x["args"] for x in a["applications"]] == [x["args"] for x in b["applications"]]
    change = diff(parse_config(base), parse_config(moved))
    assert change.reload == {"teacher-int8"} and not change.restart and change.lightweight


def test_a_variant_with_a_deployment_of_its_own_restarts_alone():
    base = load_config().model_dump(mode="json")
    spec = base["variants"]["teacher-onnx"]
    moved = {**base, "variants": {**base["variants"], "teacher-onnx": {**spec, "ref": "teacher-onnx@1"}}}
    change = diff(parse_config(base), parse_config(moved))
    assert change.restart == {"teacher-onnx"} and not change.reload
    # Moving a variant into the router removes its application and loads it in the router.
    into = {
        **base,
        "variants": {
            **base["variants"],
            "teacher-onnx": {"ref": "teacher-onnx", "timeout_s": 20.0, "progressive": False},
        },
    }
    change = diff(parse_config(base), parse_config(into))
    assert change.restart == {"teacher-onnx"} and change.reload == {"teacher-onnx"}


def test_gateway_config_round_trips_through_the_deployed_serve_config():
    cfg = load_config()
    found = gateway_from_serve_config(serve_config(cfg))
    assert found is not None
    gateway, revision = found
    assert revision == config_revision(cfg)
    assert diff(cfg, parse_config(gateway)).unchanged


def test_secrets_never_reach_user_config():
    base = load_config().model_dump(mode="json")
    base["admin"]["token"] = "s3cret-token"
    out = serve_config(parse_config(base))
    assert "s3cret-token" not in str(out)


def test_router_replicas_and_cpus_come_from_the_config():
    base = load_config().model_dump(mode="json")
    base["router"] = {"replicas": 2, "num_cpus": 0.5}
    cfg = parse_config(base)
    router = serve_config(cfg)["applications"][0]["deployments"][0]
    assert router["num_replicas"] == 2 and router["ray_actor_options"] == {"num_cpus": 0.5}
    more = parse_config({**base, "router": {"replicas": 3, "num_cpus": 0.5}})
    assert diff(cfg, more).rescale == {"(router)"} and not diff(cfg, more).restart


def test_deployment_options():
    base = load_config().with_changes({"variants.teacher-int8.placement": "deployment"})
    spec = base.with_changes(
        {"variants.teacher-int8.autoscaling": {"min_replicas": 1, "max_replicas": 3}}
    ).variants["teacher-int8"]
    opts = deployment_options(spec)
    assert opts["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2.0,
    }
    assert "num_replicas" not in opts
    # A replica must be allowed to hold a full batch, or batching never fills.
    assert opts["max_ongoing_requests"] >= spec.batching.max_batch_size
    gpu = base.with_changes({"variants.teacher-int8.resources": {"num_cpus": 2.0, "num_gpus": 0.5}})
    opts = deployment_options(gpu.variants["teacher-int8"])
    assert opts["num_replicas"] == 1 and opts["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.5}


def test_a_cuda_variant_asks_ray_for_its_gpus_and_loads_on_cuda():
    cfg = load_config().with_changes(
        {
            "variants.teacher-int8.placement": "deployment",
            "variants.teacher-int8.ref": "teacher-cuda-fp16@1",
            "variants.teacher-int8.device": "cuda",
            "variants.teacher-int8.precision": "fp16",
            "variants.teacher-int8.resources": {"num_cpus": 1.0, "num_gpus": 1.0},
        }
    )
    app = next(a for a in serve_config(cfg)["applications"] if a["name"] == "variant-teacher-int8")
    assert app["deployments"][0]["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert (app["args"]["device"], app["args"]["precision"]) == ("cuda", "fp16")
