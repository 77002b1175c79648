"""The chart as Helm renders it: its serveConfigV2 is serving.translation.serve_config of its gateway values,
Ray Serve and Kubernetes accept what it renders, and every option lands where it should.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from support.chart import (
    NAMESPACE,
    VALUES_FILES,
    by_kind,
    load_values,
    one,
    python_serve_config,
    render,
)

from serving.config import canonical_dict, parse_config
from serving.translation import GRPC_SERVICER, ROUTER_ONGOING_HEADROOM

# KubeRay's RayService spec (ray.io/v1). The two *UnhealthySecondThreshold fields are deprecated
# and ignored by current KubeRay, so the chart must not set them.
RAYSERVICE_FIELDS = {
    "serveConfigV2",
    "rayClusterConfig",
    "upgradeStrategy",
    "serveService",
    "excludeHeadPodFromServeSvc",
}
DEPRECATED_FIELDS = {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"}
RAYCLUSTER_FIELDS = {
    "rayVersion",
    "authOptions",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "gcsFaultToleranceOptions",
    "headGroupSpec",
    "workerGroupSpecs",
    "suspend",
    "managedBy",
}
# KubeRay's AuthOptions (v1.6): mode (disabled | token), secretName, enableK8sTokenAuth.
AUTH_OPTIONS_FIELDS = {"mode", "secretName", "enableK8sTokenAuth"}
HEAD_GROUP_FIELDS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP_FIELDS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "idleTimeoutSeconds",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "numOfHosts",
    "suspend",
}
CORE_KINDS = {
    "Service",
    "Deployment",
    "PersistentVolumeClaim",
    "Secret",
    "ConfigMap",
    "Ingress",
    "NetworkPolicy",
}
K8S_VERSIONS = ("1.25.0", "1.33.0")  # the chart's kubeVersion floor and a current release


def effective_gateway(chart, values: dict[str, Any]) -> dict[str, Any]:
    """The gateway values Helm hands the templates: the chart's defaults merged with ``values``."""
    return chart.merge_values(values)["gateway"]


def rendered_serve_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])


def router_gateway(serve: dict[str, Any]) -> dict[str, Any]:
    return serve["applications"][0]["deployments"][0]["user_config"]["gateway"]


def by_name(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name}, got {[d['metadata']['name'] for d in by_kind(docs, kind)]}"
    )
    return found[0]


def ray_pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods.update({g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]})
    return pods


@pytest.fixture(scope="module", params=sorted(VALUES_FILES))
def case(request, chart) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    values = load_values(request.param)
    return request.param, values, render(chart, values)


# -- serveConfigV2 is serve_config ---------------------------------------------------------------
def test_serve_config_v2_is_serve_config_of_the_gateway_values(case, chart):
    name, values, docs = case
    cfg = parse_config(effective_gateway(chart, values), f"values {name}")
    expected = python_serve_config(cfg)
    got = rendered_serve_config(docs)

    # The router's gateway: the values as given; the router fills in the defaults (parse_config).
    got_gateway = got["applications"][0]["deployments"][0]["user_config"].pop("gateway")
    want_uc = expected["applications"][0]["deployments"][0]["user_config"]
    want_gateway = want_uc.pop("gateway")
    # Computed by the router at run time once serve_config stops sending them.
    want_uc.pop("revision", None)
    want_uc.pop("variants", None)
    assert canonical_dict(parse_config(got_gateway, "rendered user_config")) == want_gateway
    assert got == expected


def test_the_router_gets_no_admin_token(case):
    _, _, docs = case
    gateway = router_gateway(rendered_serve_config(docs))
    assert "token" not in gateway.get("admin", {})


def test_ray_serve_accepts_the_serve_config(case):
    _, _, docs = case
    ServeDeploySchema.model_validate(rendered_serve_config(docs))


