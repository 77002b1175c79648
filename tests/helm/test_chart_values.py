"""Wrong values are refused by Helm (install, upgrade, template and lint alike) with a message that
names the field: schema-level mistakes through values.schema.json, cross-field ones through the
chart's checks, which say what serving.config says about the same gateway config.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.chart import helm_sdk, render_error

from serving.config import ConfigError, parse_config
from serving.tools.chart import CHART_DIR

STABLE = "student-int8"
DEPLOYED = {"placement": "deployment"}


def with_gateway(**sections: Any) -> dict[str, Any]:
    return {"gateway": sections}


def python_problems(chart, values: dict[str, Any]) -> list[str]:
    """serving.config's problems with the gateway these values give, as ``gateway.<path>: message``."""
    gateway = copy.deepcopy(chart.merge_values(values)["gateway"])
    with pytest.raises(ConfigError) as err:
        parse_config(gateway, "values")
    lines = str(err.value).splitlines()[1:]
    return ["gateway." + line.strip() for line in lines]


# -- the schema: types, unknown keys, ranges -----------------------------------------------------
SCHEMA_CASES = {
    "wrong type": (
        with_gateway(variants={STABLE: {"replicas": "two"}}),
        "/gateway/variants/student-int8/replicas",
        "got string, want integer",
    ),
    "negative replica count": (
        with_gateway(variants={STABLE: {"replicas": -1}}),
        "/gateway/variants/student-int8/replicas",
        "",
    ),
    "unknown gateway key": (
        with_gateway(variants={STABLE: {"replica": 2}}),
        "/gateway/variants/student-int8",
        "'replica' not allowed",
    ),
    "unknown top-level gateway section": (with_gateway(routes={}), "/gateway", "'routes' not allowed"),
    "bad variant key": (
        with_gateway(variants={"Student_Int8": {"ref": "student-int8"}}),
        "/gateway/variants",
        "'Student_Int8' not allowed",
    ),
    "weight over 100": (
        with_gateway(routing={"stable": STABLE, "weights": {STABLE: 101}}),
        "/gateway/routing/weights/student-int8",
        "maximum",
    ),
    "string where a number goes": (
        with_gateway(limits={"request_timeout_s": "10"}),
        "/gateway/limits/request_timeout_s",
        "want number",
    ),
    "unknown backend": (
        with_gateway(variants={STABLE: {"backend": "tflite"}}),
        "/gateway/variants/student-int8/backend",
        "",
    ),
}
CHART_SCHEMA_CASES = {
    "relative registry path": (
        with_gateway(registry="registry"),
        "/gateway/registry",
        "does not match pattern",
    ),
    "no registry": (with_gateway(registry=None), "/gateway", "missing property 'registry'"),
    "unknown chart key": ({"controler": {"enabled": False}}, "(root)", "'controler' not allowed"),
    "negative worker count": ({"cpuWorkers": {"replicas": -1}}, "/cpuWorkers/replicas", "minimum"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", ""),
    "bad upgrade strategy": ({"ray": {"upgradeStrategy": "Rolling"}}, "/ray/upgradeStrategy", ""),
    "bad prometheus url": (
        {"controller": {"prometheusUrl": "prometheus:9090"}},
        "/controller/prometheusUrl",
        "",
    ),
    "unknown Ray auth key": ({"ray": {"auth": {"token": "x"}}}, "/ray/auth", "'token' not allowed"),
    "network policy switch not a boolean": (
        {"networkPolicy": {"enabled": "yes"}},
        "/networkPolicy/enabled",
        "want boolean",
    ),
    "network policy peers not a list": (
        {"networkPolicy": {"gatewayFrom": {"podSelector": {}}}},
        "/networkPolicy/gatewayFrom",
        "want array",
    ),
    "unknown network policy key": (
        {"networkPolicy": {"prometheus": {"podSelector": {}}}},
        "/networkPolicy",
        "'prometheus' not allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES), ids=str)
def test_schema_refuses_a_bad_gateway_field(chart, case):
    values, where, what = SCHEMA_CASES[case]
    message = render_error(chart, values)
    assert "values don't meet the specifications of the schema" in message
    assert f"at '{where}'" in message, message
    assert what in message, message
    # serving.config refuses the same gateway config: the schema is its schema.
    assert python_problems(chart, values)


@pytest.mark.parametrize("case", sorted(CHART_SCHEMA_CASES), ids=str)
def test_schema_refuses_a_bad_chart_value(chart, case):
    values, where, what = CHART_SCHEMA_CASES[case]
    message = render_error(chart, values)
    assert f"at '{where}'" in message or (where == "(root)" and "at ''" in message), message
    assert what in message, message


def test_lint_reports_the_schema_error_too():
    values = {"gateway": {"variants": {STABLE: {"replicas": -1}}}}
    report = helm_sdk().lint(str(CHART_DIR), values, strict=True)
    assert any("/gateway/variants/student-int8/replicas" in e for e in report["errors"]), report


# -- cross-field rules: the same words as serving.config -----------------------------------------
CROSS_FIELD_CASES = {
    "weights not summing to 100": with_gateway(
        variants={"teacher-int8": {"ref": "teacher-int8"}},
        routing={"stable": STABLE, "weights": {STABLE: 90, "teacher-int8": 20}},
    ),
    "weights naming an unknown variant": with_gateway(
        routing={"stable": STABLE, "weights": {STABLE: 90, "ghost": 10}}
    ),
    "stable not configured": with_gateway(routing={"stable": "ghost", "weights": {"ghost": 100}}),
    "stable without traffic": with_gateway(
        variants={"teacher-int8": {"ref": "teacher-int8"}},
        routing={"stable": STABLE, "weights": {STABLE: 0, "teacher-int8": 100}},
    ),
    "empty weights": with_gateway(routing={"stable": STABLE, "weights": {}}),
    "shadow of an unknown variant": with_gateway(shadow={"variants": ["ghost"], "fraction": 0.1}),
    "stable shadowing itself": with_gateway(shadow={"variants": [STABLE], "fraction": 0.1}),
    "replicas and autoscaling": with_gateway(
        variants={STABLE: {**DEPLOYED, "replicas": 2, "autoscaling": {"max_replicas": 3}}}
    ),
    "autoscaling range upside down": with_gateway(
        variants={STABLE: {**DEPLOYED, "autoscaling": {"min_replicas": 3, "max_replicas": 2}}}
    ),
    # A variant placed in the router (the default) runs in every router replica: nothing of a
    # deployment's own means anything there, so serving.config refuses it rather than ignore it.
    "router-placed variant with replicas": with_gateway(variants={STABLE: {"replicas": 2}}),
    "router-placed variant with autoscaling": with_gateway(
        variants={STABLE: {"placement": "router", "autoscaling": {"max_replicas": 3}}}
    ),
    "router-placed variant with resources": with_gateway(variants={STABLE: {"resources": {"num_cpus": 2}}}),
    "router-placed variant with a GPU": with_gateway(variants={STABLE: {"resources": {"num_gpus": 1}}}),
    "router-placed variant with max_queued_requests": with_gateway(
        variants={STABLE: {"max_queued_requests": 10}}
    ),
    "router-placed variant with all of them": with_gateway(
        variants={STABLE: {"replicas": 2, "resources": {"num_cpus": 2}, "max_queued_requests": 10}}
    ),
    "TensorRT variant in the router": with_gateway(variants={STABLE: {"backend": "tensorrt"}}),
    "CUDA variant in the router": with_gateway(variants={STABLE: {"device": "cuda"}}),
    "CUDA variant without a GPU": with_gateway(variants={STABLE: {**DEPLOYED, "device": "cuda"}}),
    "fp16 on cpu": with_gateway(variants={STABLE: {"device": "cpu", "precision": "fp16"}}),
    # gRPC listens on 9000 by default, so moving HTTP there collides.
    "grpc port equal to the http port": with_gateway(http={"port": 9000}),
    "grpc port set to the http port": with_gateway(http={"port": 8100, "grpc_port": 8100}),
}


@pytest.mark.parametrize("case", sorted(CROSS_FIELD_CASES), ids=str)
def test_cross_field_rules_match_serving_config(chart, case):
    values = CROSS_FIELD_CASES[case]
    message = render_error(chart, values)
    assert "invalid values:" in message
    problems = python_problems(chart, values)
    assert problems
    for problem in problems:
        assert problem in message, f"helm does not say {problem!r}:\n{message}"


def test_autoscaling_from_zero_is_accepted(chart):
    """min_replicas 0 is a value, not a missing one: the chart's range check must not default it."""
    values = with_gateway(
        variants={STABLE: {**DEPLOYED, "autoscaling": {"min_replicas": 0, "max_replicas": 1}}}
    )
    parse_config(chart.merge_values(values)["gateway"])
    assert chart.render(values, name="demo", namespace="ml")


@pytest.mark.parametrize(
    "spec",
    [
        {"placement": "router", "replicas": None, "autoscaling": None, "max_queued_requests": None},
        {"resources": {"num_cpus": 1.0, "num_gpus": None}},
        {"resources": {"num_cpus": 1}},
    ],
    ids=["nulls", "default resources", "default cpus as an integer"],
)
def test_a_router_placed_variant_may_spell_out_the_defaults(chart, spec):
    """serving.config compares with the defaults (a dumped config parses back), so the chart does too."""
    values = with_gateway(variants={STABLE: spec})
    parse_config(chart.merge_values(values)["gateway"])
    assert chart.render(values, name="demo", namespace="ml")


def test_weights_that_no_longer_sum_explain_helm_merging(chart):
    """The trap of replacing the chart's default variants: Helm merges maps, so say how to drop one."""
    values = with_gateway(
        variants={"teacher-int8": {"ref": "teacher-int8"}},
        routing={"stable": "teacher-int8", "weights": {"teacher-int8": 100, STABLE: 10}},
    )
    assert "set a default variant you do not want to null" in render_error(chart, values)
    dropped = with_gateway(
        variants={STABLE: None, "teacher-int8": {"ref": "teacher-int8"}},
        routing={"stable": "teacher-int8"},
    )
    assert chart.render(dropped, name="demo", namespace="ml")


# -- the chart's own rules ------------------------------------------------------------------------
CHART_RULES = {
    "tensorrt without a GPU": (
        with_gateway(variants={STABLE: {**DEPLOYED, "backend": "tensorrt"}}),
        "gateway.variants.student-int8.resources.num_gpus: a TensorRT variant needs a GPU",
    ),
    "GPU variant without GPU workers": (
        with_gateway(variants={STABLE: {**DEPLOYED, "resources": {"num_gpus": 1}}}),
        "gateway.variants.student-int8.resources.num_gpus: 1 GPU per replica, "
        "but gpuWorkers.enabled is false",
    ),
    "inline admin token": (
        with_gateway(admin={"token": "s3cret"}),
        "gateway.admin.token: do not put the admin token in values",
    ),
    "loopback host": (
        with_gateway(http={"host": "127.0.0.1"}),
        "gateway.http.host: 127.0.0.1 is reachable only from inside the head pod",
    ),
    "port taken by Ray": (with_gateway(http={"port": 8265}), "gateway.http.port: 8265 is taken"),
    "grpc port taken by Ray": (
        with_gateway(http={"grpc_port": 6379}),
        "gateway.http.grpc_port: 6379 is taken",
    ),
    "port taken by HAProxy's stats": (with_gateway(http={"port": 8404}), "gateway.http.port: 8404 is taken"),
    "port among the replicas' direct ingress": (
        with_gateway(http={"grpc_port": 30500}),
        "gateway.http.grpc_port: 30500 is taken",
    ),
    "Ray too old for token authentication": (
        {"rayVersion": "2.51.1"},
        "ray.auth.enabled: Ray's token authentication needs Ray 2.52 or newer, rayVersion is 2.51.1",
    ),
    "a NetworkPolicy peer that selects nothing": (
        {"networkPolicy": {"dashboardFrom": [{"podSelector": {"matchLabels": {"app": "x"}}}, {}]}},
        "networkPolicy.dashboardFrom[1]: a peer needs a namespaceSelector, a podSelector or an ipBlock",
    ),
    "no KubeRay operator admitted to the dashboard": (
        {"networkPolicy": {"kuberayOperatorFrom": []}},
        "networkPolicy.kuberayOperatorFrom: must name the KubeRay operator's pods",
    ),
}


def test_haproxy_ports_are_free_in_proxy_mode(chart):
    """8404 and the direct-ingress ranges are HAProxy mode's only; Ray's proxy leaves them free."""
    values = with_gateway(http={"ingress": "proxy", "port": 8404, "grpc_port": 30500})
    assert chart.render(values, name="demo", namespace="ml")


def test_old_ray_without_authentication_is_accepted(chart):
    assert chart.render(
        {"rayVersion": "2.51.1", "ray": {"auth": {"enabled": False}}}, name="demo", namespace="ml"
    )


@pytest.mark.parametrize("case", sorted(CHART_RULES), ids=str)
def test_chart_rules(chart, case):
    values, expected = CHART_RULES[case]
    message = render_error(chart, values)
    assert expected in message, message
    assert "s3cret" not in message


def test_every_problem_is_reported_at_once(chart):
    values = with_gateway(
        routing={"stable": STABLE, "weights": {STABLE: 50}},
        shadow={"variants": [STABLE]},
        http={"host": "localhost"},
    )
    message = render_error(chart, values)
    for part in ("gateway.routing.weights:", "gateway.shadow.variants:", "gateway.http.host:"):
        assert part in message, message
