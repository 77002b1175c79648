"""What the Ray pods start with and who may reach them: the ingress mode's environment (the mirror of
serving.ray_env.ingress_env), Ray's token authentication, and the NetworkPolicies, whose rendered
rules are evaluated here the way Kubernetes does for label selectors, so that each test reads as
"this pod, from that namespace, may (not) open this port".
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support.chart import NAMESPACE, by_kind, load_values, one, render

from serving.config import HttpConfig, parse_config
from serving.ray_env import ingress_env

# Every variable either ingress mode sets: the chart must set exactly the current mode's.
INGRESS_VARIABLES = set(ingress_env(HttpConfig(ingress="haproxy"))) | set(
    ingress_env(HttpConfig(ingress="proxy"))
)


def ray_containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster["workerGroupSpecs"]})
    return {name: g["template"]["spec"]["containers"][0] for name, g in groups.items()}


def ray_pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    out = {"head": cluster["headGroupSpec"]["template"]["metadata"]["labels"]}
    out.update({g["groupName"]: g["template"]["metadata"]["labels"] for g in cluster["workerGroupSpecs"]})
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# -- the ingress mode -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["haproxy", "proxy"])
def test_every_ray_pod_starts_with_the_ingress_env(chart, mode):
    """Ray Serve reads the mode when its processes start, so every node (not only the head) needs it."""
    values = {"gateway": {"http": {"ingress": mode}}, "gpuWorkers": {"enabled": True}}
    docs = render(chart, values)
    want = ingress_env(parse_config(chart.merge_values(values)["gateway"]).http)
    containers = ray_containers(docs)
    assert set(containers) == {"head", "cpu", "gpu"}
    for group, container in containers.items():
        got = {name: e["value"] for name, e in env_of(container).items() if name in INGRESS_VARIABLES}
        assert got == want, group


# -- Ray's token authentication -------------------------------------------------------------------
def test_ray_token_reaches_every_ray_container_kuberay_and_the_controller(chart):
    docs = render(chart, {})
    secret = next(s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == "demo-slimgate-ray-auth")
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    assert len(token) >= 32 and token.isalnum()
    ref = {"secretKeyRef": {"name": "demo-slimgate-ray-auth", "key": "auth_token"}}
    # KubeRay presents the same token to the dashboard when it deploys serveConfigV2.
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "demo-slimgate-ray-auth"}
    for group, container in ray_containers(docs).items():
        env = env_of(container)
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, group
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == ref, group
    # The controller calls the dashboard's REST API (serving/ray_rest.py reads RAY_AUTH_TOKEN).
    controller = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(controller)["RAY_AUTH_TOKEN"]["valueFrom"] == ref
    assert token not in str(one(docs, "RayService"))


def test_ray_token_from_an_existing_secret(chart):
    docs = render(chart, load_values("full"))
    assert "prod-gateway-ray-auth" not in [s["metadata"]["name"] for s in by_kind(docs, "Secret")]
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"]["secretName"] == "ray-token"
    containers = [
        *ray_containers(docs).values(),
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0],
    ]
    for container in containers:
        assert env_of(container)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-token"


def test_ray_authentication_can_be_turned_off(chart):
    docs = render(chart, {"ray": {"auth": {"enabled": False}}})
    assert "authOptions" not in one(docs, "RayService")["spec"]["rayClusterConfig"]
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret")] == ["demo-slimgate-admin"]
    containers = [
        *ray_containers(docs).values(),
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0],
    ]
    for container in containers:
        assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(env_of(container))


# -- NetworkPolicy: Kubernetes' semantics for what the chart renders -------------------------------
def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    # The chart and its defaults use matchLabels only; anything else would need evaluating here.
    assert set(selector) <= {"matchLabels"}, selector
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_admits(peer: dict[str, Any], policy_ns: str, source: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        return False  # the sources here are pods, identified by labels
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], source["namespace_labels"]):
            return False
    elif source["namespace"] != policy_ns:
        return False  # a podSelector alone means the policy's own namespace
    return "podSelector" not in peer or _matches(peer["podSelector"], source["labels"])


def _port_admits(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == "TCP" and p["port"] <= port <= p.get("endPort", p["port"]) for p in ports
    )


def admitted(
    docs: list[dict[str, Any]], target_labels: dict[str, str], source: dict[str, Any], port: int
) -> bool:
    """Whether ``source`` may open TCP ``port`` on a pod of the release's namespace with ``target_labels``."""
    policies = [
        p
        for p in by_kind(docs, "NetworkPolicy")
        if "Ingress" in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], target_labels)
    ]
    if not policies:
        return True  # a pod no policy selects is not isolated
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if _port_admits(rule, port) and (
                not peers or any(_peer_admits(peer, NAMESPACE, source) for peer in peers)
            ):
                return True
    return False