def test_every_import_path_resolves_to_a_callable(case):
    _, _, docs = case
    for app in rendered_serve_config(docs)["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), app["import_path"]


# -- placement, the router deployment, gRPC -----------------------------------------------------
def test_only_variants_with_a_deployment_get_an_application(case, chart):
    name, values, docs = case
    cfg = parse_config(effective_gateway(chart, values), f"values {name}")
    serve = rendered_serve_config(docs)
    deployed = sorted(f"variant-{k}" for k, v in cfg.variants.items() if v.placement == "deployment")
    assert [a["name"] for a in serve["applications"]] == ["slimgate", *deployed]
    # The router loads the others from its user_config, which names every variant.
    assert set(router_gateway(serve)["variants"]) == set(cfg.variants)


def test_the_examples_render_both_placements(chart):
    """So that the router-placed and the deployment-placed paths are both held to serve_config."""
    for name in ("full", "canary-example"):
        cfg = parse_config(effective_gateway(chart, load_values(name)), name)
        assert {v.placement for v in cfg.variants.values()} == {"router", "deployment"}, name


def test_router_deployment(case, chart):
    name, values, docs = case
    cfg = parse_config(effective_gateway(chart, values), f"values {name}")
    (router,) = rendered_serve_config(docs)["applications"][0]["deployments"]
    # Ray must never queue in front of the router's own admission control.
    assert router["max_ongoing_requests"] == cfg.admission.max_in_flight + ROUTER_ONGOING_HEADROOM
    assert router["num_replicas"] == cfg.router.replicas
    assert router["ray_actor_options"] == {"num_cpus": cfg.router.num_cpus}
    assert router["logging_config"] == {"enable_access_log": False}
    assert (router["health_check_timeout_s"], router["graceful_shutdown_timeout_s"]) == (60, 30)


def test_max_queued_requests_bounds_only_the_deployments_that_set_it(chart):
    serve = rendered_serve_config(render(chart, load_values("full")))
    deployments = {a["name"]: a["deployments"][0] for a in serve["applications"]}
    assert deployments["variant-teacher-onnx"]["max_queued_requests"] == 64
    assert "max_queued_requests" not in deployments["variant-student-trt-fp16"]


@pytest.mark.parametrize("grpc_port", [9100, None], ids=["port", "null"])
def test_grpc_follows_http_grpc_port(chart, grpc_port):
    """A port: Serve's grpc_options, the head's port and the gRPC Service; null: none of them
    (a null must survive the chart's defaults, which say 9000)."""
    values = {"gateway": {"http": {"grpc_port": grpc_port}}}
    docs = render(chart, values)
    serve = rendered_serve_config(docs)
    cfg = parse_config(effective_gateway(chart, values))
    assert cfg.http.grpc_port == grpc_port
    assert serve.get("grpc_options") == python_serve_config(cfg).get("grpc_options")
    head = ray_pod_templates(docs)["head"]["spec"]["containers"][0]
    grpc_ports = [p["containerPort"] for p in head["ports"] if p["name"] == "grpc"]
    grpc_services = [
        s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "demo-slimgate-gateway-grpc"
    ]
    if grpc_port is None:
        assert "grpc_options" not in serve
        assert grpc_ports == [] and grpc_services == []
    else:
        assert serve["grpc_options"] == {"port": grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}
        assert grpc_ports == [grpc_port]
        assert [s["spec"]["ports"][0]["port"] for s in grpc_services] == [grpc_port]


# -- Kubernetes objects --------------------------------------------------------------------------
def _validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            name = f"{obj['kind']} {obj['metadata'].get('name')}"
            pytest.fail(f"{name} is invalid for Kubernetes {version}: {err}")


def test_core_objects_pass_kubernetes_schemas(case):
    _, _, docs = case
    core = [d for d in docs if d["kind"] in CORE_KINDS]
    assert core
    for obj in core:
        _validate(obj)


def test_ray_pod_templates_and_gateway_service_pass_kubernetes_schemas(case):
    """What KubeRay turns into pods and the serve Service, checked as the core objects they become."""
    _, _, docs = case
    spec = one(docs, "RayService")["spec"]
    for group, template in ray_pod_templates(docs).items():
        meta = {"name": f"ray-{group}", "namespace": NAMESPACE}
        _validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta, "template": template})
    service = {"apiVersion": "v1", "kind": "Service", **copy.deepcopy(spec["serveService"])}
    service["spec"]["selector"] = {"ray.io/serve": "true"}  # KubeRay sets it
    _validate(service)


def test_rayservice_uses_current_kuberay_fields(case):
    _, values, docs = case
    rs = one(docs, "RayService")
    assert rs["apiVersion"] == "ray.io/v1"
    assert set(rs["spec"]) <= RAYSERVICE_FIELDS
    assert not set(rs["spec"]) & DEPRECATED_FIELDS
    cluster = rs["spec"]["rayClusterConfig"]
    assert set(cluster) <= RAYCLUSTER_FIELDS
    if "authOptions" in cluster:
        assert set(cluster["authOptions"]) <= AUTH_OPTIONS_FIELDS
        assert cluster["authOptions"]["mode"] in ("disabled", "token")
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS
    assert all(set(group) <= WORKER_GROUP_FIELDS for group in cluster["workerGroupSpecs"])
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for group in [head, *cluster["workerGroupSpecs"]]:
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    image = values.get("image", {})
    want = f"{image.get('repository', 'slimgate')}:{image.get('tag') or '0.1.0'}"
    assert head["template"]["spec"]["containers"][0]["image"] == want


