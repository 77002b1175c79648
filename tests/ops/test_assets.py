"""The operations assets: alert rules pass promtool and their unit tests, and every metric name in
the alerts and the Grafana dashboard is one slimgate exports (serving.metrics), so renaming a
metric without updating them fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serving.metrics import SPECS
from serving.ops.assets import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    alert_rules,
    dashboard_exprs,
    dashboard_queries,
    load_dashboard,
    metric_names,
    substitute,
)

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
EXPECTED_ALERTS = {
    "SlimgateHighErrorRate",
    "SlimgateLatencyP99High",
    "SlimgateFallbacksHigh",
    "SlimgateShadowAgreementLow",
    "SlimgateNoTraffic",
    "SlimgateShedding",
    "SlimgateVariantNotReady",
    "SlimgateBrownoutSustained",
    "SlimgateCandidateRolledBack",
    "SlimgateCandidateFrozen",
    "SlimgateControllerSourceDown",
}


def exported() -> dict[str, str]:
    """Scraped series name -> metric kind, for every metric in serving.metrics.SPECS."""
    return {spec.prometheus_name: spec.kind for spec in SPECS.values()}


def unknown_names(expr: str) -> set[str]:
    known = exported()
    bad = set()
    for name in metric_names(expr):
        if name in known:
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is None or known.get(base) != "histogram":
            bad.add(name)
    return bad


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: the ops tests need it. Install Debian's `prometheus` "
            "package (apt-get install prometheus); .ci/run must install it too."
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


# -- (a) promtool ---------------------------------------------------------------------------------
def test_alert_rules_pass_promtool_check():
    r = run_promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout


def test_alert_rule_unit_tests_pass():
    r = run_promtool("test", "rules", str(ALERTS_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_unit_tests():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])}
    fired = {
        case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    names = {r["alert"] for r in alert_rules()}
    assert names == EXPECTED_ALERTS
    assert tested == names, f"alerts without unit tests: {sorted(names - tested)}"
    assert fired == names, f"alerts never shown firing: {sorted(names - fired)}"
    quiet = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if not case.get("exp_alerts") and case["eval_time"] not in ("0m", "0s")
    }
    assert quiet == names, f"alerts never shown staying quiet: {sorted(names - quiet)}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path):
    # promtool parses every expression of a rules file, so the dashboard's queries go in as
    # recording rules; this catches a query Grafana would only reject when the panel loads.
    queries = dashboard_queries()
    rules = [{"record": f"slimgate:dashboard_query:{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run_promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


# -- (b) metric names -----------------------------------------------------------------------------
def test_alert_rules_use_only_exported_metric_names():
    rules = alert_rules()
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no slimgate metric found in {rule['expr']!r}"
        assert not unknown_names(rule["expr"]), (rule["alert"], sorted(unknown_names(rule["expr"])))


def test_dashboard_uses_only_exported_metric_names():
    dashboard = load_dashboard()
    exprs = dashboard_exprs(dashboard)
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    assert exprs
    for expr in exprs:
        assert metric_names(expr), f"no slimgate metric found in {expr!r}"
        assert not unknown_names(expr), (expr, sorted(unknown_names(expr)))


def test_every_exported_metric_is_charted_or_alerted_on():
    used = set()
    for expr in [*dashboard_exprs(load_dashboard()), *(r["expr"] for r in alert_rules())]:
        used |= {n.removesuffix(s) for n in metric_names(expr) for s in HISTOGRAM_SUFFIXES if n.endswith(s)}
        used |= metric_names(expr)
    # Every metric slimgate exports is on the dashboard or in an alert.
    missing = set(exported()) - used
    assert not missing, f"exported but neither charted nor alerted on: {sorted(missing)}"


def test_metric_name_check_catches_a_renamed_metric():
    # The checks above are only as good as the extraction: a wrong name must be reported.
    assert unknown_names("rate(ray_slimgate_request_total[5m])") == {"ray_slimgate_request_total"}
    assert unknown_names("slimgate_controller_phase_total > 0") == {"slimgate_controller_phase_total"}
    # Counters are scraped with _total; only histograms have _bucket/_sum/_count series.
    assert unknown_names("increase(ray_slimgate_errors[5m])") == {"ray_slimgate_errors"}
    assert unknown_names("ray_slimgate_weight_count") == {"ray_slimgate_weight_count"}
    assert not unknown_names("histogram_quantile(0.9, rate(ray_slimgate_shadow_distance_bucket[5m]))")
    # Names inside label values are not series names.
    assert metric_names('up{job="slimgate_controller"}') == set()
    assert metric_names("max(ray_slimgate_weight) or slimgate_controller_weight") == {
        "ray_slimgate_weight",
        "slimgate_controller_weight",
    }


# -- (c) the dashboard ----------------------------------------------------------------------------
def all_panels(dashboard: dict) -> list[dict]:
    out, stack = [], list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        out.append(panel)
    return out


def test_dashboard_is_provisionable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "slimgate"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    variant = variables["variant"]
    assert variant["type"] == "query"
    assert variant["definition"] == "label_values(ray_slimgate_requests_total, variant)"
    assert variant["query"]["query"] == variant["definition"]
    assert variant["multi"] and variant["includeAll"]
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_panel_has_a_datasource_and_a_query():
    panels = all_panels(load_dashboard())
    assert len(panels) >= 12
    for panel in panels:
        title = panel.get("title")
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"panel {title!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr") and target.get("refId"), title
            assert target.get("datasource") == panel["datasource"], title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, title
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, title


def test_panels_do_not_overlap():
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(load_dashboard()):
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_dashboard_has_the_rollback_annotation():
    annotations = load_dashboard()["annotations"]["list"]
    rollbacks = [a for a in annotations if "slimgate_controller_rollbacks_total" in a.get("expr", "")]
    assert len(rollbacks) == 1
    a = rollbacks[0]
    assert a["enable"] is True
    assert a["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "increase(slimgate_controller_rollbacks_total[1m])) > 0" in a["expr"]
    assert "{{variant}}" in a["titleFormat"]


def test_dashboard_queries_substitute_grafana_variables():
    queries = dashboard_queries()
    assert len(queries) == len(dashboard_exprs(load_dashboard()))
    for q in queries:
        assert "$" not in q, q
    assert any('variant=~".*"' in q for q in queries)
    assert any("[1m]" in q for q in queries)
    assert substitute('x{variant=~"${variant}"}[$__rate_interval]') == 'x{variant=~".*"}[1m]'
    with pytest.raises(ValueError, match=r"\$job"):
        substitute('up{job="$job"}')


def test_alert_rules_carry_severity_and_annotations():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"].startswith("Slimgate")
    per_variant = [r for r in alert_rules() if "variant" in r["expr"]]
    assert per_variant
    for rule in per_variant:
        assert "{{ $labels.variant }}" in rule["annotations"]["summary"], rule["alert"]