def pod(labels: dict[str, str], namespace: str = NAMESPACE, namespace_labels: dict[str, str] | None = None):
    ns_labels = {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})}
    return {"labels": labels, "namespace": namespace, "namespace_labels": ns_labels}


RELEASE_LABELS = {"app.kubernetes.io/name": "slimgate", "app.kubernetes.io/instance": "demo"}
CONTROLLER = pod({**RELEASE_LABELS, "app.kubernetes.io/component": "controller"})
STRANGER = pod({"app": "something-else"}, "other")
NEIGHBOUR = pod({"app": "something-else"})  # same namespace, not the release's
PROMETHEUS = pod({"app.kubernetes.io/name": "prometheus"}, "monitoring")
OPERATOR = pod({"app.kubernetes.io/name": "kuberay-operator"}, "kuberay-system")
# Ports Ray uses between its own nodes: GCS, client, a raylet / worker port (random by default),
# the dashboard agent, a replica's direct-ingress HTTP and gRPC ports, HAProxy's stats page.
RAY_INTERNAL = (6379, 10001, 12345, 52365, 30000, 31000, 40000, 41000, 8404)


def test_network_policies_are_on_by_default_and_select_what_they_guard(chart):
    docs = render(chart, {})
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"demo-slimgate-ray", "demo-slimgate-controller"}
    for group, labels in ray_pod_labels(docs).items():
        assert _matches(policies["demo-slimgate-ray"]["spec"]["podSelector"], labels), group
        assert not _matches(policies["demo-slimgate-controller"]["spec"]["podSelector"], labels), group
    controller = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _matches(policies["demo-slimgate-controller"]["spec"]["podSelector"], controller)
    assert not _matches(policies["demo-slimgate-ray"]["spec"]["podSelector"], controller)
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress is not restricted


def test_ray_pods_admit_from_outside_only_the_gateway_ports(chart):
    docs = render(chart, {})
    http = parse_config(chart.merge_values({})["gateway"]).http
    for group, labels in ray_pod_labels(docs).items():
        for source in (STRANGER, NEIGHBOUR):
            assert admitted(docs, labels, source, http.port), group
            assert admitted(docs, labels, source, http.grpc_port), group
            for port in (8265, 8080, 9101, 9102, *RAY_INTERNAL):
                assert not admitted(docs, labels, source, port), (group, port)


def test_the_dashboard_admits_only_the_controller_and_the_operator(chart):
    docs = render(chart, {})
    head = ray_pod_labels(docs)["head"]
    assert admitted(docs, head, CONTROLLER, 8265)
    assert admitted(docs, head, OPERATOR, 8265)  # it deploys serveConfigV2 through the dashboard
    for source in (PROMETHEUS, STRANGER, NEIGHBOUR):
        assert not admitted(docs, head, source, 8265)
    # The controller needs the dashboard only: nothing else of Ray is open to it.
    for port in RAY_INTERNAL:
        assert not admitted(docs, head, CONTROLLER, port), port
    # The same operator pod in a namespace other than the one configured is not admitted.
    assert not admitted(docs, head, pod(OPERATOR["labels"], "elsewhere"), 8265)


def test_ray_internal_ports_admit_only_the_release_ray_pods(chart):
    docs = render(chart, {"gpuWorkers": {"enabled": True}})
    labels = ray_pod_labels(docs)
    for target, target_labels in labels.items():
        for source_labels in labels.values():
            for port in (*RAY_INTERNAL, 8265, 8080):
                assert admitted(docs, target_labels, pod(source_labels), port), (target, port)
    # Another release's Ray pods in the same namespace are not part of this cluster.
    other_release = pod({**labels["cpu"], "app.kubernetes.io/instance": "other"})
    for port in RAY_INTERNAL:
        assert not admitted(docs, labels["head"], other_release, port), port


