"""Readers of the operations assets next to this module: the alert rules and the Grafana dashboard.

This module owns the paths of ``alerts.yml`` and ``grafana-dashboard.json``, and turns them into
what tests and tools check: the alerting rules as dicts (:func:`alert_rules`), the dashboard's
PromQL with Grafana's variables replaced so that a plain Prometheus server can run it
(:func:`dashboard_queries`), and the metric names any PromQL expression refers to
(:func:`metric_names`), to be compared with :data:`serving.metrics.PROMETHEUS_NAMES`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

OPS_DIR = Path(__file__).resolve().parent
ALERTS = OPS_DIR / "alerts.yml"
ALERTS_TEST = OPS_DIR / "alerts_test.yml"
DASHBOARD = OPS_DIR / "grafana-dashboard.json"

# What each Grafana variable stands for when a query runs outside Grafana: every variant, and a
# rate window of a few scrape intervals.
GRAFANA_VARIABLES = {"variant": ".*", "__rate_interval": "1m"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# A slimgate series name: not part of a longer identifier, and not a function call.
# slimgate's own series, and the one of Ray Serve's it uses (serving.metrics.INGRESS_RESPONSES).
_NAME = re.compile(r"(?<![\w:])((?:ray_)?slimgate_[\w:]*|ray_serve_num_http_requests_total)(?![\w:]|\s*\()")


def alert_rules(path: str | Path = ALERTS) -> list[dict[str, Any]]:
    """Every alerting rule of every group in a Prometheus rules file, in file order."""
    doc = yaml.safe_load(Path(path).read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def load_dashboard(path: str | Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """``expr`` with Grafana's ``$name`` / ``${name}`` variables replaced; unknown ones raise."""
    values = GRAFANA_VARIABLES if variables is None else variables

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise ValueError(f"no value for Grafana variable ${name} in: {expr}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The raw PromQL of every panel target (rows' nested panels included) and annotation."""
    out: list[str] = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        out.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append(annotation["expr"])
    return out


def dashboard_queries(path: str | Path = DASHBOARD) -> list[str]:
    """The dashboard's PromQL, ready for a Prometheus server: ``$variant`` is ``.*``, windows 1m."""
    return [substitute(expr) for expr in dashboard_exprs(load_dashboard(path))]


def metric_names(expr: str) -> set[str]:
    """The slimgate series names ``expr`` selects (label values and strings are ignored).

    Histogram series keep their ``_bucket``/``_sum``/``_count`` suffix; callers that compare
    with metric names strip it.
    """
    return set(_NAME.findall(_STRING.sub('""', expr)))
