"""One source for everything the chart carries: its values schema and defaults come from
serving.config, its alert rules and dashboard from serving/ops, and Helm lints it clean.
"""

from __future__ import annotations

import json

import pytest
import yaml
from support.chart import VALUES_FILES, helm_sdk, load_values, one, render

from serving.config import json_schema
from serving.ops.assets import ALERTS, DASHBOARD
from serving.tools import chart as chart_module


def test_generated_chart_files_are_up_to_date():
    stale = [str(p.relative_to(chart_module.REPO_ROOT)) for p in chart_module.stale_files()]
    assert not stale, (
        f"stale generated chart files: {', '.join(stale)}. serving/config.py or serving/ops changed: "
        "run `.venv/bin/python -m serving.tools.chart` and commit the result."
    )


def test_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "alerts.yml"
    copy.write_text("groups: []\n")
    monkeypatch.setattr(chart_module, "ALERTS_COPY", copy)
    assert chart_module.main(["--check"]) == 1
    assert "alerts.yml" in capsys.readouterr().out


def test_gateway_schema_is_the_config_schema(chart):
    """The chart's gateway schema is serving.config's, with the chart's registry rule on top."""
    schema = chart.schema
    gateway = schema["properties"]["gateway"]
    source = json_schema()
    assert set(gateway["properties"]) == set(source["properties"])
    assert set(schema["$defs"]) == set(source["$defs"])
    for name, definition in source["$defs"].items():
        assert set(schema["$defs"][name]["properties"]) == set(definition["properties"]), name
    assert "registry" in gateway["required"]


def test_prometheus_rule_holds_exactly_the_ops_alerts(chart):
    docs = render(chart, {"monitoring": {"prometheusRule": {"enabled": True}}})
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_dashboard_config_map_holds_the_ops_dashboard(chart):
    docs = render(chart, {"monitoring": {"grafanaDashboard": {"enabled": True}}})
    config_map = one(docs, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "ml"
    (data,) = config_map["data"].values()
    assert json.loads(data) == json.loads(DASHBOARD.read_text())


def test_dashboard_label_is_configurable(chart):
    dashboard = {"enabled": True, "label": "dashboards", "labelValue": "slim"}
    values = {"monitoring": {"grafanaDashboard": dashboard}}
    labels = one(render(chart, values), "ConfigMap")["metadata"]["labels"]
    assert labels["dashboards"] == "slim" and "grafana_dashboard" not in labels


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_helm_lint_strict_is_clean(name):
    report = helm_sdk().lint(str(chart_module.CHART_DIR), load_values(name), strict=True, namespace="ml")
    assert report["errors"] == [], report
    # Severity 2 = warning (an error under --strict), 3 = error; 1 (info) is advice such as an icon.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
