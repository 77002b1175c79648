"""Rendering the Helm chart with Helm's own engine (the Go Helm SDK, through helm-python-sdk).

No cluster and no network: what ``helm template`` and ``helm lint`` do runs in this process.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.tools.chart import CHART_DIR, REPO_ROOT
from serving.translation import serve_config

# The chart tests' own values files sit with them in tests/helm.
HELM_TESTS = Path(__file__).resolve().parents[1] / "helm"
VALUES_FILES = {
    "default": None,
    "full": HELM_TESTS / "values-full.yaml",
    "canary-example": REPO_ROOT / "helm" / "examples" / "values-canary.yaml",
    "object-store-example": REPO_ROOT / "helm" / "examples" / "values-object-store.yaml",
}
RELEASE, NAMESPACE = "demo", "ml"


def helm_sdk():
    try:
        import helm_python
    except ImportError as err:  # an environment problem, said plainly
        pytest.fail(
            f"helm-python-sdk is not importable ({err}): the chart tests render with Helm's Go SDK "
            "from PyPI. Install the dev extra: .venv/bin/pip install -e '.[dev]'"
        )
    return helm_python


def load_chart():
    return helm_sdk().Chart.load(str(CHART_DIR))


def load_values(name: str) -> dict[str, Any]:
    path = VALUES_FILES[name]
    return {} if path is None else yaml.safe_load(path.read_text(encoding="utf-8"))


def render(chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for ``values`` (``helm template``)."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path in sorted(manifests):
        if path.endswith((".yaml", ".yml")):
            docs.extend(d for d in yaml.safe_load_all(manifests[path]) if d)
    return docs


def render_error(chart, values: dict[str, Any]) -> str:
    """The message Helm refuses ``values`` with (fails the test if Helm renders them)."""
    helm = helm_sdk()
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as err:
        return str(err)
    pytest.fail(f"helm rendered values it should refuse: {values}")


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def python_serve_config(cfg) -> dict[str, Any]:
    """serving.translation.serve_config without the registry (its signature is changing: both forms work)."""
    if "check_registry" in inspect.signature(serve_config).parameters:
        return serve_config(cfg, check_registry=False)
    return serve_config(cfg)