def test_gateway_service_and_ports(case, chart):
    _, values, docs = case
    http = parse_config(effective_gateway(chart, values)).http
    spec = one(docs, "RayService")["spec"]
    # KubeRay keeps only the port named "serve" of the serve service, so gRPC is not offered there.
    assert spec["serveService"]["spec"]["ports"] == [
        {"name": "serve", "port": http.port, "targetPort": "serve", "protocol": "TCP"}
    ]
    for group, template in ray_pod_templates(docs).items():
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080, group
        if group == "head":
            assert ports["serve"] == http.port
            assert ports["dashboard"] == 8265
            assert ports.get("grpc") == http.grpc_port
        else:
            assert "grpc" not in ports, group
    grpc_services = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-gateway-grpc")]
    if http.grpc_port is None:
        assert grpc_services == []
        return
    (grpc,) = grpc_services
    assert grpc["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": http.grpc_port,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    assert grpc["spec"]["type"] == spec["serveService"]["spec"]["type"]
    # It reaches the head pods whose Serve proxy KubeRay found healthy, and nothing else.
    selector = grpc["spec"]["selector"]
    assert selector.pop("ray.io/serve") == "true"
    for group, template in ray_pod_templates(docs).items():
        assert (selector.items() <= template["metadata"]["labels"].items()) == (group == "head"), group


def test_every_ray_pod_mounts_the_registry_read_only(case, chart):
    _, values, docs = case
    registry = effective_gateway(chart, values)["registry"]
    for group, template in ray_pod_templates(docs).items():
        pod = template["spec"]
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["registry"]["mountPath"] == registry, group
        assert mounts["registry"]["readOnly"] is True, group
        volume = next(v for v in pod["volumes"] if v["name"] == "registry")
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["readOnly"] is True


def _containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, container) for every Ray and controller container."""
    out = [(g, t["spec"], c) for g, t in ray_pod_templates(docs).items() for c in t["spec"]["containers"]]
    for deployment in by_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        out.extend((deployment["metadata"]["name"], pod, c) for c in pod["containers"])
    return out


def test_admin_token_reaches_ray_pods_and_controller_from_a_secret(case, chart):
    _, values, docs = case
    token_env = effective_gateway(chart, values)["admin"]["token_env"]
    admin = {"existingSecret": "", "secretKey": "token", **values.get("admin", {})}
    secret_name = admin["existingSecret"] or "demo-slimgate-admin"
    secrets = [
        s
        for s in by_kind(docs, "Secret")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "admin"
    ]
    if admin["existingSecret"]:
        assert secrets == []
    else:
        assert [s["metadata"]["name"] for s in secrets] == [secret_name]
        assert admin["secretKey"] in secrets[0]["data"]
    for where, _, container in _containers(docs):
        env = {e["name"]: e for e in container["env"]}
        ref = env[token_env]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret_name, "key": admin["secretKey"]}, where


def test_security_contexts(case):
    _, _, docs = case
    for where, pod, container in _containers(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        sc = container["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["readOnlyRootFilesystem"] is True, where


def test_controller_deployment(case):
    _, values, docs = case
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    controller = values.get("controller", {})
    prometheus = controller.get("prometheusUrl", "http://prometheus-operated.monitoring.svc:9090")
    fullname = values.get("fullnameOverride") or "demo-slimgate"
    assert command[:3] == ["slimgate", "controller", "run"]
    args = command[3:]
    assert args[:10] == [
        "--prometheus",
        prometheus,
        "--dashboard",
        f"http://{fullname}-head-svc:8265",
        "--state",
        "/state/controller.db",
        "--metrics-port",
        "9102",
        "--host",
        "0.0.0.0",
    ]
    assert args[10:] == controller.get("extraArgs", [])
    # `kubectl exec ... slimgate abort VARIANT` finds the state and the dashboard without flags.
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SLIMGATE_STATE"] == "/state/controller.db"
    assert env["RAY_DASHBOARD_ADDRESS"] == f"http://{fullname}-head-svc:8265"
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    claim = controller.get("persistence", {}).get("existingClaim") or f"{fullname}-controller-state"
    assert state["persistentVolumeClaim"]["claimName"] == claim
    pvcs = [p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")]
    assert (claim in pvcs) == (not controller.get("persistence", {}).get("existingClaim"))


# -- options -------------------------------------------------------------------------------------
def test_defaults_render_no_optional_objects(chart):
    docs = render(chart, {})
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "Deployment",
        "NetworkPolicy",  # Ray pods
        "NetworkPolicy",  # controller
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "RayService",
        "Secret",  # admin token
        "Secret",  # Ray's token
        "Service",  # controller
        "Service",  # gRPC (grpc_port 9000 by default)
    ]
    spec = one(docs, "RayService")["spec"]
    assert [g["groupName"] for g in spec["rayClusterConfig"]["workerGroupSpecs"]] == ["cpu"]


def test_controller_can_be_turned_off(chart):
    values = {"controller": {"enabled": False}, "monitoring": {"serviceMonitor": {"enabled": True}}}
    docs = render(chart, values)
    assert by_kind(docs, "Deployment") == [] and by_kind(docs, "ServiceMonitor") == []
    assert [s["metadata"]["name"] for s in by_kind(docs, "Service")] == ["demo-slimgate-gateway-grpc"]
    assert [p["metadata"]["name"] for p in by_kind(docs, "NetworkPolicy")] == ["demo-slimgate-ray"]


def test_gpu_variants_go_to_the_gpu_worker_group(chart):
    values = load_values("full")
    docs = render(chart, values)
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"] == "registry.example.com/ml/slimgate:1.2.3-gpu"
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    apps = {a["name"]: a for a in rendered_serve_config(docs)["applications"]}
    trt = apps["variant-student-trt-fp16"]
    assert trt["deployments"][0]["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.5}
    assert trt["args"]["backend"] == "tensorrt"
    assert "num_gpus" not in apps["variant-teacher-onnx"]["deployments"][0]["ray_actor_options"]
    cuda = apps["variant-teacher-cuda-fp16"]
    assert cuda["deployments"][0]["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    assert (cuda["args"]["device"], cuda["args"]["precision"]) == ("cuda", "fp16")


def test_full_values_reach_every_object(chart):
    docs = render(chart, load_values("full"))
    rs = one(docs, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["headGroupSpec"]["rayStartParams"]["object-store-memory"] == "1000000000"
    assert rs["spec"]["serveService"]["spec"]["type"] == "LoadBalancer"
    assert rs["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    head = cluster["headGroupSpec"]["template"]
    assert head["metadata"]["labels"]["tier"] == "serving"
    assert head["metadata"].get("annotations") == {"team": "ml"}  # scrape annotations off
    assert head["spec"]["nodeSelector"] == {"pool": "ray-head"}
    assert head["spec"]["initContainers"][0]["name"] == "check-registry"
    assert head["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    registry = next(v for v in head["spec"]["volumes"] if v["name"] == "registry")
    assert registry["persistentVolumeClaim"]["claimName"] == "model-registry"
    mount = next(m for m in head["spec"]["containers"][0]["volumeMounts"] if m["name"] == "registry")
    assert mount["subPath"] == "registry"
    assert by_kind(docs, "PersistentVolumeClaim") == []  # both claims exist already

    ingress = one(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends == [{"name": "prod-gateway-gateway", "port": {"number": 9000}}] * 2

    pod_monitor = one(docs, "PodMonitor")
    assert pod_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ray"
    for template in ray_pod_templates(docs).values():
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "ray"
    service_monitor = one(docs, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    controller_service = by_name(docs, "Service", "prod-gateway-controller")
    assert (
        service_monitor["spec"]["selector"]["matchLabels"].items()
        <= controller_service["spec"]["selector"].items()
    )
    assert controller_service["spec"]["ports"][0]["port"] == 9102
    assert one(docs, "PrometheusRule")["metadata"]["labels"]["role"] == "alert-rules"
    dashboard = one(docs, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "slimgate"}


def test_registry_from_a_volume_source(chart):
    docs = render(chart, load_values("object-store-example"))
    assert [p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")] == [
        "demo-slimgate-controller-state"
    ]
    for template in ray_pod_templates(docs).values():
        registry = next(v for v in template["spec"]["volumes"] if v["name"] == "registry")
        assert registry == {"name": "registry", "emptyDir": {"sizeLimit": "5Gi"}}
        assert template["spec"]["initContainers"][0]["name"] == "sync-registry"


def test_admin_token_from_values_goes_to_the_secret(chart):
    import base64

    docs = render(chart, {"admin": {"token": "s3cret-token"}})
    secret = by_name(docs, "Secret", "demo-slimgate-admin")
    assert base64.b64decode(secret["data"]["token"]).decode() == "s3cret-token"
    rs = one(docs, "RayService")
    assert "s3cret-token" not in yaml.safe_dump(rs)


def test_scrape_annotations_for_plain_prometheus(chart):
    docs = render(chart, {})
    for template in ray_pod_templates(docs).values():
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "8080"
    controller = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert controller["prometheus.io/port"] == "9102"