def test_metrics_admit_only_prometheus(chart):
    docs = render(chart, {})
    controller = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for labels in ray_pod_labels(docs).values():
        assert admitted(docs, labels, PROMETHEUS, 8080)
        assert admitted(docs, labels, PROMETHEUS, 9101)  # HAProxy's exporter (haproxy mode)
        for port in (8265, *RAY_INTERNAL):
            assert not admitted(docs, labels, PROMETHEUS, port), port
    assert admitted(docs, controller, PROMETHEUS, 9102)
    # Prometheus' pod labels in another namespace are not Prometheus.
    assert not admitted(docs, controller, pod(PROMETHEUS["labels"], "other"), 9102)
    for source in (STRANGER, NEIGHBOUR, OPERATOR):
        assert not admitted(docs, controller, source, 9102)


def test_proxy_mode_without_grpc_opens_only_what_it_uses(chart):
    values = {"gateway": {"http": {"ingress": "proxy", "grpc_port": None}}}
    docs = render(chart, values)
    head = ray_pod_labels(docs)["head"]
    assert admitted(docs, head, STRANGER, 8000)
    assert not admitted(docs, head, STRANGER, 9000)
    assert not admitted(docs, head, PROMETHEUS, 9101)  # no HAProxy, no exporter
    assert admitted(docs, head, PROMETHEUS, 8080)


def test_network_policy_is_configurable(chart):
    """values-full: other selectors, peers for the gateway, the dashboard and the controller, a rule."""
    docs = render(chart, load_values("full"))
    head = ray_pod_labels(docs)["head"]
    ingress_nginx = pod({"app": "ingress-nginx"}, "ingress-nginx")
    ops_debug = pod({"app": "ray-debug"}, "ops")
    ops_other = pod({"app": "cli"}, "ops")
    observability = pod({"app": "anything"}, "metrics", {"team": "observability"})
    operator = pod(OPERATOR["labels"], "ray-system")  # the chart's podSelector stays (Helm merges)
    # The gateway ports: from ingress-nginx only (and an ipBlock), no longer from anywhere; and
    # from the operator, which checks the head's Serve proxy there before it routes to it.
    assert admitted(docs, head, ingress_nginx, 9000) and admitted(docs, head, ingress_nginx, 9001)
    assert admitted(docs, head, operator, 9000)
    assert not admitted(docs, head, STRANGER, 9000)
    # The dashboard: the controller, the operator in its other namespace, ops' debug pods.
    for source in (CONTROLLER, operator, ops_debug):
        assert admitted(docs, head, source, 8265)
    assert not admitted(docs, head, ops_other, 8265) and not admitted(docs, head, OPERATOR, 8265)
    # Prometheus: any pod of a namespace labelled team=observability (the list replaced the chart's).
    assert admitted(docs, head, observability, 8080) and not admitted(docs, head, PROMETHEUS, 8080)
    controller_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert admitted(docs, controller_labels, ops_other, 9102)
    assert admitted(docs, controller_labels, observability, 9102)
    # extraIngress is appended as it is.
    ray_policy = next(p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-ray"))
    assert ray_policy["spec"]["ingress"][-1] == load_values("full")["networkPolicy"]["extraIngress"][0]


def test_without_prometheus_peers_metrics_are_closed_not_open(chart):
    """An empty peer list must leave the rule out: a rule without `from` would admit anyone."""
    docs = render(chart, {"networkPolicy": {"prometheusFrom": []}})
    controller = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for labels in ray_pod_labels(docs).values():
        for source in (PROMETHEUS, STRANGER):
            assert not admitted(docs, labels, source, 8080) and not admitted(docs, labels, source, 9101)
    for source in (PROMETHEUS, STRANGER):
        assert not admitted(docs, controller, source, 9102)


def test_network_policy_can_be_turned_off(chart):
    docs = render(chart, {"networkPolicy": {"enabled": False}})
    assert by_kind(docs, "NetworkPolicy") == []


def test_without_the_controller_the_dashboard_keeps_only_the_operator(chart):
    docs = render(chart, {"controller": {"enabled": False}})
    assert [p["metadata"]["name"] for p in by_kind(docs, "NetworkPolicy")] == ["demo-slimgate-ray"]
    head = ray_pod_labels(docs)["head"]
    assert admitted(docs, head, OPERATOR, 8265) and not admitted(docs, head, CONTROLLER, 8265)
